-- Indexes for device attributes (0031), built without blocking writes (no transaction: CONCURRENTLY). IF NOT
-- EXISTS: a build interrupted before DbUp recorded this script is resumed by running it again (an invalid index
-- left by a failed build must be dropped by hand first: docs/schema.md, "Migrations").
--  * the counters' keys with hardware, which 0033 makes their primary keys;
--  * devices by hardware in id order (/devices?hardware=), and by tag (a GIN index: /devices?tag=, and the
--    version counts of the devices with a tag, which have no counters since tags are sets).

-- Session settings: outside a transaction they last as long as the migrator's connection.
SET lock_timeout = '5s';
SET statement_timeout = '2h';

-- squawk assumes every script runs in a transaction (.squawk.toml); this one does not (its name says so).
-- squawk-ignore ban-concurrent-index-creation-in-transaction
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS firmware_version_counts_hardware_key
    ON firmware_version_counts (project_id, firmware, hardware, stripe);

-- squawk-ignore ban-concurrent-index-creation-in-transaction
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS firmware_silence_counts_hardware_key
    ON firmware_silence_counts (project_id, firmware, hardware, reported_hour);

-- squawk-ignore ban-concurrent-index-creation-in-transaction
CREATE INDEX CONCURRENTLY IF NOT EXISTS devices_project_hardware_idx
    ON devices (project_id, hardware, id)
    WHERE hardware IS NOT NULL;

-- squawk-ignore ban-concurrent-index-creation-in-transaction
CREATE INDEX CONCURRENTLY IF NOT EXISTS devices_tags_idx
    ON devices USING gin (tags);
