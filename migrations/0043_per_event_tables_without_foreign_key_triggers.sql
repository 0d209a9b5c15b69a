-- The tables written once per event lose their foreign keys (issue 28): firmware_events (to devices and projects),
-- device_firmware_status (to devices and projects) and device_transition_status (to projects). A foreign key is
-- checked by a trigger per row that looks the referenced row up again and locks it FOR KEY SHARE: five lookups per
-- event, an eighth to a sixth of what PostgreSQL spends on a report from ingest to projection, and half of the
-- events' INSERT for a batch (docs/performance.md, "Batches of 100 against pgbench" and "Per-event tables without
-- foreign key triggers"). What the keys guarded is held by the statements that write these rows:
--  * every event is stored by FirmwareEvents' INSERT, which takes its rows from a join with the devices of its
--    project that are active with their key, after the same transaction locked those devices FOR KEY SHARE;
--  * every row of device_firmware_status and device_transition_status is written by a projection step, from its
--    step's events joined to devices, with those devices locked FOR NO KEY UPDATE by the step;
--  * no statement of the service deletes a device or a project, or changes their ids (a device is decommissioned,
--    a flag); so nothing the keys would have refused or cascaded can happen.
-- On Citus, firmware_events and device_firmware_status never had the key to devices (0018, 0023: an event stays with
-- its project): both engines now keep the same keys. The per-project tables written once per step (version counts,
-- transition counts and errors, silence) keep theirs: a few rows a step.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '1min';
-- On Citus, DDL in this transaction goes over one connection per node (0029 says why).
SET LOCAL citus.multi_shard_modify_mode = 'sequential';

-- Dropping a foreign key changes the catalog only (no scan, no rewrite); its lock on the table and on the table it
-- references is held until the commit, a moment after the statements here, bounded by the lock_timeout above.
ALTER TABLE firmware_events DROP CONSTRAINT IF EXISTS firmware_events_device_id_fkey;
ALTER TABLE firmware_events DROP CONSTRAINT IF EXISTS firmware_events_project_id_fkey;
ALTER TABLE device_firmware_status DROP CONSTRAINT IF EXISTS device_firmware_status_device_id_fkey;
ALTER TABLE device_firmware_status DROP CONSTRAINT IF EXISTS device_firmware_status_project_id_fkey;
ALTER TABLE device_transition_status DROP CONSTRAINT IF EXISTS device_transition_status_project_id_fkey;
