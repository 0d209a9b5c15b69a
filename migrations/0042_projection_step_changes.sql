-- A projection step's changes, derived once (issue 28): each device of the step as it was and as its events move it,
-- and each device's change per update target. Before this, each statement of the step derived them again from the
-- step's events (up to five times for the transitions' changes): about 22 µs an event per statement under load
-- (docs/performance.md). Now the step's first statements write them here, its statements read them, and its last
-- statements delete them, all in the step's transaction: no committed transaction leaves a row here, and a project's
-- steps run one at a time (its project_projections row), so a step reads only its own rows.
--
-- Logged tables, though their rows never outlive a transaction: Citus moves a shard (a rebalance, a tenant isolated)
-- by logical replication of every table co-located with it, which cannot carry an unlogged one (with these tables
-- unlogged, the rebalance of bench/citus-ops.sh under load never finished). The WAL of a step grows by its rows here.
-- Distributed by project_id on Citus, co-located with the tables the step reads and writes: each statement of the
-- step stays on its project's node (docs/scale-out.md).

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '1min';
-- On Citus, DDL in this transaction goes over one connection per node (0029 says why).
SET LOCAL citus.multi_shard_modify_mode = 'sequential';

-- Each device of the step (Projections/StepEvents.cs, StepDevicesFromEvents): the device as the step found it, its
-- newest event of the step, its newest move of firmware and whether that move applies.
CREATE TABLE projection_step_devices (
    project_id bigint NOT NULL,
    device_id bigint NOT NULL,
    hardware text COLLATE "C" NOT NULL,
    current_firmware text COLLATE "C",
    downgraded_from text COLLATE "C",
    last_event_status text COLLATE "C",
    last_event_at timestamptz,
    last_reported_at timestamptz,
    status text COLLATE "C" NOT NULL,
    reported_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    move_firmware text COLLATE "C",
    move_reported_at timestamptz,
    move_device_at timestamptz,
    moves boolean,
    downgrade boolean,
    CONSTRAINT projection_step_devices_pkey PRIMARY KEY (project_id, device_id)
);

-- Each device's newest report per update target where it is newer than the one kept, with the one kept
-- (StepEvents.TransitionChangesFromEvents).
CREATE TABLE projection_step_transitions (
    project_id bigint NOT NULL,
    device_id bigint NOT NULL,
    to_firmware text COLLATE "C" NOT NULL,
    new_status text COLLATE "C" NOT NULL,
    reported_at timestamptz NOT NULL,
    new_from text COLLATE "C",
    new_error text COLLATE "C",
    old_status text COLLATE "C",
    old_from text COLLATE "C",
    old_error text COLLATE "C",
    CONSTRAINT projection_step_transitions_pkey PRIMARY KEY (project_id, device_id, to_firmware)
);

-- No foreign keys: the rows live inside one step's transaction, whose project exists.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;

    PERFORM create_distributed_table('projection_step_devices', 'project_id', colocate_with => 'project_memberships');
    PERFORM create_distributed_table('projection_step_transitions', 'project_id', colocate_with => 'project_memberships');
END
$$;
