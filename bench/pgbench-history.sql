\set d random(1, :devices)
\set p case when :d <= :big then 1 else 2 + mod(:d, 9) end
SELECT e.id, e.device_id, e.project_id, e.firmware, e.status, e.occurred_at, e.received_at
FROM firmware_events AS e
WHERE e.device_id = :d AND e.project_id = :p
  AND e.occurred_at >= '-infinity' AND e.occurred_at < 'infinity'
  AND (e.occurred_at, e.firmware, e.status) < ('infinity', '', '')
ORDER BY e.occurred_at DESC, e.firmware DESC, e.status DESC
LIMIT 101;
