using System.Globalization;
using Dapper;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Http;
using Npgsql;
using NpgsqlTypes;

namespace FirmwareManager.Api.Firmware;

/// <summary>A stored event; <see cref="Arrival"/> is its position in its project's feed (numbered in commit order).</summary>
public sealed record FirmwareEvent(
    long Id, long DeviceId, long ProjectId, string Firmware, string Status, DateTime OccurredAt, DateTime ReceivedAt,
    string? FromFirmware, string? ErrorCode, string? Detail, long Arrival);

public sealed record RecordedEvent(FirmwareEvent Event, bool Created);

/// <summary>A device's validated reports (a single report, or a batch), its project, and the id of the key it sent them with.</summary>
public sealed record DeviceReports(long ProjectId, long DeviceId, IReadOnlyList<NewFirmwareEvent> Events, long KeyId);

/// <summary>What became of a device's reports in a group: stored (the events created), or why not.</summary>
public enum ReportOutcome
{
    Recorded,

    /// <summary>There is no such device.</summary>
    NoDevice,

    /// <summary>The key was revoked or the device decommissioned after the key was cached: nothing stored.</summary>
    KeyRevoked,
}

/// <summary>The firmware_events table and the device state that follows it.</summary>
public sealed class FirmwareEvents(NpgsqlDataSource dataSource, ReadRouting reads, DatabaseEngine engine)
{
    // Taken first, in a statement of its own: the events of one device are recorded one transaction at a
    // time, and the statement that records them then reads the device's state as the previous one left it.
    // Devices are locked in id order, so that transactions recording several devices never deadlock (a change of
    // devices' attributes takes the same locks the same way: DeviceAttributes).
    internal const string LockDevicesSql = """
        SELECT id
        FROM devices
        WHERE project_id = @ProjectId
          AND id = ANY(@DeviceIds)
        ORDER BY id
        FOR UPDATE
        """;

    // Then, with the devices held, what the key cache only approximates: each device's key is still valid and the
    // device not decommissioned. A decommission or a key revocation takes the device's row lock too, so one that
    // committed while this waited is seen here (a statement after the lock reads after it), and one that comes
    // later waits for this commit. The recording statement below applies the same condition.
    private const string ActiveDevicesSql = """
        SELECT k.device_id
        FROM device_api_keys AS k
        JOIN devices AS d ON d.project_id = k.project_id AND d.id = k.device_id
        WHERE k.project_id = @ProjectId
          AND d.project_id = @ProjectId
          AND k.id = ANY(@KeyIds)
          AND k.device_id = ANY(@DeviceIds)
          AND k.revoked_at IS NULL
          AND d.decommissioned_at IS NULL
        """;

    // Then the project's feed numbers: its row in project_event_arrivals (migration 0012), made when missing, and
    // locked until this transaction commits, so that the project's numbers follow commit order. The next numbers
    // are last_arrival + 1 onwards; the second round trip stores the new last one.
    // The transaction's time: the receive time of every event it stores, and so the time of those reported without
    // one, which the second round trip stores as given (on Citus, a function in a statement may be evaluated on
    // the coordinator or on a worker, whose transaction began later: a value given is the same everywhere).
    private const string LockArrivalsSql = """
        INSERT INTO project_event_arrivals AS a (project_id, last_arrival)
        VALUES (@ProjectId, 0)
        ON CONFLICT (project_id) DO UPDATE
        SET last_arrival = a.last_arrival
        RETURNING a.last_arrival
        """;

    private const string StoreLastArrivalSql = """
        UPDATE project_event_arrivals
        SET last_arrival = @LastArrival
        WHERE project_id = @ProjectId
        """;

    // The events, numbered in the order given, as rows of one INSERT: Citus sends it to the project's shard as one
    // task (an INSERT ... SELECT would go through the coordinator, with a two-phase commit, because the ids come
    // from a sequence). Identical repeats (same device, project, time, firmware, status) insert nothing (ON
    // CONFLICT) and leave their number unused. Events without a timestamp get the transaction's time
    // (TransactionTimeSql), which is their receive time.
    private const string InsertEventsColumns =
        "INSERT INTO firmware_events (device_id, project_id, firmware, status, occurred_at, arrival, from_firmware, error_code, detail)\nVALUES ";
    private const string InsertEventsReturning = """

        ON CONFLICT (device_id, project_id, occurred_at, firmware, status) DO NOTHING
        RETURNING id, device_id, project_id, firmware, status, occurred_at, received_at, from_firmware, error_code, detail, arrival
        """;

    // A transaction's events go in statements of these many rows (the largest that fit first): a few statement
    // shapes, each prepared once, for any number of events.
    private static readonly int[] InsertSizes = [256, 64, 16, 4, 1];

