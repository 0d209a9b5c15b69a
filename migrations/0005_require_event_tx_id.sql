-- Every event has a tx_id (0004 filled the old rows, set the default and added this check NOT VALID).
-- Validated here, in a transaction of its own, so the validating scan takes only a SHARE UPDATE EXCLUSIVE
-- lock and ingest goes on meanwhile.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '30min';

ALTER TABLE firmware_events VALIDATE CONSTRAINT firmware_events_tx_id_present;
