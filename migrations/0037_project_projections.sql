-- Projections (issue 28): ingest stores the events and advances the project's feed number, and nothing else;
-- everything derived from the events (device state, version counts and statuses, transitions, silence, rollout
-- counters, webhook deliveries) is projected from each project's feed by a background step (FirmwareManager.Api/
-- Projections). A step reads the events after the project's position here, applies them, and stores the new
-- position in the same transaction, so each event is projected exactly once. The step locks the project's row
-- (FOR UPDATE SKIP LOCKED): one instance projects a project at a time, and a stopped instance's lock goes with its
-- connection. projected_at: when the position last moved.
--
-- A live installation: the derived state already reflects every event numbered up to the project's last_arrival
-- (ingest kept it in the same transaction), so each project's position starts there, read under a lock that waits for
-- the ingest transactions in flight and holds back new ones until this script commits (a few thousand rows at most:
-- one per project). Events numbered 0 (stored before migration 0012, and the demo data) are before every position.
-- An older instance still running after this commits would keep derived state in its ingest transaction while the
-- new instances project the same events again: README, "Upgrading", says to stop the older instances first.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '1min';
-- On Citus, DDL in this transaction goes over one connection per node (0029 says why).
SET LOCAL citus.multi_shard_modify_mode = 'sequential';

-- The foreign key to projects comes after distribution, as in 0029 and 0034.
CREATE TABLE project_projections (
    project_id bigint PRIMARY KEY,
    position bigint NOT NULL,
    projected_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT project_projections_position_not_negative CHECK (position >= 0)
);

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;

    PERFORM create_distributed_table('project_projections', 'project_id', colocate_with => 'project_memberships');
END
$$;

-- The table is new and empty: the key is checked against no row.
ALTER TABLE project_projections ADD CONSTRAINT project_projections_project_id_fkey FOREIGN KEY (project_id) REFERENCES projects (id);

-- EXCLUSIVE: reads go on; an ingest transaction (which updates its project's row) waits for this script's commit.
LOCK TABLE project_event_arrivals IN EXCLUSIVE MODE;

INSERT INTO project_projections (project_id, position)
SELECT project_id, last_arrival
FROM project_event_arrivals;
