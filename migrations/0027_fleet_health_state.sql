-- Fleet health (issue 18): the state that answers "how did updates from X to Y go", "which devices went silent
-- right after an update" and "which devices fell back to an older version without a rollback", each with one read
-- of a few rows. Ingest keeps all of it in the transaction that stores the events (FirmwareEvents.cs), as it keeps
-- firmware_version_counts.
--
--  * device_transition_status: per device and target version, its newest report on the update to it: status,
--    error code, and the version it came from. A report's target is its firmware, except for rolled_back, which
--    names the version gone back to: its target is its from_firmware (else the version the device ran before).
--    From: the report's from_firmware, else the version the device ran before (when another), else the one kept.
--  * firmware_transition_counts: per project and (from, to) pair, the devices by the state of their newest report
--    (from_firmware '' when not known). firmware_transition_errors: the same devices, when failed or rolled back
--    with an error code, by that code.
--  * devices.downgraded_from: set when a device's current firmware moved to a lower SemVer precedence without a
--    rolled_back report (the version it came down from), cleared by its next move; firmware_version_counts counts
--    those devices per version they run now.
--  * firmware_silence_counts: devices whose newest event is installed or updated, by the version they run and the
--    UTC hour of their last report. "Silent for longer than H hours" is the sum of the hours before the cutoff's
--    hour plus a count, through an index (migration 0028), of the devices that last reported within the cutoff's
--    own hour.
--  * projects.silent_after_hours: how long after such a report a device counts as silent; NULL for 24.
--
-- Silence counts start from what devices hold, filled under a SHARE lock on devices so that no report changes them
-- between the read and the commit (reports wait for the fill, seconds for a million devices). Transitions and
-- downgrades were not recorded before: they count reports from this migration on. Instances of the previous version
-- must be stopped before this runs: they record reports without keeping these counts (README, "Upgrading").

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '30min';

CREATE TABLE device_transition_status (
    project_id bigint NOT NULL REFERENCES projects (id),
    device_id bigint NOT NULL,
    to_firmware text COLLATE "C" NOT NULL,
    from_firmware text COLLATE "C",
    status text COLLATE "C" NOT NULL,
    error_code text COLLATE "C",
    reported_at timestamptz NOT NULL,
    PRIMARY KEY (project_id, device_id, to_firmware)
);

ALTER TABLE devices ADD COLUMN downgraded_from text COLLATE "C";

-- A count of devices, bigint as the table's other counts; a constant default is a catalog change (nothing rewritten).
ALTER TABLE firmware_version_counts ADD COLUMN unexplained_downgrades bigint NOT NULL DEFAULT 0;

-- Hours, 1 to 8760 (a year); NULL for the default, 24. projects is a table of tenants (a few rows).
-- squawk-ignore prefer-bigint-over-int
ALTER TABLE projects ADD COLUMN silent_after_hours integer;
-- squawk-ignore constraint-missing-not-valid
ALTER TABLE projects ADD CONSTRAINT projects_silent_after_hours_range CHECK (silent_after_hours BETWEEN 1 AND 8760);

CREATE TABLE firmware_transition_counts (
    project_id bigint NOT NULL REFERENCES projects (id),
    to_firmware text COLLATE "C" NOT NULL,
    from_firmware text COLLATE "C" NOT NULL,
    attempted bigint NOT NULL,
    succeeded bigint NOT NULL,
    failed bigint NOT NULL,
    rolled_back bigint NOT NULL,
    PRIMARY KEY (project_id, to_firmware, from_firmware)
);

CREATE TABLE firmware_transition_errors (
    project_id bigint NOT NULL REFERENCES projects (id),
    to_firmware text COLLATE "C" NOT NULL,
    from_firmware text COLLATE "C" NOT NULL,
    error_code text COLLATE "C" NOT NULL,
    devices bigint NOT NULL,
    PRIMARY KEY (project_id, to_firmware, from_firmware, error_code)
);

-- reported_hour is the start of the UTC hour: ingest computes it as date_trunc('hour', t AT TIME ZONE 'UTC') AT TIME
-- ZONE 'UTC', immutable functions only, which Citus evaluates the same on every node whatever the session's time zone.
CREATE TABLE firmware_silence_counts (
    project_id bigint NOT NULL REFERENCES projects (id),
    firmware text COLLATE "C" NOT NULL,
    reported_hour timestamptz NOT NULL,
    devices bigint NOT NULL,
    PRIMARY KEY (project_id, firmware, reported_hour)
);

DO $$
DECLARE
    t text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;

    -- Distributed by project and co-located with the other tables of a project's data (docs/scale-out.md).
    FOREACH t IN ARRAY ARRAY['device_transition_status', 'firmware_transition_counts', 'firmware_transition_errors', 'firmware_silence_counts'] LOOP
        PERFORM create_distributed_table(t, 'project_id', colocate_with => 'project_memberships');
    END LOOP;
END
$$;

LOCK TABLE devices IN SHARE MODE;
INSERT INTO firmware_silence_counts (project_id, firmware, reported_hour, devices)
SELECT d.project_id,
       d.current_firmware,
       date_trunc('hour', d.last_reported_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       count(*)
FROM devices AS d
WHERE d.last_event_status IN ('installed', 'updated')
  AND d.current_firmware IS NOT NULL
  AND d.last_reported_at IS NOT NULL
GROUP BY d.project_id, d.current_firmware, date_trunc('hour', d.last_reported_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
