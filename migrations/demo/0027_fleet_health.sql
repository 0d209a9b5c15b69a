-- The demo data's fleet-health state (migration 0027): what its events (demo/0001), reported one at a time, would
-- have left. A demo script is numbered by the schema script it needs; like 0001, safe to apply again.

INSERT INTO device_transition_status (project_id, device_id, to_firmware, from_firmware, status, error_code, reported_at) VALUES
    (1, 1, '1.0.0', NULL, 'installed', NULL, '2023-01-01T00:00:00Z'),
    (1, 2, '1.0.0', NULL, 'installed', NULL, '2023-01-01T00:00:00Z'),
    (1, 2, '1.0.1', '1.0.0', 'updated', NULL, '2023-01-01T00:00:00Z'),
    (1, 3, '1.0.0', NULL, 'installed', NULL, '2023-01-01T00:00:00Z'),
    (2, 3, '1.0.1', NULL, 'updated', NULL, '2023-01-01T00:00:00Z'),
    (2, 3, '1.0.2', '1.0.1', 'updated', NULL, '2023-01-01T00:00:00Z')
ON CONFLICT DO NOTHING;

INSERT INTO firmware_transition_counts (project_id, to_firmware, from_firmware, attempted, succeeded, failed, rolled_back) VALUES
    (1, '1.0.0', '', 3, 3, 0, 0),
    (1, '1.0.1', '1.0.0', 1, 1, 0, 0),
    (2, '1.0.1', '', 1, 1, 0, 0),
    (2, '1.0.2', '1.0.1', 1, 1, 0, 0)
ON CONFLICT DO NOTHING;

-- Each device's newest event is installed or updated, by the version it runs and the hour it last reported.
INSERT INTO firmware_silence_counts (project_id, firmware, reported_hour, devices) VALUES
    (1, '1.0.0', '2023-01-01T00:00:00Z', 1),
    (1, '1.0.1', '2023-01-01T00:00:00Z', 1),
    (2, '1.0.2', '2023-01-01T00:00:00Z', 1)
ON CONFLICT DO NOTHING;

