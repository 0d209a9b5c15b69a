-- The counters' primary keys gain hardware (0031), on the unique indexes 0032 built: a catalog change under a
-- short ACCESS EXCLUSIVE lock on two small tables (a row per project, version, hardware and stripe or hour).
-- Then 0031's CHECKs are validated, under SHARE UPDATE EXCLUSIVE (writes go on).

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '30min';

ALTER TABLE firmware_version_counts DROP CONSTRAINT firmware_version_counts_pkey;
ALTER TABLE firmware_version_counts
    ADD CONSTRAINT firmware_version_counts_pkey PRIMARY KEY USING INDEX firmware_version_counts_hardware_key;

ALTER TABLE firmware_silence_counts DROP CONSTRAINT firmware_silence_counts_pkey;
ALTER TABLE firmware_silence_counts
    ADD CONSTRAINT firmware_silence_counts_pkey PRIMARY KEY USING INDEX firmware_silence_counts_hardware_key;

ALTER TABLE devices VALIDATE CONSTRAINT devices_hardware_format;
ALTER TABLE devices VALIDATE CONSTRAINT devices_tags_count;
