-- The feed by arrival: "project P's events after (arrival, id)", and newest first; built without blocking
-- ingest (outside a transaction: DbUp runs scripts named *.no-transaction.sql so). A build that failed leaves
-- an invalid index of this name, which IF NOT EXISTS would keep: drop it (DROP INDEX CONCURRENTLY) and start
-- the service again.

-- Session settings: outside a transaction they last as long as the migrator's connection.
SET lock_timeout = '5s';
SET statement_timeout = '2h';
-- squawk assumes every script runs in a transaction (.squawk.toml); this one does not (its name says so).
-- squawk-ignore ban-concurrent-index-creation-in-transaction
CREATE INDEX CONCURRENTLY IF NOT EXISTS firmware_events_project_feed_idx ON firmware_events (project_id, arrival, id);
