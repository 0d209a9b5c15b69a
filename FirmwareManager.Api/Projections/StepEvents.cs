namespace FirmwareManager.Api.Projections;

/// <summary>
/// What a projection step's statements read: the step's events (a range of the project's feed) and, from them, each
/// device's changes, as subqueries each statement names. Shared here because several features' statements read the
/// same changes; one definition keeps them from drifting apart. The full text of every statement as it runs is in
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

    // Devices whose current firmware moves: to their newest installed/updated/rolled_back report by the device's
    // clock, so that a late, older report cannot move it backwards. Against a report whose time is not ahead, a
    // time ahead counts as its receive time, so it cannot pin the state; two reports both ahead of the newer one's
    // arrival are ordered by the device's clock (device_at). Reads the devices as they were before this
    // transaction's update below. A move to a lower SemVer precedence (build metadata aside) that is not a
    // rolled_back report is an unexplained downgrade (migration 0027).
    public const string FirmwareMoves = $$"""
        (SELECT d.id AS device_id,
                d.project_id,
                (d.id % 16)::smallint AS stripe,
                COALESCE(d.hardware, '') AS hardware,
                d.current_firmware AS from_firmware,
                newest.firmware AS to_firmware,
                newest.reported_at,
                newest.device_at,
                d.downgraded_from,
                (newest.status <> 'rolled_back'
                 AND d.current_firmware IS NOT NULL
                 AND split_part(newest.firmware, '+', 1) <> split_part(d.current_firmware, '+', 1)
                 AND firmware_precedence_key(newest.firmware) < firmware_precedence_key(d.current_firmware)) AS downgrade
         FROM (
             SELECT DISTINCT ON (device_id) device_id,
                    firmware,
                    status,
                    reported_at,
                    device_at,
                    occurred_at > received_at AS ahead,
                    received_at
             FROM {{StoredEvents}} AS stored
             WHERE status IN ('installed', 'updated', 'rolled_back')
             ORDER BY device_id, reported_at DESC, device_at DESC, id DESC
         ) AS newest
         JOIN devices AS d ON d.project_id = @ProjectId AND d.id = newest.device_id
         WHERE d.current_firmware_at IS NULL
            OR CASE
                   WHEN newest.ahead AND COALESCE(d.current_firmware_device_at, d.current_firmware_at) > newest.received_at
                   THEN COALESCE(d.current_firmware_device_at, d.current_firmware_at) <= newest.device_at
                   ELSE d.current_firmware_at <= newest.reported_at
               END)
        """;

    // Each device's newest status per version it reported on, where it is newer than the one kept, with the one kept
    // (device_firmware_status as it was before this step's upsert below).
    public const string VersionChanges = $$"""
        (SELECT n.device_id,
                n.project_id,
                (n.device_id % 16)::smallint AS stripe,
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
    // (device_transition_status before this step's upsert below; migration 0027). A report's target is its
    // firmware, except a rolled_back one's, which names the version gone back to: its target is its from_firmware,
    // else the version the device ran before the report. Its from: the report's from_firmware, else the version the
    // device ran before (when another), else the one kept (NULL when not known). "Ran before": the version of the
    // device's newest earlier report in this step that sets it (a batch uploaded after a time offline holds
    // the install its failure followed), else the device's current firmware as this step found it.
    public const string TransitionChanges = $$"""
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

    // Each device's own state, before and after this step: its current firmware (as moved above), its newest
    // event (status and time, by the device's clock) and its last report (server time: the latest received of the
    // step's, which need not be the newest by the device's clock).
    public const string DeviceStateChanges = $$"""
        (SELECT d.id AS device_id,
                d.project_id,
                COALESCE(d.hardware, '') AS hardware,
                move.device_id IS NOT NULL AS moved,
                move.to_firmware,
                move.reported_at AS moved_at,
                move.device_at AS moved_device_at,
                CASE WHEN move.device_id IS NULL OR move.from_firmware IS NOT DISTINCT FROM move.to_firmware THEN d.downgraded_from
                     WHEN move.downgrade THEN move.from_firmware
                END AS new_downgraded_from,
                d.current_firmware AS old_firmware,
                d.last_event_status AS old_status,
                d.last_reported_at AS old_reported_at,
                COALESCE(move.to_firmware, d.current_firmware) AS new_firmware,
                CASE WHEN d.last_event_at IS NULL OR d.last_event_at <= newest.reported_at
                     THEN newest.status ELSE d.last_event_status END AS new_status,
                GREATEST(d.last_event_at, newest.reported_at) AS new_event_at,
                GREATEST(d.last_reported_at, newest.received_at) AS new_reported_at
         FROM (
             SELECT DISTINCT ON (device_id) device_id,
                    status,
                    reported_at,
                    max(received_at) OVER (PARTITION BY device_id) AS received_at
             FROM {{StoredEvents}} AS stored
             ORDER BY device_id, reported_at DESC, id DESC
         ) AS newest
         JOIN devices AS d ON d.project_id = @ProjectId AND d.id = newest.device_id
         LEFT JOIN {{FirmwareMoves}} AS move ON move.device_id = newest.device_id)
        """;
}
