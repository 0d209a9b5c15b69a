-- One number that every change making a cached key lookup wrong moves, in that change's own transaction: a key
-- revoked, a device decommissioned, a member removed or made admin (Auth/ApiKeys.cs, KeyChanges). Every instance
-- reads it each second and forgets its cached lookups when it moved, so a cache can keep a fleet's keys for minutes
-- (a key lookup per report or read cost a round trip whenever the cache, 4 s before, had let the key go) while a
-- revoked key still fails on every instance within 5 seconds. A reference table on Citus: one row, a read on every
-- node, written only by those changes.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '1min';

CREATE TABLE api_key_epoch (
    singleton boolean PRIMARY KEY DEFAULT true,
    epoch bigint NOT NULL,
    CONSTRAINT api_key_epoch_one_row CHECK (singleton)
);

INSERT INTO api_key_epoch (epoch) VALUES (0);

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;

    PERFORM create_reference_table('api_key_epoch');
END
$$;
