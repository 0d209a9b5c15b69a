-- Device attributes (issue 18): a hardware revision (hardware, e.g. rev-B) and a small set of labels (tags), set by
-- admins at enrollment, on one device or in bulk. Every fleet view filters by them; the version counts and the
-- silence counts (0027) are kept per hardware too ('' for devices without one), so that /firmware-versions filtered
-- or broken down by hardware reads counters like the unfiltered one. The counters' primary keys gain hardware in
-- 0033, on unique indexes built without blocking writes by 0032.
-- New columns: nullable, or with a constant default, are catalog changes (nothing rewritten). Their CHECKs are NOT
-- VALID (every existing row has NULL or '{}'); 0033 validates them.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '1min';

ALTER TABLE devices ADD COLUMN hardware text COLLATE "C";
ALTER TABLE devices ADD COLUMN tags text[] COLLATE "C" NOT NULL DEFAULT '{}';
ALTER TABLE devices ADD CONSTRAINT devices_hardware_format
    CHECK (hardware ~ '^[A-Za-z0-9_.:/+-]{1,64}$') NOT VALID;
ALTER TABLE devices ADD CONSTRAINT devices_tags_count
    CHECK (cardinality(tags) <= 16) NOT VALID;

ALTER TABLE firmware_version_counts ADD COLUMN hardware text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE firmware_silence_counts ADD COLUMN hardware text COLLATE "C" NOT NULL DEFAULT '';
