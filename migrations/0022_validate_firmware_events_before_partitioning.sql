-- The bound 0021 added, made true and validated without blocking ingest: 0021's CHECK already refuses new rows
-- dated after the boundary, so the rows there now (devices whose clocks ran far ahead) are all there will be.
-- They are moved aside to firmware_events_ahead_of_partitioning (0023 puts them back, through the partitioned
-- table, once it exists: until then, for the seconds between the two scripts, reads do not show them), then the
-- CHECK is validated. Both scan the table under locks that let ingest and reads go on.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '2h';

CREATE TABLE firmware_events_ahead_of_partitioning (
    id bigint NOT NULL,
    device_id bigint NOT NULL,
    project_id bigint NOT NULL,
    firmware text COLLATE "C" NOT NULL,
    status text COLLATE "C" NOT NULL,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    arrival bigint NOT NULL,
    CONSTRAINT firmware_events_ahead_of_partitioning_pkey PRIMARY KEY (project_id, id)
);

DO $$
DECLARE
    boundary timestamptz;
BEGIN
    IF EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
        -- Beside the rows it takes, so that moving them runs on each shard.
        PERFORM create_distributed_table('firmware_events_ahead_of_partitioning', 'project_id', colocate_with => 'project_memberships');
    END IF;

    -- The bound 0021 chose, read back from its CHECK (occurred_at < '...').
    SELECT (regexp_match(pg_get_constraintdef(oid), '''([^'']+)'''))[1]::timestamptz
    INTO STRICT boundary
    FROM pg_constraint
    WHERE conrelid = 'firmware_events'::regclass
      AND conname = 'firmware_events_before_partitioning';

    EXECUTE '
        INSERT INTO firmware_events_ahead_of_partitioning (id, device_id, project_id, firmware, status, occurred_at, received_at, arrival)
        SELECT id, device_id, project_id, firmware, status, occurred_at, received_at, arrival
        FROM firmware_events
        WHERE occurred_at >= $1' USING boundary;
    EXECUTE 'DELETE FROM firmware_events WHERE occurred_at >= $1' USING boundary;
END
$$;

ALTER TABLE firmware_events VALIDATE CONSTRAINT firmware_events_before_partitioning;