    private const int InsertedColumns = 9;

    private static readonly string[] InsertEventsSql = InsertSizes.Select(rows =>
        InsertEventsColumns + string.Join(",\n       ", Enumerable.Range(0, rows).Select(row => "(" + string.Join(", ",
            Enumerable.Range(1, InsertedColumns).Select(column => string.Create(CultureInfo.InvariantCulture, $"${(row * InsertedColumns) + column}"))) + ")"))
        + InsertEventsReturning).ToArray();

    // The derived state follows from the events this transaction stored: those numbered in its range. Each statement
    // below reads them (through firmware_events_project_feed_idx) as a subquery, not a CTE: Citus sends a
    // statement with a CTE that writes, or an INSERT with any CTE, to the workers in steps, and a statement whose
    // every table is filtered by one project to that project's node in one (docs/scale-out.md). The project id each
    // INSERT ... SELECT stores comes from a table's project_id column, not the parameter: so Citus sees that its
    // rows stay on the shard they were read from, and runs it there.
    // The events' own times (and the transaction's, for those without one) bound occurred_at: constants when the
    // statement is planned, so that the planner considers only the monthly partitions (migration 0023) that can
    // hold them (with now() in the bound it would plan every partition, and prune only when running).
    // The time a report counts by (reported_at): a time ahead of the receive time is a clock running ahead, and
    // counts as its receive time; device_at orders two reports both ahead by the device's clock, at most a day.
    private const string StoredEvents = """
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
    private const string FirmwareMoves = $$"""
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
             WHERE status = ANY(@SetsCurrentFirmware)
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
    // (device_firmware_status as it was before this transaction's upsert below).
    private const string VersionChanges = $$"""
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
    // (device_transition_status before this transaction's upsert below; migration 0027). A report's target is its
    // firmware, except a rolled_back one's, which names the version gone back to: its target is its from_firmware,
    // else the version the device ran before the report. Its from: the report's from_firmware, else the version the
    // device ran before (when another), else the one kept (NULL when not known). "Ran before": the version of the
    // device's newest earlier report in this transaction that sets it (a batch uploaded after a time offline holds
    // the install its failure followed), else the device's current firmware as this transaction found it.
    private const string TransitionChanges = $$"""
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
                                array_agg(stored.firmware) FILTER (WHERE stored.status = ANY(@SetsCurrentFirmware))
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

    // The per-project version counts (devices running each version; devices whose newest event for a version is
    // failed or rolled_back; devices running it after an unexplained downgrade), by hardware (migration 0031: '' for
    // none), as deltas into each device's stripe, upserted in key order so that concurrent
    // transactions take those rows' locks in the same order. First of the three: it reads the state the other two
    // change.
    private const string CountVersionsSql = $$"""
        INSERT INTO firmware_version_counts AS c (project_id, firmware, hardware, stripe, devices, failed, rolled_back, unexplained_downgrades)
        SELECT delta.project_id,
               delta.firmware,
               delta.hardware,
               delta.stripe,
               sum(delta.devices),
               sum(delta.failed),
               sum(delta.rolled_back),
               sum(delta.downgrades)
        FROM (
            SELECT move.project_id, move.hardware, move.stripe, side.firmware, side.devices, 0 AS failed, 0 AS rolled_back, side.downgrades
            FROM {{FirmwareMoves}} AS move
            CROSS JOIN LATERAL (VALUES (move.to_firmware, 1, move.downgrade::int),
                                       (move.from_firmware, -1, -(move.downgraded_from IS NOT NULL)::int)) AS side(firmware, devices, downgrades)
            WHERE move.from_firmware IS DISTINCT FROM move.to_firmware
              AND side.firmware IS NOT NULL
            UNION ALL
            SELECT change.project_id, change.hardware, change.stripe, change.firmware, 0, side.sign * (side.status = 'failed')::int, side.sign * (side.status = 'rolled_back')::int, 0
            FROM {{VersionChanges}} AS change
            CROSS JOIN LATERAL (VALUES (change.new_status, 1), (change.old_status, -1)) AS side(status, sign)
            WHERE side.status IS NOT NULL
        ) AS delta
        GROUP BY delta.project_id, delta.firmware, delta.hardware, delta.stripe
        HAVING sum(delta.devices) <> 0 OR sum(delta.failed) <> 0 OR sum(delta.rolled_back) <> 0 OR sum(delta.downgrades) <> 0
        ORDER BY delta.project_id, delta.firmware, delta.hardware, delta.stripe
        ON CONFLICT (project_id, firmware, hardware, stripe) DO UPDATE
        SET devices = c.devices + EXCLUDED.devices,
            failed = c.failed + EXCLUDED.failed,
            rolled_back = c.rolled_back + EXCLUDED.rolled_back,
            unexplained_downgrades = c.unexplained_downgrades + EXCLUDED.unexplained_downgrades
        """;

