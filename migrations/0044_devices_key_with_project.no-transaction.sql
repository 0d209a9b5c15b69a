-- The devices' primary key becomes (project_id, id) on plain PostgreSQL, as it is on Citus since 0018 (issue 28),
-- in four scripts: this one builds its unique index without blocking writes; 0045 makes it the primary key and points
-- the device keys' foreign key at it; 0046 validates that key; 0047 drops devices_project_id_id_idx.
-- Why: a projection step updates a row of devices for every device that reported, and no update of it is HOT (the
-- time of the last report is in devices_silent_after_update_idx), so each index of devices gets an entry per report.
-- The table had two indexes for one purpose: devices_pkey (id) and devices_project_id_id_idx (project_id, id); on
-- Citus the second is a copy of the primary key. One index fewer to write per report (docs/performance.md, "One
-- index fewer on devices"). Every statement of the service names a device with its project, so none needs (id) alone.
-- A device's id stays unique across projects as before: ids are drawn from the identity's sequence only
-- (DeviceProvisioning), which is what Citus has relied on since 0018.
-- On Citus this builds a second index of the primary key's columns, dropped by 0047 (CREATE INDEX CONCURRENTLY
-- cannot be made conditional: it cannot run inside a DO block). IF NOT EXISTS: a build interrupted before DbUp
-- recorded this script is resumed by running it again (an invalid index left by a failed build must be dropped by
-- hand first: docs/schema.md, "Migrations").

-- Session settings: outside a transaction they last as long as the migrator's connection.
SET lock_timeout = '5s';
SET statement_timeout = '2h';

-- squawk assumes every script runs in a transaction (.squawk.toml); this one does not (its name says so).
-- squawk-ignore ban-concurrent-index-creation-in-transaction
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS devices_project_id_key ON devices (project_id, id);
