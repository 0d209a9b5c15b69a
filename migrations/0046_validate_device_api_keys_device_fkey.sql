-- Validates the device keys' foreign key that 0045 added NOT VALID: every key's (project_id, device_id) is looked up
-- in the devices' primary key. VALIDATE takes SHARE UPDATE EXCLUSIVE on device_api_keys, which lets reads and writes
-- go on while it scans, and ROW SHARE on devices. On Citus the key was valid since 0018: nothing to scan.
-- The service writes every key with its device's project, so none fails; one that does was made or moved by hand
-- (a device's project_id changed in SQL, its keys not), and authenticates nobody already: the key lookup joins the key
-- to its device by both columns (KeyLookups). Should this script fail, such keys are listed by
--   SELECT k.id, k.project_id, k.device_id, d.project_id AS device_project_id
--   FROM device_api_keys AS k LEFT JOIN devices AS d ON d.id = k.device_id
--   WHERE d.project_id IS DISTINCT FROM k.project_id;
-- and are deleted, or set to their device's project, before the service is started again.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '2h';

ALTER TABLE device_api_keys VALIDATE CONSTRAINT device_api_keys_device_fkey;
