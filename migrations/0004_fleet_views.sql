-- Fleet views: the project-wide event feed in arrival order, device summaries, version counts kept up to
-- date as events arrive, and the key that signs paging cursors.

-- Fail fast instead of queueing behind (and blocking) live traffic; DbUp runs this script in one transaction.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '5min';

-- Arrival order that a poller can trust: the id of the transaction that stored the event. Readers of the feed
-- only return events of transactions older than every transaction still running
-- (pg_snapshot_xmin(pg_current_snapshot())), so an event committed late can never land behind a poller's
-- cursor. The default only applies to new rows: adding it rewrites nothing. Rows stored before this script
-- arrived earlier than any future transaction, so '1' orders them first. The NOT NULL check is added here
-- NOT VALID (no scan) and validated by 0005 in a transaction of its own.
ALTER TABLE firmware_events ADD COLUMN tx_id xid8;
ALTER TABLE firmware_events ALTER COLUMN tx_id SET DEFAULT pg_current_xact_id();
UPDATE firmware_events SET tx_id = '1' WHERE tx_id IS NULL;
ALTER TABLE firmware_events ADD CONSTRAINT firmware_events_tx_id_present CHECK (tx_id IS NOT NULL) NOT VALID;

-- The feed: "project P's events by arrival", newest first or after a cursor; also the index behind the
-- project_id foreign key.
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX firmware_events_project_arrival_idx ON firmware_events (project_id, tx_id, id);
-- (DbUp runs each script in a transaction, where CONCURRENTLY is not allowed; no installation holds more
-- than test data at this version.)

-- The device's newest event by its own clock (capped at the receive time, as for current_firmware).
ALTER TABLE devices ADD COLUMN last_event_status text COLLATE "C";
ALTER TABLE devices ADD COLUMN last_event_at timestamptz;

-- Device pages in id order, and "the devices of project P on version V" without a sort.
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX devices_project_firmware_idx ON devices (project_id, current_firmware, id);
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX devices_project_id_id_idx ON devices (project_id, id);
-- (As above: inside DbUp's transaction, on tables that hold only test data at this version.)
-- Superseded by devices_project_id_id_idx, which also serves the foreign key.
-- squawk-ignore require-concurrent-index-deletion
DROP INDEX devices_project_id_idx;

-- The newest status each device reported for each version it reported on; what the version counts of
-- failed and rolled_back devices are made of.
CREATE TABLE device_firmware_status (
    device_id bigint NOT NULL REFERENCES devices (id),
    firmware text COLLATE "C" NOT NULL,
    project_id bigint NOT NULL REFERENCES projects (id),
    status text COLLATE "C" NOT NULL,
    reported_at timestamptz NOT NULL,
    PRIMARY KEY (device_id, firmware)
);

-- Per project and version: devices running it, and devices whose newest event for it is failed or
-- rolled_back. Kept up to date in the transaction that stores the events. Each count is split over 16
-- stripes (device id modulo 16) so that a fleet-wide rollout does not queue every device's transaction on
-- one row lock; readers add the stripes up.
CREATE TABLE firmware_version_counts (
    project_id bigint NOT NULL REFERENCES projects (id),
    firmware text COLLATE "C" NOT NULL,
    -- 0 to 15 by its CHECK: a smallint cannot overflow here.
    -- squawk-ignore prefer-bigint-over-smallint
    stripe smallint NOT NULL,
    devices bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    rolled_back bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, firmware, stripe),
    CONSTRAINT firmware_version_counts_stripe_range CHECK (stripe BETWEEN 0 AND 15)
);

-- Derived state for the events stored before this script.
UPDATE devices AS d
SET last_event_status = newest.status,
    last_event_at = newest.reported_at
FROM (
    SELECT DISTINCT ON (device_id) device_id,
           status,
           LEAST(occurred_at, received_at) AS reported_at
    FROM firmware_events
    ORDER BY device_id, LEAST(occurred_at, received_at) DESC, id DESC
) AS newest
WHERE d.id = newest.device_id;

INSERT INTO device_firmware_status (device_id, firmware, project_id, status, reported_at)
SELECT DISTINCT ON (device_id, firmware) device_id,
       firmware,
       project_id,
       status,
       LEAST(occurred_at, received_at)
FROM firmware_events
ORDER BY device_id, firmware, LEAST(occurred_at, received_at) DESC, id DESC;

INSERT INTO firmware_version_counts (project_id, firmware, stripe, devices, failed, rolled_back)
SELECT project_id, firmware, 0, sum(devices), sum(failed), sum(rolled_back)
FROM (
    SELECT project_id, current_firmware AS firmware, 1 AS devices, 0 AS failed, 0 AS rolled_back
    FROM devices
    WHERE current_firmware IS NOT NULL
    UNION ALL
    SELECT project_id, firmware, 0, (status = 'failed')::int, (status = 'rolled_back')::int
    FROM device_firmware_status
) AS contributions
GROUP BY project_id, firmware;

-- The key that signs paging cursors, shared by every instance: 32 random bytes.
CREATE TABLE service_secrets (
    name text PRIMARY KEY,
    secret bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT service_secrets_secret_length CHECK (octet_length(secret) >= 32)
);

INSERT INTO service_secrets (name, secret)
VALUES ('cursor', decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'));