    // Per (from, to) pair: the devices whose state for the target moved, out of their old pair and state into the
    // new (from '' when not known). A project's
    // transactions run one at a time (its project_event_arrivals row), so these rows need no stripes.
    private const string CountTransitionsSql = $$"""
        INSERT INTO firmware_transition_counts AS c (project_id, to_firmware, from_firmware, attempted, succeeded, failed, rolled_back)
        SELECT change.project_id,
               change.to_firmware,
               side.from_firmware,
               sum(side.sign),
               sum(side.sign * (side.status IN ('installed', 'updated'))::int),
               sum(side.sign * (side.status = 'failed')::int),
               sum(side.sign * (side.status = 'rolled_back')::int)
        FROM {{TransitionChanges}} AS change
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
            rolled_back = c.rolled_back + EXCLUDED.rolled_back
        """;

    // The same devices, while failed or rolled back with an error code, by that code.
    private const string CountTransitionErrorsSql = $$"""
        INSERT INTO firmware_transition_errors AS c (project_id, to_firmware, from_firmware, error_code, devices)
        SELECT change.project_id,
               change.to_firmware,
               side.from_firmware,
               side.error_code,
               sum(side.sign)
        FROM {{TransitionChanges}} AS change
        CROSS JOIN LATERAL (VALUES (COALESCE(change.new_from, ''), change.new_status, change.new_error, 1),
                                   (COALESCE(change.old_from, ''), change.old_status, change.old_error, -1)) AS side(from_firmware, status, error_code, sign)
        WHERE side.status IN ('failed', 'rolled_back')
          AND side.error_code IS NOT NULL
        GROUP BY change.project_id, change.to_firmware, side.from_firmware, side.error_code
        HAVING sum(side.sign) <> 0
        ORDER BY change.project_id, change.to_firmware, side.from_firmware, side.error_code
        ON CONFLICT (project_id, to_firmware, from_firmware, error_code) DO UPDATE
        SET devices = c.devices + EXCLUDED.devices
        """;

    private const string KeepVersionStatusSql = $$"""
        INSERT INTO device_firmware_status AS s (device_id, firmware, project_id, status, reported_at)
        SELECT change.device_id,
               change.firmware,
               change.project_id,
               change.new_status,
               change.reported_at
        FROM {{VersionChanges}} AS change
        ON CONFLICT (project_id, device_id, firmware) DO UPDATE
        SET status = EXCLUDED.status,
            reported_at = EXCLUDED.reported_at
        """;

    // Each device's newest report on an open rollout's version (its update target) since the rollout was declared,
    // when the device is in the rollout's audience (its hardware and tags as they are now; the version it came from),
    // with the one kept in rollout_devices (migration 0034). From TransitionChanges, before its upsert.
    private const string RolloutChanges = $$"""
        (SELECT r.id AS rollout_id,
                change.device_id,
                change.project_id,
                change.new_status,
                change.reported_at,
                rd.status AS old_status
         FROM {{TransitionChanges}} AS change
         JOIN devices AS d ON d.project_id = @ProjectId AND d.id = change.device_id
         JOIN rollouts AS r ON r.project_id = @ProjectId AND r.firmware = change.to_firmware
         LEFT JOIN rollout_devices AS rd
                ON rd.project_id = @ProjectId AND rd.rollout_id = r.id AND rd.device_id = change.device_id
         WHERE r.ended_at IS NULL
           AND change.reported_at >= r.created_at
           AND (r.hardware IS NULL OR r.hardware = d.hardware)
           AND d.tags @> r.tags
           AND (r.from_firmware IS NULL OR r.from_firmware = change.new_from)
           AND (rd.reported_at IS NULL OR rd.reported_at <= change.reported_at))
        """;

    // The rollouts' counters, by each device's move out of its old state into its new; and the halt, set once, in the
    // transaction whose reports take the failure rate above the threshold with at least min_devices attempted.
    private const string CountRolloutsSql = $$"""
        UPDATE rollouts AS r
        SET attempted = r.attempted + delta.attempted,
            updated = r.updated + delta.updated,
            failed = r.failed + delta.failed,
            rolled_back = r.rolled_back + delta.rolled_back,
            halted_at = CASE
                            WHEN r.halted_at IS NULL
                             AND r.attempted + delta.attempted >= r.min_devices
                             AND r.failed + delta.failed + r.rolled_back + delta.rolled_back > r.max_failure_rate * (r.attempted + delta.attempted)
                            THEN @TransactionTime
                            ELSE r.halted_at
                        END
        FROM (
            SELECT change.rollout_id,
                   sum(side.sign) AS attempted,
                   sum(side.sign * (side.status IN ('installed', 'updated'))::int) AS updated,
                   sum(side.sign * (side.status = 'failed')::int) AS failed,
                   sum(side.sign * (side.status = 'rolled_back')::int) AS rolled_back
            FROM {{RolloutChanges}} AS change
            CROSS JOIN LATERAL (VALUES (change.new_status, 1), (change.old_status, -1)) AS side(status, sign)
            WHERE side.status IS NOT NULL
            GROUP BY change.rollout_id
        ) AS delta
        WHERE r.project_id = @ProjectId
          AND r.id = delta.rollout_id
        """;

