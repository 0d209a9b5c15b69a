-- The primary key firmware_events will have once it is partitioned by occurred_at (0023): a partitioned table's
-- unique keys hold its partition key, and on Citus its distribution column too. Built here, without blocking
-- ingest, so that 0023 makes it the existing table's primary key without a scan. A build that failed leaves an
-- invalid index of this name, which IF NOT EXISTS would keep: drop it (DROP INDEX CONCURRENTLY) and start the
-- service again.

-- Session settings: outside a transaction they last as long as the migrator's connection.
SET lock_timeout = '5s';
SET statement_timeout = '2h';
-- squawk assumes every script runs in a transaction (.squawk.toml); this one does not (its name says so).
-- squawk-ignore ban-concurrent-index-creation-in-transaction
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS firmware_events_partition_key ON firmware_events (project_id, id, occurred_at);
