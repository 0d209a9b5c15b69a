-- Indexes for fleet health (migration 0027), built without blocking writes (no transaction: CONCURRENTLY).
--  * devices_silent_after_update_idx: the devices whose newest event is installed or updated, by version and time
--    of their last report. It counts those that last reported within the cutoff's hour (firmware_silence_counts
--    sums the hours before it) and serves /devices?silent_after_update=true.
--  * devices_downgraded_idx: the few devices with an unexplained downgrade, for /devices?unexplained_downgrade=true.
-- IF NOT EXISTS: a build interrupted before DbUp recorded this script is resumed by running it again (an invalid
-- index left by a failed build must be dropped by hand first: docs/schema.md, "Migrations").

-- Session settings: outside a transaction they last as long as the migrator's connection.
SET lock_timeout = '5s';
SET statement_timeout = '2h';

-- squawk assumes every script runs in a transaction (.squawk.toml); this one does not (its name says so).
-- squawk-ignore ban-concurrent-index-creation-in-transaction
CREATE INDEX CONCURRENTLY IF NOT EXISTS devices_silent_after_update_idx
    ON devices (project_id, current_firmware, last_reported_at)
    WHERE last_event_status IN ('installed', 'updated');

-- squawk assumes every script runs in a transaction (.squawk.toml); this one does not (its name says so).
-- squawk-ignore ban-concurrent-index-creation-in-transaction
CREATE INDEX CONCURRENTLY IF NOT EXISTS devices_downgraded_idx
    ON devices (project_id, id)
    WHERE downgraded_from IS NOT NULL;
