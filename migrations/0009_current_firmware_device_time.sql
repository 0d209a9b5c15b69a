-- The device-clock time of the report that set a device's current firmware, capped at a day past its receive
-- time: two reports whose times both run ahead of the service's clock are ordered by it (README, "Reporting an
-- event"). current_firmware_at keeps the time capped at the receive time, which orders everything else.
-- NULL for rows written before: read as current_firmware_at. Adding a nullable column without a default
-- rewrites nothing; the short lock_timeout keeps the ALTER from queueing behind a long transaction.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '1min';

ALTER TABLE devices ADD COLUMN current_firmware_device_at timestamptz;