    private const string KeepRolloutDevicesSql = $$"""
        INSERT INTO rollout_devices AS rd (project_id, rollout_id, device_id, status, reported_at)
        SELECT change.project_id,
               change.rollout_id,
               change.device_id,
               change.new_status,
               change.reported_at
        FROM {{RolloutChanges}} AS change
        ON CONFLICT (project_id, rollout_id, device_id) DO UPDATE
        SET status = EXCLUDED.status,
            reported_at = EXCLUDED.reported_at
        """;

    // A rollout this transaction halted, to every webhook that subscribes to rollout.halted: keyed by minus the
    // rollout's id, in a lane of its own (device 0).
    private const string RecordRolloutDeliveriesSql = """
        INSERT INTO webhook_deliveries (project_id, webhook_id, event_id, device_id, event_type, created_at, next_attempt_at)
        SELECT r.project_id,
               w.id,
               -r.id,
               0,
               'rollout.halted',
               @TransactionTime,
               @TransactionTime
        FROM rollouts AS r
        JOIN webhooks AS w ON w.project_id = r.project_id
        WHERE r.project_id = @ProjectId
          AND w.project_id = @ProjectId
          AND r.halted_at = @TransactionTime
          AND w.deleted_at IS NULL
          AND 'rollout.halted' = ANY(w.event_types)
        ON CONFLICT DO NOTHING
        """;

    private const string KeepTransitionStatusSql = $$"""
        INSERT INTO device_transition_status AS t (project_id, device_id, to_firmware, from_firmware, status, error_code, reported_at)
        SELECT change.project_id,
               change.device_id,
               change.to_firmware,
               change.new_from,
               change.new_status,
               change.new_error,
               change.reported_at
        FROM {{TransitionChanges}} AS change
        ON CONFLICT (project_id, device_id, to_firmware) DO UPDATE
        SET from_firmware = EXCLUDED.from_firmware,
            status = EXCLUDED.status,
            error_code = EXCLUDED.error_code,
            reported_at = EXCLUDED.reported_at
        """;

    // Each device's own state, before and after this transaction: its current firmware (as moved above), its newest
    // event (status and time, by the device's clock) and its last report (server time).
    private const string DeviceStateChanges = $$"""
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
                    received_at
             FROM {{StoredEvents}} AS stored
             ORDER BY device_id, reported_at DESC, id DESC
         ) AS newest
         JOIN devices AS d ON d.project_id = @ProjectId AND d.id = newest.device_id
         LEFT JOIN {{FirmwareMoves}} AS move ON move.device_id = newest.device_id)
        """;

    // Devices whose newest event is installed or updated, by the version they run, their hardware and the UTC hour of
    // their last report (migrations 0027, 0031): each changed device out of its old hour and into its new one. Immutable functions
    // only: Citus evaluates them the same wherever it does.
    private const string CountSilenceSql = $$"""
        INSERT INTO firmware_silence_counts AS c (project_id, firmware, hardware, reported_hour, devices)
        SELECT change.project_id,
               side.firmware,
               change.hardware,
               date_trunc('hour', side.reported_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
               sum(side.sign)
        FROM {{DeviceStateChanges}} AS change
        CROSS JOIN LATERAL (VALUES (change.new_firmware, change.new_status, change.new_reported_at, 1),
                                   (change.old_firmware, change.old_status, change.old_reported_at, -1)) AS side(firmware, status, reported_at, sign)
        WHERE side.status IN ('installed', 'updated')
          AND side.firmware IS NOT NULL
          AND side.reported_at IS NOT NULL
        GROUP BY change.project_id, side.firmware, change.hardware, date_trunc('hour', side.reported_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
        HAVING sum(side.sign) <> 0
        ORDER BY 1, 2, 3, 4
        ON CONFLICT (project_id, firmware, hardware, reported_hour) DO UPDATE
        SET devices = c.devices + EXCLUDED.devices
        """;

