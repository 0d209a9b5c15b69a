-- Rollouts (issue 18): an admin declares that a version is going out to an audience (a hardware revision, tags, the
-- version devices come from), with a failure threshold. This service ships no firmware: it observes. Ingest keeps,
-- in the transaction that stores the events:
--  * rollout_devices: per rollout and device of its audience that reported on the rollout's version since it was
--    declared, the newest status (its update target's, as device_transition_status has it);
--  * the rollout's own counters (attempted, updated, failed, rolled_back), and halted_at, set once in the
--    transaction whose reports take the failure rate ((failed + rolled_back) / attempted) above max_failure_rate
--    with at least min_devices attempted; that transaction also records the rollout.halted webhook deliveries,
--    keyed by minus the rollout's id (webhook_deliveries.event_id), with device_id 0.
-- A device counts by the hardware and tags it has when it reports. ended_at: an admin ended the rollout.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '1min';
-- On Citus, DDL in this transaction goes over one connection per node (0029 says why).
SET LOCAL citus.multi_shard_modify_mode = 'sequential';

-- The foreign keys to projects come after distribution, as in 0029.
CREATE TABLE rollouts (
    project_id bigint NOT NULL,
    id bigint GENERATED ALWAYS AS IDENTITY,
    firmware text COLLATE "C" NOT NULL,
    from_firmware text COLLATE "C",
    hardware text COLLATE "C",
    tags text[] COLLATE "C" NOT NULL DEFAULT '{}',
    max_failure_rate numeric(5, 4) NOT NULL,
    min_devices bigint NOT NULL,
    created_at timestamptz NOT NULL,
    halted_at timestamptz,
    ended_at timestamptz,
    attempted bigint NOT NULL DEFAULT 0,
    updated bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    rolled_back bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, id),
    CONSTRAINT rollouts_max_failure_rate_range CHECK (max_failure_rate BETWEEN 0 AND 1),
    CONSTRAINT rollouts_min_devices_range CHECK (min_devices BETWEEN 1 AND 10000000),
    CONSTRAINT rollouts_firmware_length CHECK (length(firmware) BETWEEN 1 AND 128)
);

-- What ingest looks for: the project's rollouts not ended.
CREATE INDEX rollouts_open_idx ON rollouts (project_id, firmware) WHERE ended_at IS NULL;

CREATE TABLE rollout_devices (
    project_id bigint NOT NULL,
    rollout_id bigint NOT NULL,
    device_id bigint NOT NULL,
    status text COLLATE "C" NOT NULL,
    reported_at timestamptz NOT NULL,
    PRIMARY KEY (project_id, rollout_id, device_id)
);

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;

    PERFORM create_distributed_table('rollouts', 'project_id', colocate_with => 'project_memberships');
    PERFORM create_distributed_table('rollout_devices', 'project_id', colocate_with => 'project_memberships');
END
$$;

-- Both tables are new and empty: the keys are checked against no row.
ALTER TABLE rollouts ADD CONSTRAINT rollouts_project_id_fkey FOREIGN KEY (project_id) REFERENCES projects (id);
ALTER TABLE rollout_devices ADD CONSTRAINT rollout_devices_rollout_fkey
    FOREIGN KEY (project_id, rollout_id) REFERENCES rollouts (project_id, id);

-- Rollouts are audited like the project's other changes. NOT VALID: every row already there has an older kind;
-- 0035 validates it without blocking writes.
ALTER TABLE audit_log DROP CONSTRAINT audit_log_target_kind_known;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_target_kind_known
    CHECK (target_kind IN ('project', 'member', 'member_key', 'device', 'device_key', 'webhook', 'rollout')) NOT VALID;
