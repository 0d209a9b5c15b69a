-- Every statement of a projection step, in the order the step runs them, in full: as PostgreSQL receives it.
-- The step (FirmwareManager.Api/Projections/ProjectionSteps.cs) runs them in one transaction, after it has
-- claimed the project's position and locked the step's devices, and stores the new position after them.
-- Parameters: @ProjectId; @FirstArrival and @LastArrival, the range of the project's feed the step applies;
-- @EarliestOccurredAt and @LatestOccurredAt, its events' times (they bound the monthly partitions read);
-- @StepTime, the step's time.
-- Written by ProjectionStatementsDocTests (FIRMWAREMANAGER_WRITE_DOCS=1), which fails when this file and the
-- code differ: edit the code, not this file.

-- 1 StepDevices: Projections/StepChanges.cs; runs in every step
INSERT INTO projection_step_devices (device_id, project_id, last_arrival, hardware, current_firmware, downgraded_from, last_event_status, last_event_at,
                                     last_reported_at, status, reported_at, received_at, move_firmware, move_reported_at, move_device_at, moves, downgrade)
SELECT device.device_id,
       device.project_id,
       @LastArrival,
       device.hardware,
       device.current_firmware,
       device.downgraded_from,
       device.last_event_status,
       device.last_event_at,
       device.last_reported_at,
       device.status,
       device.reported_at,
       device.received_at,
       device.move_firmware,
       device.move_reported_at,
       device.move_device_at,
       device.moves,
       device.downgrade
FROM (SELECT d.id AS device_id,
             d.project_id,
             COALESCE(d.hardware, '') AS hardware,
             d.current_firmware,
             d.downgraded_from,
             d.last_event_status,
             d.last_event_at,
             d.last_reported_at,
             step.status,
             step.reported_at,
             step.received_at,
             step.move_firmware,
             step.move_reported_at,
             step.move_device_at,
             step.move_firmware IS NOT NULL
             AND (d.current_firmware_at IS NULL
                  OR CASE
                         WHEN step.move_ahead AND COALESCE(d.current_firmware_device_at, d.current_firmware_at) > step.move_received_at
                         THEN COALESCE(d.current_firmware_device_at, d.current_firmware_at) <= step.move_device_at
                         ELSE d.current_firmware_at <= step.move_reported_at
                     END) AS moves,
             (step.move_status <> 'rolled_back'
              AND d.current_firmware IS NOT NULL
              AND split_part(step.move_firmware, '+', 1) <> split_part(d.current_firmware, '+', 1)
              AND firmware_precedence_key(step.move_firmware) < firmware_precedence_key(d.current_firmware)) AS downgrade
      FROM (
          SELECT DISTINCT ON (device_id) device_id,
                 status,
                 reported_at,
                 max(received_at) OVER by_device AS received_at,
                 first_value(CASE WHEN status IN ('installed', 'updated', 'rolled_back') THEN firmware END) OVER moves_first AS move_firmware,
                 first_value(status) OVER moves_first AS move_status,
                 first_value(reported_at) OVER moves_first AS move_reported_at,
                 first_value(device_at) OVER moves_first AS move_device_at,
                 first_value(occurred_at > received_at) OVER moves_first AS move_ahead,
                 first_value(received_at) OVER moves_first AS move_received_at
          FROM (SELECT e.id,
                       e.device_id,
                       e.project_id,
                       e.firmware,
                       e.status,
                       e.occurred_at,
                       e.received_at,
                       e.from_firmware,
                       e.error_code,
                       LEAST(e.occurred_at, e.received_at) AS reported_at,
                       LEAST(e.occurred_at, e.received_at + interval '1 day') AS device_at
                FROM firmware_events AS e
                WHERE e.project_id = @ProjectId
                  AND e.arrival BETWEEN @FirstArrival AND @LastArrival
                  AND e.occurred_at BETWEEN @EarliestOccurredAt AND @LatestOccurredAt) AS stored
          WINDOW by_device AS (PARTITION BY device_id),
                 moves_first AS (PARTITION BY device_id
                                 ORDER BY status IN ('installed', 'updated', 'rolled_back') DESC, reported_at DESC, device_at DESC, id DESC)
          ORDER BY device_id, reported_at DESC, id DESC
      ) AS step
      JOIN devices AS d ON d.project_id = @ProjectId AND d.id = step.device_id) AS device;

