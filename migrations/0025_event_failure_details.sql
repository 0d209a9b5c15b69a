-- What a device may add to a report (issue 18), all optional: the version it ran before (from_firmware, SemVer),
-- a short error code (error_code, e.g. E_SIG_VERIFY) and free text (detail, at most 1 KiB). The API validates them
-- first; the CHECKs are the database's own guard, NOT VALID: they hold for every row written from now on, and
-- the rows already stored have NULL in the new columns, which passes them (migration 0026 validates them, without
-- blocking writes).
-- Nullable columns without a default are a catalog change on the partitioned table and each partition: nothing is
-- rewritten.

-- Fail fast instead of queueing behind (and blocking) live traffic; DbUp runs this script in one transaction.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '1min';

ALTER TABLE firmware_events ADD COLUMN from_firmware text;
ALTER TABLE firmware_events ADD COLUMN error_code text;
ALTER TABLE firmware_events ADD COLUMN detail text;

ALTER TABLE firmware_events ADD CONSTRAINT firmware_events_from_firmware_length
    CHECK (length(from_firmware) BETWEEN 1 AND 128) NOT VALID;
ALTER TABLE firmware_events ADD CONSTRAINT firmware_events_error_code_format
    CHECK (error_code ~ '^[A-Za-z0-9_.-]{1,64}$') NOT VALID;
ALTER TABLE firmware_events ADD CONSTRAINT firmware_events_detail_length
    CHECK (octet_length(detail) <= 1024) NOT VALID;
