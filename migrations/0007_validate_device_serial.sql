-- Validates the serial length check that 0006 added NOT VALID, in a transaction of its own, so the scan
-- takes only a SHARE UPDATE EXCLUSIVE lock.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '30min';

ALTER TABLE devices VALIDATE CONSTRAINT devices_serial_length;
