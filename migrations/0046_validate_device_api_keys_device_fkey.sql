-- Validates the device keys' foreign key that 0045 added NOT VALID: every key's (project_id, device_id) is looked up
-- in the devices' primary key. VALIDATE takes SHARE UPDATE EXCLUSIVE on device_api_keys, which lets reads and writes
-- go on while it scans, and ROW SHARE on devices. On Citus the key was valid since 0018: nothing to scan.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '2h';

ALTER TABLE device_api_keys VALIDATE CONSTRAINT device_api_keys_device_fkey;
