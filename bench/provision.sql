-- The benchmark fleet, made in SQL (COPY-speed generate_series): :devices devices over 10 projects, project 1
-- holding :big of them, each with a key 'fmd_b' || md5(id); :events_per_device historical events per device;
-- the derived state (current firmware, newest event, version counts, silence) as the projection would have left it:
-- verify-projections finds no difference in it.
\set ON_ERROR_STOP on
INSERT INTO projects (id, name) SELECT g, 'bench_' || g FROM generate_series(1, 10) AS g;
INSERT INTO project_memberships (id, project_id, email, role) SELECT g, g, 'admin@bench-' || g || '.example', 'admin' FROM generate_series(1, 10) AS g;
INSERT INTO membership_api_keys (project_id, membership_id, key_prefix, key_hash)
SELECT g, g, left('fmm_bench_' || g, 12), sha256(convert_to('fmm_bench_admin_' || g, 'UTF8')) FROM generate_series(1, 10) AS g;
SELECT setval(pg_get_serial_sequence('projects', 'id'), 10);
SELECT setval(pg_get_serial_sequence('project_memberships', 'id'), 10);

INSERT INTO devices (id, project_id, name, current_firmware, current_firmware_at, last_reported_at, last_event_status, last_event_at)
SELECT g,
       CASE WHEN g <= :big THEN 1 ELSE 2 + g % 9 END,
       'device ' || g,
       '1.' || (g % 12) || '.0',
       timestamptz '2024-01-01' + :events_per_device * interval '1 day',
       timestamptz '2024-01-01' + :events_per_device * interval '1 day',
       'updated',
       timestamptz '2024-01-01' + :events_per_device * interval '1 day'
FROM generate_series(1, :devices) AS g;
SELECT setval(pg_get_serial_sequence('devices', 'id'), :devices);

INSERT INTO device_api_keys (project_id, device_id, key_prefix, key_hash)
SELECT project_id, id, left('fmd_b' || md5(id::text), 12), sha256(convert_to('fmd_b' || md5(id::text), 'UTF8')) FROM devices;

INSERT INTO api_key_digests (key_hash, project_id)
SELECT key_hash, project_id FROM membership_api_keys
UNION ALL
SELECT key_hash, project_id FROM device_api_keys;

-- History: one event a day per device, the last one the update to its current firmware.
INSERT INTO firmware_events (device_id, project_id, firmware, status, occurred_at, received_at)
SELECT d.id,
       d.project_id,
       CASE WHEN e = :events_per_device THEN d.current_firmware ELSE '1.' || ((d.id + e) % 12) || '.0' END,
       CASE WHEN e = :events_per_device THEN 'updated' ELSE (ARRAY['downloading', 'installed', 'failed', 'rolled_back'])[1 + e % 4] END,
       timestamptz '2024-01-01' + e * interval '1 day',
       timestamptz '2024-01-01' + e * interval '1 day'
FROM devices AS d
CROSS JOIN generate_series(1, :events_per_device) AS e;

INSERT INTO device_firmware_status (device_id, firmware, project_id, status, reported_at)
SELECT DISTINCT ON (device_id, firmware) device_id, firmware, project_id, status, occurred_at
FROM firmware_events
ORDER BY device_id, firmware, occurred_at DESC;

INSERT INTO firmware_version_counts (project_id, firmware, stripe, devices, failed, rolled_back)
SELECT project_id, firmware, 0, sum(devices), sum(failed), sum(rolled_back)
FROM (
    SELECT project_id, current_firmware AS firmware, 1 AS devices, 0 AS failed, 0 AS rolled_back FROM devices
    UNION ALL
    SELECT project_id, firmware, 0, (status = 'failed')::int, (status = 'rolled_back')::int FROM device_firmware_status
) AS contributions
GROUP BY project_id, firmware;

-- Silence: the devices whose newest event is an install or an update, by version and the hour of their last report.
INSERT INTO firmware_silence_counts (project_id, firmware, hardware, reported_hour, devices)
SELECT project_id,
       current_firmware,
       COALESCE(hardware, ''),
       date_trunc('hour', last_reported_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       count(*)
FROM devices
WHERE last_event_status IN ('installed', 'updated')
  AND current_firmware IS NOT NULL
  AND last_reported_at IS NOT NULL
GROUP BY 1, 2, 3, 4;

-- pgbench's ceiling table: the events table's shape, its indexes, no foreign keys.
CREATE TABLE bench_events (LIKE firmware_events INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING INDEXES INCLUDING CONSTRAINTS);