    // Last, the devices themselves.
    private const string KeepDeviceStateSql = $$"""
        UPDATE devices AS d
        SET current_firmware = change.new_firmware,
            current_firmware_at = CASE WHEN change.moved THEN change.moved_at ELSE d.current_firmware_at END,
            current_firmware_device_at = CASE WHEN change.moved THEN change.moved_device_at ELSE d.current_firmware_device_at END,
            downgraded_from = change.new_downgraded_from,
            last_reported_at = change.new_reported_at,
            last_event_status = change.new_status,
            last_event_at = change.new_event_at
        FROM {{DeviceStateChanges}} AS change
        WHERE d.project_id = @ProjectId
          AND d.id = change.device_id
        """;

    // Whether the project has a webhook, and an open rollout (migrations 0029, 0034): only then does the transaction
    // record deliveries, and count for rollouts.
    private const string ProjectExtrasSql = """
        SELECT EXISTS (
                   SELECT
                   FROM webhooks
                   WHERE project_id = @ProjectId
                     AND deleted_at IS NULL),
               EXISTS (
                   SELECT
                   FROM rollouts
                   WHERE project_id = @ProjectId
                     AND ended_at IS NULL)
        """;

    // The webhook outbox (migration 0029): a delivery per event and webhook that subscribes to it, in the transaction
    // that stores the event, so that nothing acknowledged to a device is missing from the push stream. Keyed by the
    // event's id (no sequence: the INSERT ... SELECT stays on the project's shard); WebhookSender sends them.
    private const string RecordDeliveriesSql = $$"""
        INSERT INTO webhook_deliveries (project_id, webhook_id, event_id, device_id, event_type, created_at, next_attempt_at)
        SELECT stored.project_id,
               w.id,
               stored.id,
               stored.device_id,
               'event.' || stored.status,
               stored.received_at,
               stored.received_at
        FROM {{StoredEvents}} AS stored
        JOIN webhooks AS w ON w.project_id = stored.project_id
        WHERE w.project_id = @ProjectId
          AND w.deleted_at IS NULL
          AND ('event.' || stored.status) = ANY(w.event_types)
          AND (w.firmware IS NULL OR w.firmware = stored.firmware)
        ORDER BY stored.id, w.id
        ON CONFLICT DO NOTHING
        """;

    // The first round trip: BEGIN, the locks and the check; the second, once the client knows which reports are
    // recordable and their numbers: the events, the derived state and COMMIT.
    private const string TransactionTimeSql = "SELECT now()";

    private const string LockAndCheckSql =
        "BEGIN;\n" + LockDevicesSql + ";\n" + ActiveDevicesSql + ";\n" + LockArrivalsSql + ";\n" + TransactionTimeSql + ";\n" + ProjectExtrasSql;

    // On plain PostgreSQL the derived-state statements run on generic plans: each was planned afresh at every call
    // (custom plans, for the partitions its constants reach), which cost more than running it (docs/performance.md,
    // "Fleet health"). A generic plan prunes the partitions when it starts, from the parameters. On Citus, as they
    // are (GenericPlan says why).
    private const string LockAndCheckGenericSql = "BEGIN;\nSET LOCAL plan_cache_mode = force_generic_plan;\n" +
        LockDevicesSql + ";\n" + ActiveDevicesSql + ";\n" + LockArrivalsSql + ";\n" + TransactionTimeSql + ";\n" + ProjectExtrasSql;

    // In this order: each counting statement reads the state that the statements after it change. The rollouts'
    // statements and the outbox's run only when the project has rollouts or webhooks.
    private static IEnumerable<string> DerivedStateStatements(bool webhooks, bool rollouts)
    {
        string[] before = [StoreLastArrivalSql, CountVersionsSql, KeepVersionStatusSql, CountTransitionsSql, CountTransitionErrorsSql];
        string[] after = [KeepTransitionStatusSql, CountSilenceSql, KeepDeviceStateSql];
        return before
            .Concat(rollouts ? [CountRolloutsSql, KeepRolloutDevicesSql] : [])
            .Concat(rollouts && webhooks ? [RecordRolloutDeliveriesSql] : [])
            .Concat(after)
            .Concat(webhooks ? [RecordDeliveriesSql] : []);
    }

