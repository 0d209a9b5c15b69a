-- Validates migration 0025's CHECKs on the rows stored before it: a scan under SHARE UPDATE EXCLUSIVE, which lets
-- reports and reads go on. Every row older than 0025 has NULL in those columns.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '30min';

ALTER TABLE firmware_events VALIDATE CONSTRAINT firmware_events_from_firmware_length;
ALTER TABLE firmware_events VALIDATE CONSTRAINT firmware_events_error_code_format;
ALTER TABLE firmware_events VALIDATE CONSTRAINT firmware_events_detail_length;
