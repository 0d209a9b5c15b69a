-- device_firmware_status becomes one row per project, device and version (0017 makes this its primary key):
-- the status a device reported on a version in a project stays that project's, as its events do, and on a
-- database distributed by project every unique key holds the project. Built without blocking ingest.
-- A build that failed leaves an invalid index of this name: drop it (DROP INDEX CONCURRENTLY) and start again.

SET lock_timeout = '5s';
SET statement_timeout = '2h';
-- squawk assumes every script runs in a transaction (.squawk.toml); this one does not (its name says so).
-- squawk-ignore ban-concurrent-index-creation-in-transaction
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS device_firmware_status_project_key
    ON device_firmware_status (project_id, device_id, firmware);
