\set d random(1, :devices)
INSERT INTO bench_events (device_id, project_id, firmware, status, occurred_at) VALUES (:d, 1, '2.0.0', 'updated', now() + random() * interval '1000 days');