    /// <summary>
    /// Stores the reports of several devices of one project (one report or a batch each) in one transaction: the
    /// service's group commit, see <see cref="ReportGroupCommit"/>. One project, so that on a database distributed
    /// by project the transaction runs on one node. For each device, in order: the events created (identical
    /// repeats create none), or why nothing was stored for it.
    /// </summary>
    public async Task<(ReportOutcome Outcome, List<FirmwareEvent> Created)[]> RecordAsync(
        IReadOnlyList<DeviceReports> devices, CancellationToken cancellationToken)
    {
        if (devices.Select(d => d.ProjectId).Distinct().Count() != 1)
        {
            throw new ArgumentException("A transaction records the reports of one project.", nameof(devices));
        }

        if (devices.Select(d => d.DeviceId).Distinct().Count() != devices.Count)
        {
            // Created events are matched to their device: two entries of one device would be ambiguous, and
            // would share one receive time.
            throw new ArgumentException("Each device may appear once in a transaction.", nameof(devices));
        }

        var deviceIds = devices.SelectMany(d => Enumerable.Repeat(d.DeviceId, d.Events.Count)).ToArray();
        var keyIds = devices.Select(d => d.KeyId).ToArray();
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        var (locked, active, created) = await RecordInTwoRoundTripsAsync(
            connection, devices[0].ProjectId, deviceIds, keyIds, devices.SelectMany(d => d.Events).ToList(), cancellationToken);
        var createdByDevice = created.ToLookup(e => e.DeviceId);
        return devices.Select(d =>
            !locked.Contains(d.DeviceId) ? (ReportOutcome.NoDevice, new List<FirmwareEvent>())
            : !active.Contains(d.DeviceId) ? (ReportOutcome.KeyRevoked, new List<FirmwareEvent>())
            : (ReportOutcome.Recorded, createdByDevice[d.DeviceId].ToList())).ToArray();
    }

    /// <summary>An event's columns, as <see cref="FirmwareEvent"/> reads them (alias <c>e</c>).</summary>
    public const string EventColumns = """
        e.id AS Id,
               e.device_id AS DeviceId,
               e.project_id AS ProjectId,
               e.firmware AS Firmware,
               e.status AS Status,
               e.occurred_at AS OccurredAt,
               e.received_at AS ReceivedAt,
               e.from_firmware AS FromFirmware,
               e.error_code AS ErrorCode,
               e.detail AS Detail,
               e.arrival AS Arrival
        """;

    // Runs only when a report was a repeat, after its transaction: the stored event is then visible.
    private const string FindRepeatSql = $"""
        SELECT {EventColumns}
        FROM firmware_events AS e
        JOIN devices AS d ON d.id = e.device_id AND d.project_id = e.project_id
        WHERE e.project_id = @ProjectId
          AND d.project_id = @ProjectId
          AND e.device_id = @DeviceId
          AND e.occurred_at = @OccurredAt
          AND e.firmware = @Firmware
          AND e.status = @Status
        """;

    private const string LastFeedPositionSql = """
        SELECT COALESCE(max(a.last_arrival), 0)
        FROM project_event_arrivals AS a
        WHERE a.project_id = @ProjectId
        """;

    /// <summary>The project's newest feed position: at or past every event stored so far.</summary>
    public async Task<long> LastFeedPositionAsync(long projectId, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        return await connection.ExecuteScalarAsync<long>(new CommandDefinition(LastFeedPositionSql, new { ProjectId = projectId }, cancellationToken: cancellationToken));
    }

    /// <summary>The stored event identical to <paramref name="report"/>: what a repeat is answered with.</summary>
    public async Task<RecordedEvent?> FindRepeatAsync(long projectId, long deviceId, NewFirmwareEvent report, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        var existing = await connection.QuerySingleOrDefaultAsync<FirmwareEvent>(new CommandDefinition(
            FindRepeatSql,
            new { ProjectId = projectId, DeviceId = deviceId, report.Firmware, report.Status, report.OccurredAt },
            cancellationToken: cancellationToken));
        return existing is null ? null : new RecordedEvent(existing, Created: false);
    }