-- 2 StepTransitions: Projections/StepChanges.cs; runs in every step
INSERT INTO projection_step_transitions (device_id, project_id, last_arrival, to_firmware, new_status, reported_at, new_from, new_error, old_status, old_from, old_error)
SELECT change.device_id,
       change.project_id,
       @LastArrival,
       change.to_firmware,
       change.new_status,
       change.reported_at,
       change.new_from,
       change.new_error,
       change.old_status,
       change.old_from,
       change.old_error
FROM (SELECT n.device_id,
             n.project_id,
             n.to_firmware,
             n.status AS new_status,
             n.reported_at,
             COALESCE(n.from_firmware, t.from_firmware) AS new_from,
             n.error_code AS new_error,
             t.status AS old_status,
             t.from_firmware AS old_from,
             t.error_code AS old_error
      FROM (
          SELECT DISTINCT ON (device_id, to_firmware) device_id,
                 project_id,
                 to_firmware,
                 from_firmware,
                 status,
                 error_code,
                 reported_at
          FROM (
              SELECT stored.id,
                     stored.device_id,
                     stored.project_id,
                     stored.status,
                     stored.error_code,
                     stored.reported_at,
                     CASE WHEN stored.status = 'rolled_back'
                          THEN COALESCE(stored.from_firmware, NULLIF(stored.ran_before, stored.firmware))
                          ELSE stored.firmware
                     END AS to_firmware,
                     CASE WHEN stored.status = 'rolled_back'
                          THEN stored.firmware
                          ELSE COALESCE(stored.from_firmware, NULLIF(stored.ran_before, stored.firmware))
                     END AS from_firmware
              FROM (
                  SELECT ordered.id,
                         ordered.device_id,
                         ordered.project_id,
                         ordered.firmware,
                         ordered.status,
                         ordered.error_code,
                         ordered.reported_at,
                         ordered.from_firmware,
                         COALESCE(ordered.earlier_moves[cardinality(ordered.earlier_moves)], ordered.current_firmware) AS ran_before
                  FROM (
                      SELECT stored.id,
                             stored.device_id,
                             stored.project_id,
                             stored.firmware,
                             stored.status,
                             stored.error_code,
                             stored.reported_at,
                             stored.from_firmware,
                             d.current_firmware,
                             array_agg(stored.firmware) FILTER (WHERE stored.status IN ('installed', 'updated', 'rolled_back'))
                                 OVER (PARTITION BY stored.device_id
                                       ORDER BY stored.reported_at, stored.id
                                       ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS earlier_moves
                      FROM (SELECT e.id,
                                   e.device_id,
                                   e.project_id,
                                   e.firmware,
                                   e.status,
                                   e.occurred_at,
                                   e.received_at,
                                   e.from_firmware,
                                   e.error_code,
                                   LEAST(e.occurred_at, e.received_at) AS reported_at,
                                   LEAST(e.occurred_at, e.received_at + interval '1 day') AS device_at
                            FROM firmware_events AS e
                            WHERE e.project_id = @ProjectId
                              AND e.arrival BETWEEN @FirstArrival AND @LastArrival
                              AND e.occurred_at BETWEEN @EarliestOccurredAt AND @LatestOccurredAt) AS stored
                      JOIN devices AS d ON d.project_id = @ProjectId AND d.id = stored.device_id
                  ) AS ordered
              ) AS stored
          ) AS targeted
          WHERE to_firmware IS NOT NULL
          ORDER BY device_id, to_firmware, reported_at DESC, id DESC
      ) AS n
      LEFT JOIN device_transition_status AS t
             ON t.project_id = @ProjectId AND t.device_id = n.device_id AND t.to_firmware = n.to_firmware
      WHERE t.reported_at IS NULL
         OR t.reported_at <= n.reported_at) AS change;

-- 10 VersionCounts: Versions/VersionsProjection.cs; runs in every step
INSERT INTO firmware_version_counts AS c (project_id, firmware, hardware, stripe, devices, failed, rolled_back, unexplained_downgrades)
SELECT delta.project_id,
       delta.firmware,
       delta.hardware,
       0,
       sum(delta.devices),
       sum(delta.failed),
       sum(delta.rolled_back),
       sum(delta.downgrades)
FROM (
    SELECT move.project_id, move.hardware, side.firmware, side.devices, 0 AS failed, 0 AS rolled_back, side.downgrades
    FROM (SELECT device.device_id,
                 device.project_id,
                 device.hardware,
                 device.current_firmware AS from_firmware,
                 device.move_firmware AS to_firmware,
                 device.move_reported_at AS reported_at,
                 device.move_device_at AS device_at,
                 device.downgraded_from,
                 device.downgrade
          FROM (SELECT c.device_id,
                       c.project_id,
                       c.hardware,
                       c.current_firmware,
                       c.downgraded_from,
                       c.last_event_status,
                       c.last_event_at,
                       c.last_reported_at,
                       c.status,
                       c.reported_at,
                       c.received_at,
                       c.move_firmware,
                       c.move_reported_at,
                       c.move_device_at,
                       c.moves,
                       c.downgrade
                FROM projection_step_devices AS c
                WHERE c.project_id = @ProjectId
                  AND c.last_arrival = @LastArrival) AS device
          WHERE device.moves) AS move
    CROSS JOIN LATERAL (VALUES (move.to_firmware, 1, move.downgrade::int),
                               (move.from_firmware, -1, -(move.downgraded_from IS NOT NULL)::int)) AS side(firmware, devices, downgrades)
    WHERE move.from_firmware IS DISTINCT FROM move.to_firmware
      AND side.firmware IS NOT NULL
    UNION ALL
    SELECT change.project_id, change.hardware, change.firmware, 0, side.sign * (side.status = 'failed')::int, side.sign * (side.status = 'rolled_back')::int, 0
    FROM (SELECT n.device_id,
                 n.project_id,
                 COALESCE(d.hardware, '') AS hardware,
                 n.firmware,
                 n.status AS new_status,
                 n.reported_at,
                 s.status AS old_status
          FROM (
              SELECT DISTINCT ON (device_id, firmware) device_id,
                     project_id,
                     firmware,
                     status,
                     reported_at
              FROM (SELECT e.id,
                           e.device_id,
                           e.project_id,
                           e.firmware,
                           e.status,
                           e.occurred_at,
                           e.received_at,
                           e.from_firmware,
                           e.error_code,
                           LEAST(e.occurred_at, e.received_at) AS reported_at,
                           LEAST(e.occurred_at, e.received_at + interval '1 day') AS device_at
                    FROM firmware_events AS e
                    WHERE e.project_id = @ProjectId
                      AND e.arrival BETWEEN @FirstArrival AND @LastArrival
                      AND e.occurred_at BETWEEN @EarliestOccurredAt AND @LatestOccurredAt) AS stored
              ORDER BY device_id, firmware, reported_at DESC, id DESC
          ) AS n
          JOIN devices AS d ON d.project_id = @ProjectId AND d.id = n.device_id
          LEFT JOIN device_firmware_status AS s
                 ON s.project_id = @ProjectId AND s.device_id = n.device_id AND s.firmware = n.firmware
          WHERE s.reported_at IS NULL
             OR s.reported_at <= n.reported_at) AS change
    CROSS JOIN LATERAL (VALUES (change.new_status, 1), (change.old_status, -1)) AS side(status, sign)
    WHERE side.status IS NOT NULL
) AS delta
GROUP BY delta.project_id, delta.firmware, delta.hardware
HAVING sum(delta.devices) <> 0 OR sum(delta.failed) <> 0 OR sum(delta.rolled_back) <> 0 OR sum(delta.downgrades) <> 0
ORDER BY delta.project_id, delta.firmware, delta.hardware
ON CONFLICT (project_id, firmware, hardware, stripe) DO UPDATE
SET devices = c.devices + EXCLUDED.devices,
    failed = c.failed + EXCLUDED.failed,
    rolled_back = c.rolled_back + EXCLUDED.rolled_back,
    unexplained_downgrades = c.unexplained_downgrades + EXCLUDED.unexplained_downgrades;

-- 20 VersionStatuses: Versions/VersionsProjection.cs; runs in every step
INSERT INTO device_firmware_status AS s (device_id, firmware, project_id, status, reported_at)
SELECT DISTINCT ON (stored.device_id, stored.firmware) stored.device_id,
       stored.firmware,
       stored.project_id,
       stored.status,
       stored.reported_at
FROM (SELECT e.id,
             e.device_id,
             e.project_id,
             e.firmware,
             e.status,
             e.occurred_at,
             e.received_at,
             e.from_firmware,
             e.error_code,
             LEAST(e.occurred_at, e.received_at) AS reported_at,
             LEAST(e.occurred_at, e.received_at + interval '1 day') AS device_at
      FROM firmware_events AS e
      WHERE e.project_id = @ProjectId
        AND e.arrival BETWEEN @FirstArrival AND @LastArrival
        AND e.occurred_at BETWEEN @EarliestOccurredAt AND @LatestOccurredAt) AS stored
ORDER BY stored.device_id, stored.firmware, stored.reported_at DESC, stored.id DESC
ON CONFLICT (project_id, device_id, firmware) DO UPDATE
SET status = EXCLUDED.status,
    reported_at = EXCLUDED.reported_at
WHERE s.reported_at <= EXCLUDED.reported_at;

-- 30 TransitionCounts: FleetHealth/TransitionsProjection.cs; runs in every step
INSERT INTO firmware_transition_counts AS c (project_id, to_firmware, from_firmware, attempted, succeeded, failed, rolled_back)
SELECT change.project_id,
       change.to_firmware,
       side.from_firmware,
       sum(side.sign),
       sum(side.sign * (side.status IN ('installed', 'updated'))::int),
       sum(side.sign * (side.status = 'failed')::int),
       sum(side.sign * (side.status = 'rolled_back')::int)
FROM (SELECT c.device_id,
             c.project_id,
             c.to_firmware,
             c.new_status,
             c.reported_at,
             c.new_from,
             c.new_error,
             c.old_status,
             c.old_from,
             c.old_error
      FROM projection_step_transitions AS c
      WHERE c.project_id = @ProjectId
        AND c.last_arrival = @LastArrival) AS change
CROSS JOIN LATERAL (VALUES (COALESCE(change.new_from, ''), change.new_status, 1),
                           (COALESCE(change.old_from, ''), change.old_status, -1)) AS side(from_firmware, status, sign)
WHERE side.status IS NOT NULL
GROUP BY change.project_id, change.to_firmware, side.from_firmware
HAVING sum(side.sign) <> 0
    OR sum(side.sign * (side.status IN ('installed', 'updated'))::int) <> 0
    OR sum(side.sign * (side.status = 'failed')::int) <> 0
    OR sum(side.sign * (side.status = 'rolled_back')::int) <> 0
ORDER BY change.project_id, change.to_firmware, side.from_firmware
ON CONFLICT (project_id, to_firmware, from_firmware) DO UPDATE
SET attempted = c.attempted + EXCLUDED.attempted,
    succeeded = c.succeeded + EXCLUDED.succeeded,
    failed = c.failed + EXCLUDED.failed,
    rolled_back = c.rolled_back + EXCLUDED.rolled_back;

-- 40 TransitionErrors: FleetHealth/TransitionsProjection.cs; runs in every step
INSERT INTO firmware_transition_errors AS c (project_id, to_firmware, from_firmware, error_code, devices)
SELECT change.project_id,
       change.to_firmware,
       side.from_firmware,
       side.error_code,
       sum(side.sign)
FROM (SELECT c.device_id,
             c.project_id,
             c.to_firmware,
             c.new_status,
             c.reported_at,
             c.new_from,
             c.new_error,
             c.old_status,
             c.old_from,
             c.old_error
      FROM projection_step_transitions AS c
      WHERE c.project_id = @ProjectId
        AND c.last_arrival = @LastArrival) AS change
CROSS JOIN LATERAL (VALUES (COALESCE(change.new_from, ''), change.new_status, change.new_error, 1),
                           (COALESCE(change.old_from, ''), change.old_status, change.old_error, -1)) AS side(from_firmware, status, error_code, sign)
WHERE side.status IN ('failed', 'rolled_back')
  AND side.error_code IS NOT NULL
GROUP BY change.project_id, change.to_firmware, side.from_firmware, side.error_code
HAVING sum(side.sign) <> 0
ORDER BY change.project_id, change.to_firmware, side.from_firmware, side.error_code
ON CONFLICT (project_id, to_firmware, from_firmware, error_code) DO UPDATE
SET devices = c.devices + EXCLUDED.devices;

-- 50 RolloutCounts: Rollouts/RolloutsProjection.cs; runs in steps of projects with Rollouts
UPDATE rollouts AS r
SET attempted = r.attempted + delta.attempted,
    updated = r.updated + delta.updated,
    failed = r.failed + delta.failed,
    rolled_back = r.rolled_back + delta.rolled_back,
    halted_at = CASE
                    WHEN r.halted_at IS NULL
                     AND r.attempted + delta.attempted >= r.min_devices
                     AND r.failed + delta.failed + r.rolled_back + delta.rolled_back > r.max_failure_rate * (r.attempted + delta.attempted)
                    THEN @StepTime
                    ELSE r.halted_at
                END
FROM (
    SELECT change.rollout_id,
           sum(side.sign) AS attempted,
           sum(side.sign * (side.status IN ('installed', 'updated'))::int) AS updated,
           sum(side.sign * (side.status = 'failed')::int) AS failed,
           sum(side.sign * (side.status = 'rolled_back')::int) AS rolled_back
    FROM (SELECT r.id AS rollout_id,
                 change.device_id,
                 change.project_id,
                 change.new_status,
                 change.reported_at,
                 rd.status AS old_status
          FROM (SELECT c.device_id,
                       c.project_id,
                       c.to_firmware,
                       c.new_status,
                       c.reported_at,
                       c.new_from,
                       c.new_error,
                       c.old_status,
                       c.old_from,
                       c.old_error
                FROM projection_step_transitions AS c
                WHERE c.project_id = @ProjectId
                  AND c.last_arrival = @LastArrival) AS change
          JOIN devices AS d ON d.project_id = @ProjectId AND d.id = change.device_id
          JOIN rollouts AS r ON r.project_id = @ProjectId AND r.firmware = change.to_firmware
          LEFT JOIN rollout_devices AS rd
                 ON rd.project_id = @ProjectId AND rd.rollout_id = r.id AND rd.device_id = change.device_id
          WHERE r.ended_at IS NULL
            AND change.reported_at >= r.created_at
            AND (r.hardware IS NULL OR r.hardware = d.hardware)
            AND d.tags @> r.tags
            AND (r.from_firmware IS NULL OR r.from_firmware = change.new_from)
            AND (rd.reported_at IS NULL OR rd.reported_at <= change.reported_at)) AS change
    CROSS JOIN LATERAL (VALUES (change.new_status, 1), (change.old_status, -1)) AS side(status, sign)
    WHERE side.status IS NOT NULL
    GROUP BY change.rollout_id
) AS delta
WHERE r.project_id = @ProjectId
  AND r.id = delta.rollout_id;

-- 60 RolloutDevices: Rollouts/RolloutsProjection.cs; runs in steps of projects with Rollouts
INSERT INTO rollout_devices AS rd (project_id, rollout_id, device_id, status, reported_at)
SELECT change.project_id,
       change.rollout_id,
       change.device_id,
       change.new_status,
       change.reported_at
FROM (SELECT r.id AS rollout_id,
             change.device_id,
             change.project_id,
             change.new_status,
             change.reported_at,
             rd.status AS old_status
      FROM (SELECT c.device_id,
                   c.project_id,
                   c.to_firmware,
                   c.new_status,
                   c.reported_at,
                   c.new_from,
                   c.new_error,
                   c.old_status,
                   c.old_from,
                   c.old_error
            FROM projection_step_transitions AS c
            WHERE c.project_id = @ProjectId
              AND c.last_arrival = @LastArrival) AS change
      JOIN devices AS d ON d.project_id = @ProjectId AND d.id = change.device_id
      JOIN rollouts AS r ON r.project_id = @ProjectId AND r.firmware = change.to_firmware
      LEFT JOIN rollout_devices AS rd
             ON rd.project_id = @ProjectId AND rd.rollout_id = r.id AND rd.device_id = change.device_id
      WHERE r.ended_at IS NULL
        AND change.reported_at >= r.created_at
        AND (r.hardware IS NULL OR r.hardware = d.hardware)
        AND d.tags @> r.tags
        AND (r.from_firmware IS NULL OR r.from_firmware = change.new_from)
        AND (rd.reported_at IS NULL OR rd.reported_at <= change.reported_at)) AS change
ON CONFLICT (project_id, rollout_id, device_id) DO UPDATE
SET status = EXCLUDED.status,
    reported_at = EXCLUDED.reported_at;

-- 70 RolloutHalts: Rollouts/RolloutsProjection.cs; runs in steps of projects with RolloutsAndWebhooks
INSERT INTO webhook_deliveries (project_id, webhook_id, event_id, device_id, event_type, created_at, next_attempt_at)
SELECT r.project_id,
       w.id,
       -r.id,
       0,
       'rollout.halted',
       @StepTime,
       @StepTime
FROM rollouts AS r
JOIN webhooks AS w ON w.project_id = r.project_id
WHERE r.project_id = @ProjectId
  AND w.project_id = @ProjectId
  AND r.halted_at = @StepTime
  AND w.deleted_at IS NULL
  AND 'rollout.halted' = ANY(w.event_types)
ON CONFLICT DO NOTHING;

-- 80 TransitionStatuses: FleetHealth/TransitionsProjection.cs; runs in every step
INSERT INTO device_transition_status AS t (project_id, device_id, to_firmware, from_firmware, status, error_code, reported_at)
SELECT change.project_id,
       change.device_id,
       change.to_firmware,
       change.new_from,
       change.new_status,
       change.new_error,
       change.reported_at
FROM (SELECT c.device_id,
             c.project_id,
             c.to_firmware,
             c.new_status,
             c.reported_at,
             c.new_from,
             c.new_error,
             c.old_status,
             c.old_from,
             c.old_error
      FROM projection_step_transitions AS c
      WHERE c.project_id = @ProjectId
        AND c.last_arrival = @LastArrival) AS change
ON CONFLICT (project_id, device_id, to_firmware) DO UPDATE
SET from_firmware = EXCLUDED.from_firmware,
    status = EXCLUDED.status,
    error_code = EXCLUDED.error_code,
    reported_at = EXCLUDED.reported_at;

-- 90 SilenceCounts: FleetHealth/TransitionsProjection.cs; runs in every step
INSERT INTO firmware_silence_counts AS c (project_id, firmware, hardware, reported_hour, devices)
SELECT change.project_id,
       side.firmware,
       change.hardware,
       date_trunc('hour', side.reported_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       sum(side.sign)
FROM (SELECT device.device_id,
             device.project_id,
             device.hardware,
             device.moves AS moved,
             device.move_reported_at AS moved_at,
             device.move_device_at AS moved_device_at,
             CASE WHEN NOT device.moves OR device.current_firmware IS NOT DISTINCT FROM device.move_firmware THEN device.downgraded_from
                  WHEN device.downgrade THEN device.current_firmware
             END AS new_downgraded_from,
             device.current_firmware AS old_firmware,
             device.last_event_status AS old_status,
             device.last_reported_at AS old_reported_at,
             CASE WHEN device.moves THEN device.move_firmware ELSE device.current_firmware END AS new_firmware,
             CASE WHEN device.last_event_at IS NULL OR device.last_event_at <= device.reported_at
                  THEN device.status ELSE device.last_event_status END AS new_status,
             GREATEST(device.last_event_at, device.reported_at) AS new_event_at,
             GREATEST(device.last_reported_at, device.received_at) AS new_reported_at
      FROM (SELECT c.device_id,
                   c.project_id,
                   c.hardware,
                   c.current_firmware,
                   c.downgraded_from,
                   c.last_event_status,
                   c.last_event_at,
                   c.last_reported_at,
                   c.status,
                   c.reported_at,
                   c.received_at,
                   c.move_firmware,
                   c.move_reported_at,
                   c.move_device_at,
                   c.moves,
                   c.downgrade
            FROM projection_step_devices AS c
            WHERE c.project_id = @ProjectId
              AND c.last_arrival = @LastArrival) AS device) AS change
CROSS JOIN LATERAL (VALUES (change.new_firmware, change.new_status, change.new_reported_at, 1),
                           (change.old_firmware, change.old_status, change.old_reported_at, -1)) AS side(firmware, status, reported_at, sign)
WHERE side.status IN ('installed', 'updated')
  AND side.firmware IS NOT NULL
  AND side.reported_at IS NOT NULL
GROUP BY change.project_id, side.firmware, change.hardware, date_trunc('hour', side.reported_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
HAVING sum(side.sign) <> 0
ORDER BY 1, 2, 3, 4
ON CONFLICT (project_id, firmware, hardware, reported_hour) DO UPDATE
SET devices = c.devices + EXCLUDED.devices;

-- 100 DeviceState: Devices/DeviceStateProjection.cs; runs in every step
UPDATE devices AS d
SET current_firmware = change.new_firmware,
    current_firmware_at = CASE WHEN change.moved THEN change.moved_at ELSE d.current_firmware_at END,
    current_firmware_device_at = CASE WHEN change.moved THEN change.moved_device_at ELSE d.current_firmware_device_at END,
    downgraded_from = change.new_downgraded_from,
    last_reported_at = change.new_reported_at,
    last_event_status = change.new_status,
    last_event_at = change.new_event_at
FROM (SELECT device.device_id,
             device.project_id,
             device.hardware,
             device.moves AS moved,
             device.move_reported_at AS moved_at,
             device.move_device_at AS moved_device_at,
             CASE WHEN NOT device.moves OR device.current_firmware IS NOT DISTINCT FROM device.move_firmware THEN device.downgraded_from
                  WHEN device.downgrade THEN device.current_firmware
             END AS new_downgraded_from,
             device.current_firmware AS old_firmware,
             device.last_event_status AS old_status,
             device.last_reported_at AS old_reported_at,
             CASE WHEN device.moves THEN device.move_firmware ELSE device.current_firmware END AS new_firmware,
             CASE WHEN device.last_event_at IS NULL OR device.last_event_at <= device.reported_at
                  THEN device.status ELSE device.last_event_status END AS new_status,
             GREATEST(device.last_event_at, device.reported_at) AS new_event_at,
             GREATEST(device.last_reported_at, device.received_at) AS new_reported_at
      FROM (SELECT c.device_id,
                   c.project_id,
                   c.hardware,
                   c.current_firmware,
                   c.downgraded_from,
                   c.last_event_status,
                   c.last_event_at,
                   c.last_reported_at,
                   c.status,
                   c.reported_at,
                   c.received_at,
                   c.move_firmware,
                   c.move_reported_at,
                   c.move_device_at,
                   c.moves,
                   c.downgrade
            FROM projection_step_devices AS c
            WHERE c.project_id = @ProjectId
              AND c.last_arrival = @LastArrival) AS device) AS change
WHERE d.project_id = @ProjectId
  AND d.id = change.device_id;

-- 110 EventDeliveries: Webhooks/DeliveriesProjection.cs; runs in steps of projects with Webhooks
INSERT INTO webhook_deliveries (project_id, webhook_id, event_id, device_id, event_type, created_at, next_attempt_at)
SELECT stored.project_id,
       w.id,
       stored.id,
       stored.device_id,
       'event.' || stored.status,
       @StepTime,
       stored.received_at
FROM (SELECT e.id,
             e.device_id,
             e.project_id,
             e.firmware,
             e.status,
             e.occurred_at,
             e.received_at,
             e.from_firmware,
             e.error_code,
             LEAST(e.occurred_at, e.received_at) AS reported_at,
             LEAST(e.occurred_at, e.received_at + interval '1 day') AS device_at
      FROM firmware_events AS e
      WHERE e.project_id = @ProjectId
        AND e.arrival BETWEEN @FirstArrival AND @LastArrival
        AND e.occurred_at BETWEEN @EarliestOccurredAt AND @LatestOccurredAt) AS stored
JOIN webhooks AS w ON w.project_id = stored.project_id
WHERE w.project_id = @ProjectId
  AND w.deleted_at IS NULL
  AND ('event.' || stored.status) = ANY(w.event_types)
  AND (w.firmware IS NULL OR w.firmware = stored.firmware)
ORDER BY stored.id, w.id
ON CONFLICT DO NOTHING;

-- 120 StepChangesCleared: Projections/StepChanges.cs; runs in every step
DELETE FROM projection_step_devices
WHERE project_id = @ProjectId
  AND last_arrival = @LastArrival;

-- 120 StepChangesCleared: Projections/StepChanges.cs; runs in every step
DELETE FROM projection_step_transitions
WHERE project_id = @ProjectId
  AND last_arrival = @LastArrival;
