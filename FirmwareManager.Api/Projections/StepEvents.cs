namespace FirmwareManager.Api.Projections;

/// <summary>
/// What a projection step's statements read: the step's events (a range of the project's feed) and, from them, each
/// device's changes, as subqueries each statement names. Shared here because several features' statements read the
/// same changes; one definition keeps them from drifting apart. The changes that several statements read are derived
/// once per step, by its first statements (<see cref="StepChanges"/>), into tables the others read. The full text of every statement as it runs is in
/// docs/projection-statements.sql (ProjectionStatementsDocTests keeps it true), for a DBA to read without expanding
/// these in their head.
/// </summary>
public static class StepEvents
{
    // The step's events: those numbered in its range of the project's feed. Each statement
    // below reads them (through firmware_events_project_feed_idx) as a subquery, not a CTE: Citus sends a
    // statement with a CTE that writes, or an INSERT with any CTE, to the workers in steps, and a statement whose
    // every table is filtered by one project to that project's node in one (docs/scale-out.md). The project id each
    // INSERT ... SELECT stores comes from a table's project_id column, not the parameter: so Citus sees that its
    // rows stay on the shard they were read from, and runs it there.
    // The events' own times (those reported without one have their receive time) bound occurred_at: constants when the
    // statement is planned, so that the planner considers only the monthly partitions (migration 0023) that can
    // hold them (with now() in the bound it would plan every partition, and prune only when running).
    // The time a report counts by (reported_at): a time ahead of the receive time is a clock running ahead, and
    // counts as its receive time; device_at orders two reports both ahead by the device's clock, at most a day.
    public const string StoredEvents = """
        (SELECT e.id,
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
           AND e.occurred_at BETWEEN @EarliestOccurredAt AND @LatestOccurredAt)
        """;

    // Each device of the step, once, as the step's first statement writes it into projection_step_devices (StepChanges,
    // migration 0042): the device as the step found it (before this transaction's update below); its
    // newest event in the step (status and time, by the device's clock) and the latest receive time of the step's;
    // and its newest installed/updated/rolled_back report by the device's clock (move_*), with whether it moves the
    // current firmware: only when newer than the report that set it, so that a late, older report cannot move it
    // backwards. Against a report whose time is not ahead, a time ahead counts as its receive time, so it cannot pin
    // the state; two reports both ahead of the newer one's arrival are ordered by the device's clock (device_at). A
    // move to a lower SemVer precedence (build metadata aside) that is not a rolled_back report is an unexplained
    // downgrade (migration 0027).
    // One pass over the step's events, sorted by device, and one devices lookup per device: two subqueries of the
    // step joined to each other could be planned as a nested loop that runs one again for each row of the other,
    // quadratic in the step's size (17 s for 2,000 events on 1,000,000 devices; docs/performance.md).
    public const string StepDevicesFromEvents = $$"""
        (SELECT d.id AS device_id,
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
             FROM {{StoredEvents}} AS stored
             WINDOW by_device AS (PARTITION BY device_id),
                    moves_first AS (PARTITION BY device_id
                                    ORDER BY status IN ('installed', 'updated', 'rolled_back') DESC, reported_at DESC, device_at DESC, id DESC)
             ORDER BY device_id, reported_at DESC, id DESC
         ) AS step
         JOIN devices AS d ON d.project_id = @ProjectId AND d.id = step.device_id)
        """;

    // The step's devices (above) as the step's first statement wrote them.
    public const string StepDevices = """
        (SELECT c.device_id,
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
           AND c.last_arrival = @LastArrival)
        """;

    // Devices whose current firmware moves (above), from and to which version.
    public const string FirmwareMoves = $$"""
        (SELECT device.device_id,
                device.project_id,
                device.hardware,
                device.current_firmware AS from_firmware,
                device.move_firmware AS to_firmware,
                device.move_reported_at AS reported_at,
                device.move_device_at AS device_at,
                device.downgraded_from,
                device.downgrade
         FROM {{StepDevices}} AS device
         WHERE device.moves)
        """;

    // Each device's newest status per version it reported on, where it is newer than the one kept, with the one kept
    // (device_firmware_status as it was before this step's upsert below).
    public const string VersionChanges = $$"""
        (SELECT n.device_id,
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
             FROM {{StoredEvents}} AS stored
             ORDER BY device_id, firmware, reported_at DESC, id DESC
         ) AS n
         JOIN devices AS d ON d.project_id = @ProjectId AND d.id = n.device_id
         LEFT JOIN device_firmware_status AS s
                ON s.project_id = @ProjectId AND s.device_id = n.device_id AND s.firmware = n.firmware
         WHERE s.reported_at IS NULL
            OR s.reported_at <= n.reported_at)
        """;

    // Each device's newest report per update target, where it is newer than the one kept, with the one kept
    // (device_transition_status before this step's upsert below; migration 0027), as the step's first statements
    // write it into projection_step_transitions (StepChanges, migration 0042). A report's target is its
    // firmware, except a rolled_back one's, which names the version gone back to: its target is its from_firmware,
    // else the version the device ran before the report. Its from: the report's from_firmware, else the version the
    // device ran before (when another), else the one kept (NULL when not known). "Ran before": the version of the
    // device's newest earlier report in this step that sets it (a batch uploaded after a time offline holds
    // the install its failure followed), else the device's current firmware as this step found it.
    public const string TransitionChangesFromEvents = $$"""
        (SELECT n.device_id,
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
                         FROM {{StoredEvents}} AS stored
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
            OR t.reported_at <= n.reported_at)
        """;

    // The step's changes per update target (above) as the step's first statements wrote them.
    public const string TransitionChanges = """
        (SELECT c.device_id,
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
           AND c.last_arrival = @LastArrival)
        """;

    // Each device's own state, before and after this step: its current firmware (moved as above), its newest
    // event (status and time, by the device's clock) and its last report (server time: the latest received of the
    // step's, which need not be the newest by the device's clock).
    public const string DeviceStateChanges = $$"""
        (SELECT device.device_id,
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
         FROM {{StepDevices}} AS device)
        """;
}