    // The devices locked (those that exist), those still active with their key, the project's last feed number;
    // then the events created. Every result is read, COMMIT's last, so that a failing COMMIT throws here, before
    // anything is answered; should any statement fail, the transaction is rolled back when the connection goes back
    // to the pool. Plain readers, not Dapper's GridReader: when the connection breaks mid-read (pg_terminate_backend,
    // a restart), the grid's cleanup asks the closed reader for its next result and throws "The reader is closed"
    // (a 500) in place of the database's error.
    private async Task<(HashSet<long> Locked, HashSet<long> Active, List<FirmwareEvent> Created)> RecordInTwoRoundTripsAsync(
        NpgsqlConnection connection, long projectId, long[] deviceIds, long[] keyIds, List<NewFirmwareEvent> reports,
        CancellationToken cancellationToken)
    {
        var locked = new HashSet<long>();
        var active = new HashSet<long>();
        long lastArrival = 0;
        var transactionTime = DateTime.UtcNow;
        var hasWebhooks = false;
        var hasRollouts = false;
        await using (var reader = await connection.ExecuteReaderAsync(new CommandDefinition(
            engine.IsCitus ? LockAndCheckSql : LockAndCheckGenericSql, new { ProjectId = projectId, DeviceIds = deviceIds, KeyIds = keyIds },
            cancellationToken: cancellationToken)))
        {
            while (await reader.ReadAsync(cancellationToken))
            {
                locked.Add(reader.GetInt64(0));
            }

            await reader.NextResultAsync(cancellationToken);
            while (await reader.ReadAsync(cancellationToken))
            {
                active.Add(reader.GetInt64(0));
            }

            await reader.NextResultAsync(cancellationToken);
            while (await reader.ReadAsync(cancellationToken))
            {
                lastArrival = reader.GetInt64(0);
            }

            await reader.NextResultAsync(cancellationToken);
            while (await reader.ReadAsync(cancellationToken))
            {
                transactionTime = reader.GetFieldValue<DateTime>(0);
            }

            await reader.NextResultAsync(cancellationToken);
            while (await reader.ReadAsync(cancellationToken))
            {
                hasWebhooks = reader.GetBoolean(0);
                hasRollouts = reader.GetBoolean(1);
            }

            while (await reader.NextResultAsync(cancellationToken))
            {
            }
        }

        var recordable = Enumerable.Range(0, reports.Count).Where(i => active.Contains(deviceIds[i])).ToList();
        await using var batch = new NpgsqlBatch(connection);
        if (recordable.Count > 0)
        {
            var next = 0;
            foreach (var size in InsertSizes)
            {
                for (; recordable.Count - next >= size; next += size)
                {
                    var insert = new NpgsqlBatchCommand(InsertEventsSql[Array.IndexOf(InsertSizes, size)]);
                    for (var k = next; k < next + size; k++)
                    {
                        var i = recordable[k];
                        insert.Parameters.Add(new NpgsqlParameter<long> { TypedValue = deviceIds[i] });
                        insert.Parameters.Add(new NpgsqlParameter<long> { TypedValue = projectId });
                        insert.Parameters.Add(new NpgsqlParameter<string> { TypedValue = reports[i].Firmware });
                        insert.Parameters.Add(new NpgsqlParameter<string> { TypedValue = reports[i].Status });
                        insert.Parameters.Add(new NpgsqlParameter<DateTime> { NpgsqlDbType = NpgsqlDbType.TimestampTz, TypedValue = reports[i].OccurredAt ?? transactionTime });
                        insert.Parameters.Add(new NpgsqlParameter<long> { TypedValue = lastArrival + 1 + k });
                        insert.Parameters.Add(new NpgsqlParameter<string?> { NpgsqlDbType = NpgsqlDbType.Text, TypedValue = reports[i].FromFirmware });
                        insert.Parameters.Add(new NpgsqlParameter<string?> { NpgsqlDbType = NpgsqlDbType.Text, TypedValue = reports[i].ErrorCode });
                        insert.Parameters.Add(new NpgsqlParameter<string?> { NpgsqlDbType = NpgsqlDbType.Text, TypedValue = reports[i].Detail });
                    }

                    batch.BatchCommands.Add(insert);
                }
            }

            var times = recordable.Select(i => reports[i].OccurredAt ?? transactionTime).ToList();
            var (earliest, latest) = (times.Min(), times.Max());
            foreach (var statement in DerivedStateStatements(hasWebhooks, hasRollouts))
            {
                batch.BatchCommands.Add(new NpgsqlBatchCommand(statement)
                {
                    Parameters =
                    {
                        new("ProjectId", projectId),
                        new("FirstArrival", lastArrival + 1),
                        new("LastArrival", lastArrival + recordable.Count),
                        new("SetsCurrentFirmware", FirmwareStatus.SetsCurrentFirmware.ToArray()),
                        new("EarliestOccurredAt", NpgsqlDbType.TimestampTz) { Value = earliest },
                        new("LatestOccurredAt", NpgsqlDbType.TimestampTz) { Value = latest },
                        new("TransactionTime", NpgsqlDbType.TimestampTz) { Value = transactionTime },
                    },
                });
            }
        }

        batch.BatchCommands.Add(new NpgsqlBatchCommand("COMMIT"));
        var created = new List<FirmwareEvent>();
        await using (var reader = await batch.ExecuteReaderAsync(cancellationToken))
        {
            do
            {
                while (await reader.ReadAsync(cancellationToken))
                {
                    created.Add(new FirmwareEvent(reader.GetInt64(0), reader.GetInt64(1), reader.GetInt64(2), reader.GetString(3),
                        reader.GetString(4), reader.GetFieldValue<DateTime>(5), reader.GetFieldValue<DateTime>(6),
                        NullableText(reader, 7), NullableText(reader, 8), NullableText(reader, 9), reader.GetInt64(10)));
                }
            }
            while (await reader.NextResultAsync(cancellationToken));
        }

        return (locked, active, created);
    }

