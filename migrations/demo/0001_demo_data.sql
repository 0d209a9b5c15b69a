-- The reference demo data set. Applied at every start while FirmwareManager:DemoData is on, so every
-- statement leaves existing rows alone and it is safe to apply again. Never applied in production.
-- Keys are stored as the SHA-256 digests of the documented demo keys (super_secret_key_1.., README).

INSERT INTO projects (id, name) VALUES
    (1, 'project_1'),
    (2, 'project_2')
ON CONFLICT DO NOTHING;

INSERT INTO project_memberships (id, project_id, email, role) VALUES
    (1, 1, 'member_1@project-1.example', 'admin'),
    (2, 1, 'member_2@project-1.example', 'viewer'),
    (3, 2, 'member_3@project-2.example', 'admin')
ON CONFLICT DO NOTHING;

INSERT INTO membership_api_keys (id, project_id, membership_id, key_prefix, key_hash) VALUES
    (1, 1, 1, 'demo-m1', '\x3b7cfb56a7db7f53b664c18fef9a39defd660df0a0d1c53325e8558a61b0b604'),
    (2, 1, 2, 'demo-m2', '\xb253566073fde22f38be943559a09a18be99bc16ec8c673d2626c57a671d3adf'),
    (3, 2, 3, 'demo-m3', '\x172b0b5b419d75878ec4954b90acdf4636bc9309b57322ceb04d300fcb7ec340')
ON CONFLICT DO NOTHING;

INSERT INTO devices (id, project_id, name, current_firmware, current_firmware_at, last_reported_at) VALUES
    (1, 1, 'device_1', '1.0.0', '2023-01-01T00:00:00Z', '2023-01-01T00:00:00Z'),
    (2, 1, 'device_2', '1.0.1', '2023-01-01T00:00:00Z', '2023-01-01T00:00:00Z'),
    (3, 2, 'device_3', '1.0.2', '2023-01-01T00:00:00Z', '2023-01-01T00:00:00Z')
ON CONFLICT DO NOTHING;

INSERT INTO device_api_keys (id, project_id, device_id, key_prefix, key_hash) VALUES
    (1, 1, 1, 'demo-d1', '\x1b9b74fd3da8a2f9cdd7938c6454e73d5ff650822e192935f9f5ec819ff0d996'),
    (2, 1, 2, 'demo-d2', '\x2ddf7453aeaea074566233bd4bb2a0d82c4047949d3803f9f614f38d7f73c22c'),
    (3, 2, 3, 'demo-d3', '\xbea331552895991ea98cfa51ac47dca16b4fb1c979909b0e8f86deaa0a8adb83')
ON CONFLICT DO NOTHING;

-- Which project each demo key belongs to (migration 0015).
INSERT INTO api_key_digests (key_hash, project_id)
SELECT key_hash, project_id FROM membership_api_keys WHERE id IN (1, 2, 3)
UNION ALL
SELECT key_hash, project_id FROM device_api_keys WHERE id IN (1, 2, 3)
ON CONFLICT DO NOTHING;

-- Device 3 reported 1.0.0 while it belonged to project 1, then moved to project 2.
INSERT INTO firmware_events (id, device_id, project_id, firmware, status, occurred_at, received_at) VALUES
    (1, 1, 1, '1.0.0', 'installed', '2023-01-01T00:00:00Z', '2023-01-01T00:00:00Z'),
    (2, 2, 1, '1.0.0', 'installed', '2023-01-01T00:00:00Z', '2023-01-01T00:00:00Z'),
    (3, 2, 1, '1.0.1', 'updated', '2023-01-01T00:00:00Z', '2023-01-01T00:00:00Z'),
    (4, 3, 1, '1.0.0', 'installed', '2023-01-01T00:00:00Z', '2023-01-01T00:00:00Z'),
    (5, 3, 2, '1.0.1', 'updated', '2023-01-01T00:00:00Z', '2023-01-01T00:00:00Z'),
    (6, 3, 2, '1.0.2', 'updated', '2023-01-01T00:00:00Z', '2023-01-01T00:00:00Z')
ON CONFLICT DO NOTHING;

-- The state ingest keeps beside the events (migrations/0004), as these events would have left it.
UPDATE devices
SET last_event_status = CASE id WHEN 1 THEN 'installed' ELSE 'updated' END,
    last_event_at = '2023-01-01T00:00:00Z'
WHERE id IN (1, 2, 3)
  AND last_event_at IS NULL;

INSERT INTO device_firmware_status (device_id, firmware, project_id, status, reported_at) VALUES
    (1, '1.0.0', 1, 'installed', '2023-01-01T00:00:00Z'),
    (2, '1.0.0', 1, 'installed', '2023-01-01T00:00:00Z'),
    (2, '1.0.1', 1, 'updated', '2023-01-01T00:00:00Z'),
    (3, '1.0.0', 1, 'installed', '2023-01-01T00:00:00Z'),
    (3, '1.0.1', 2, 'updated', '2023-01-01T00:00:00Z'),
    (3, '1.0.2', 2, 'updated', '2023-01-01T00:00:00Z')
ON CONFLICT DO NOTHING;

INSERT INTO firmware_version_counts (project_id, firmware, stripe, devices, failed, rolled_back) VALUES
    (1, '1.0.0', 0, 1, 0, 0),
    (1, '1.0.1', 0, 1, 0, 0),
    (2, '1.0.2', 0, 1, 0, 0)
ON CONFLICT DO NOTHING;

-- Ids were given explicitly: move each identity past them so the service's own rows never collide.
SELECT setval(pg_get_serial_sequence('projects', 'id'), GREATEST(max(id), 1)) FROM projects;
SELECT setval(pg_get_serial_sequence('project_memberships', 'id'), GREATEST(max(id), 1)) FROM project_memberships;
SELECT setval(pg_get_serial_sequence('membership_api_keys', 'id'), GREATEST(max(id), 1)) FROM membership_api_keys;
SELECT setval(pg_get_serial_sequence('devices', 'id'), GREATEST(max(id), 1)) FROM devices;
SELECT setval(pg_get_serial_sequence('device_api_keys', 'id'), GREATEST(max(id), 1)) FROM device_api_keys;
SELECT setval(pg_get_serial_sequence('firmware_events', 'id'), GREATEST(max(id), 1)) FROM firmware_events;
