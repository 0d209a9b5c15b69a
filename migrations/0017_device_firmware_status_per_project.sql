-- The index 0016 built becomes the primary key; the old one, (device_id, firmware), goes. A catalog change:
-- no scan, no build, a moment's lock.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '1min';

ALTER TABLE device_firmware_status DROP CONSTRAINT device_firmware_status_pkey;
ALTER TABLE device_firmware_status
    ADD CONSTRAINT device_firmware_status_pkey PRIMARY KEY USING INDEX device_firmware_status_project_key;