    private static string? NullableText(NpgsqlDataReader reader, int ordinal) => reader.IsDBNull(ordinal) ? null : reader.GetString(ordinal);

    // One page of a device's history in the project, newest first by the device's clock: a backward scan of
    // firmware_events_device_history_key from the cursor's position (keyset paging: every page costs the
    // same), with ties in a stable order (firmware, then status). Events belong to the project they were
    // reported in, on every endpoint: the device's reports from while it belonged to another project are never
    // returned here, and a device that left this project still shows what it reported while it was here.
    private const string HistoryPageSql = $"""
        SELECT {EventColumns}
        FROM firmware_events AS e
        WHERE e.device_id = @DeviceId
          AND e.project_id = @ProjectId
          AND e.occurred_at >= COALESCE(@Since::timestamptz, '-infinity')
          AND e.occurred_at < COALESCE(@Until::timestamptz, 'infinity')
          AND (e.occurred_at, e.firmware, e.status)
              < (COALESCE(@AfterOccurredAt::timestamptz, 'infinity'), COALESCE(@AfterFirmware, ''), COALESCE(@AfterStatus, ''))
          AND (cardinality(@Statuses::text[]) = 0 OR e.status = ANY(@Statuses))
          AND (@Firmware::text IS NULL OR e.firmware = @Firmware)
          AND (@ErrorCode::text IS NULL OR e.error_code = @ErrorCode)
        ORDER BY e.occurred_at DESC,
                 e.firmware DESC,
                 e.status DESC
        LIMIT @Limit
        """;

    // The device is the project's now, or reported in it before it moved: anything else is 404, the same for a
    // device that does not exist as for another project's, so that ids cannot be probed.
    private const string DeviceKnownToProjectSql = """
        SELECT EXISTS (
            SELECT 1
            FROM devices
            WHERE id = @DeviceId
              AND project_id = @ProjectId
        ) OR EXISTS (
            SELECT 1
            FROM firmware_events
            WHERE device_id = @DeviceId
              AND project_id = @ProjectId
        )
        """;

    /// <summary>Where a history page ends: the sort key of its last event.</summary>
    public sealed record HistoryPosition(DateTime OccurredAt, string Firmware, string Status);

    /// <summary>
    /// Up to <paramref name="limit"/> events of the device in the project after <paramref name="after"/>, newest
    /// first; null when the device is not in that project and never reported in it.
    /// </summary>
    public async Task<IReadOnlyList<FirmwareEvent>?> HistoryPageAsync(
        long deviceId, long projectId, EventFilters filters, HistoryPosition? after, int limit, ReadContext read,
        CancellationToken cancellationToken)
    {
        var parameters = new
        {
            DeviceId = deviceId,
            ProjectId = projectId,
            filters.Since,
            filters.Until,
            AfterOccurredAt = after?.OccurredAt,
            AfterFirmware = after?.Firmware,
            AfterStatus = after?.Status,
            filters.Statuses,
            filters.Firmware,
            filters.ErrorCode,
            Limit = limit,
        };
        return await reads.RunAsync<IReadOnlyList<FirmwareEvent>?>(read, async connection =>
        {
            var events = (await connection.QueryAsync<FirmwareEvent>(
                new CommandDefinition(HistoryPageSql, parameters, cancellationToken: cancellationToken))).AsList();

            // An empty page may also mean the device is unknown to the project: only then is that asked.
            if (events.Count == 0 &&
                !await connection.ExecuteScalarAsync<bool>(new CommandDefinition(DeviceKnownToProjectSql, parameters, cancellationToken: cancellationToken)))
            {
                return null;
            }

            return events;
        }, cancellationToken);
    }

    private const string FindSql = $"""
        SELECT {EventColumns}
        FROM firmware_events AS e
        WHERE e.id = @EventId
          AND e.device_id = @DeviceId
          AND e.project_id = @ProjectId
        """;

    /// <summary>
    /// One event of a device in the project; null when there is no such event there. Not found on a standby, it is
    /// looked for on the primary: its id came from a <c>Location</c> that another instance may have just handed out.
    /// </summary>
    public Task<FirmwareEvent?> FindAsync(long deviceId, long projectId, long eventId, ReadContext read, CancellationToken cancellationToken) =>
        reads.RunAsync(read, connection => connection.QuerySingleOrDefaultAsync<FirmwareEvent>(new CommandDefinition(
                FindSql, new { DeviceId = deviceId, ProjectId = projectId, EventId = eventId }, cancellationToken: cancellationToken)),
            cancellationToken, retryOnPrimary: found => found is null);
}
