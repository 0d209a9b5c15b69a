\set d random(1, :devices)
INSERT INTO bench_events (device_id, project_id, firmware, status, occurred_at)
SELECT :d, 1, '3.0.0', 'downloading', now() + random() * interval '1000 days' FROM generate_series(1, 100);
