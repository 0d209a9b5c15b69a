using System.Globalization;
using Dapper;
using FirmwareManager.Api.Http;
using Npgsql;

namespace FirmwareManager.Api.Firmware;

public sealed record FirmwareEvent(
    long Id, long DeviceId, long ProjectId, string Firmware, string Status, DateTime OccurredAt, DateTime ReceivedAt);

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
public sealed class FirmwareEvents(NpgsqlDataSource dataSource)
{
    // Taken first, in a statement of its own: the events of one device are recorded one transaction at a
    // time, and the statement that records them then reads the device's state as the previous one left it.
    // Devices are locked in id order, so that transactions recording several devices never deadlock.
    private const string LockDevicesSql = """
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

    // Stores reports (the i-th event is the i-th device id's; one device or many) and, in the same statement,
    // keeps what is derived from them, per device:
    //  * identical repeats (same device, project, time, firmware, status) insert nothing: ON CONFLICT;
    //  * each event gets its project's next feed number (project_event_arrivals, migration 0012): the project's
    //    row stays locked until this transaction commits, so the numbers follow commit order;
    //  * the device's current firmware follows its newest installed/updated/rolled_back report by the device's
    //    clock, so a late, older report cannot move it backwards. A time ahead of the receive time is a clock
    //    running ahead: against a report whose time is not ahead it counts as its receive time (reported_at), so
    //    it cannot pin the state; two reports both ahead of the newer one's arrival are ordered by the device's
    //    clock (device_at), if at most a day ahead (more counts as a day), so neither moves it backwards;
    //  * its newest event (status and time), and the newest status per version it reported on;
    //  * the per-project version counts (devices running each version; devices whose newest event for a
    //    version is failed or rolled_back), as deltas into each device's stripe, upserted in key order so that
    //    concurrent transactions take those rows' locks in the same order.
    // Events without a timestamp get the receive time (now()).
    private const string RecordEventsSql = """
        WITH input AS (
            SELECT r.device_id,
                   r.firmware,
                   r.status,
                   COALESCE(r.occurred_at, now()) AS occurred_at,
                   r.position
            FROM unnest(@DeviceIds::bigint[], @Firmwares::text[], @Statuses::text[], @OccurredAts::timestamptz[])
                 WITH ORDINALITY AS r(device_id, firmware, status, occurred_at, position)
        ),
        device AS (
            SELECT d.id,
                   d.project_id,
                   d.current_firmware,
                   d.current_firmware_at,
                   COALESCE(d.current_firmware_device_at, d.current_firmware_at) AS current_firmware_device_at,
                   (d.id % 16)::smallint AS stripe
            FROM devices AS d
            WHERE d.project_id = @ProjectId
              AND d.id = ANY(@DeviceIds)
              AND d.decommissioned_at IS NULL
              AND EXISTS (
                  SELECT 1
                  FROM device_api_keys AS k
                  WHERE k.project_id = @ProjectId
                    AND k.device_id = d.id
                    AND k.id = ANY(@KeyIds)
                    AND k.revoked_at IS NULL
              )
        ),
        arrival AS (
            INSERT INTO project_event_arrivals AS a (project_id, last_arrival)
            SELECT device.project_id,
                   count(*)
            FROM input
            JOIN device ON device.id = input.device_id
            GROUP BY device.project_id
            ORDER BY device.project_id
            ON CONFLICT (project_id) DO UPDATE
            SET last_arrival = a.last_arrival + EXCLUDED.last_arrival
            RETURNING a.project_id,
                      a.last_arrival
        ),
        inserted AS (
            INSERT INTO firmware_events (device_id, project_id, firmware, status, occurred_at, arrival)
            SELECT device.id,
                   device.project_id,
                   input.firmware,
                   input.status,
                   input.occurred_at,
                   arrival.last_arrival
                       - count(*) OVER (PARTITION BY device.project_id)
                       + row_number() OVER (PARTITION BY device.project_id ORDER BY input.position)
            FROM input
            JOIN device ON device.id = input.device_id
            JOIN arrival ON arrival.project_id = device.project_id
            ORDER BY input.position
            ON CONFLICT (device_id, project_id, occurred_at, firmware, status) DO NOTHING
            RETURNING id, device_id, project_id, firmware, status, occurred_at, received_at,
                      LEAST(occurred_at, received_at) AS reported_at,
                      LEAST(occurred_at, received_at + interval '1 day') AS device_at
        ),
        newest_event AS (
            SELECT DISTINCT ON (device_id) device_id,
                   status,
                   reported_at,
                   received_at
            FROM inserted
            ORDER BY device_id, reported_at DESC, id DESC
        ),
        firmware_move AS (
            SELECT device.id AS device_id,
                   device.project_id,
                   device.stripe,
                   device.current_firmware AS from_firmware,
                   newest.firmware AS to_firmware,
                   newest.reported_at,
                   newest.device_at
            FROM (
                SELECT DISTINCT ON (device_id) device_id,
                       firmware,
                       reported_at,
                       device_at,
                       occurred_at > received_at AS ahead,
                       received_at
                FROM inserted
                WHERE status = ANY(@SetsCurrentFirmware)
                ORDER BY device_id, reported_at DESC, device_at DESC, id DESC
            ) AS newest
            JOIN device ON device.id = newest.device_id
            WHERE device.current_firmware_at IS NULL
               OR CASE
                      WHEN newest.ahead AND device.current_firmware_device_at > newest.received_at
                      THEN device.current_firmware_device_at <= newest.device_at
                      ELSE device.current_firmware_at <= newest.reported_at
                  END
        ),
        version_change AS (
            SELECT n.device_id,
                   device.project_id,
                   device.stripe,
                   n.firmware,
                   n.status AS new_status,
                   n.reported_at,
                   s.status AS old_status
            FROM (
                SELECT DISTINCT ON (device_id, firmware) device_id,
                       firmware,
                       status,
                       reported_at
                FROM inserted
                ORDER BY device_id, firmware, reported_at DESC, id DESC
            ) AS n
            JOIN device ON device.id = n.device_id
            LEFT JOIN device_firmware_status AS s
                   ON s.project_id = @ProjectId AND s.device_id = n.device_id AND s.firmware = n.firmware
            WHERE s.reported_at IS NULL
               OR s.reported_at <= n.reported_at
        ),
        version_status AS (
            INSERT INTO device_firmware_status AS s (device_id, firmware, project_id, status, reported_at)
            SELECT v.device_id,
                   v.firmware,
                   v.project_id,
                   v.new_status,
                   v.reported_at
            FROM version_change AS v
            ON CONFLICT (project_id, device_id, firmware) DO UPDATE
            SET status = EXCLUDED.status,
                reported_at = EXCLUDED.reported_at
        ),
        count_deltas (project_id, firmware, stripe, devices, failed, rolled_back) AS (
            SELECT m.project_id, m.to_firmware, m.stripe, 1, 0, 0
            FROM firmware_move AS m
            WHERE m.from_firmware IS DISTINCT FROM m.to_firmware
            UNION ALL
            SELECT m.project_id, m.from_firmware, m.stripe, -1, 0, 0
            FROM firmware_move AS m
            WHERE m.from_firmware IS DISTINCT FROM m.to_firmware
              AND m.from_firmware IS NOT NULL
            UNION ALL
            SELECT v.project_id, v.firmware, v.stripe, 0, (v.new_status = 'failed')::int, (v.new_status = 'rolled_back')::int
            FROM version_change AS v
            UNION ALL
            SELECT v.project_id, v.firmware, v.stripe, 0, -((v.old_status = 'failed')::int), -((v.old_status = 'rolled_back')::int)
            FROM version_change AS v
            WHERE v.old_status IS NOT NULL
        ),
        counts AS (
            INSERT INTO firmware_version_counts AS c (project_id, firmware, stripe, devices, failed, rolled_back)
            SELECT d.project_id,
                   d.firmware,
                   d.stripe,
                   sum(d.devices),
                   sum(d.failed),
                   sum(d.rolled_back)
            FROM count_deltas AS d
            GROUP BY d.project_id, d.firmware, d.stripe
            HAVING sum(d.devices) <> 0 OR sum(d.failed) <> 0 OR sum(d.rolled_back) <> 0
            ORDER BY d.project_id, d.firmware, d.stripe
            ON CONFLICT (project_id, firmware, stripe) DO UPDATE
            SET devices = c.devices + EXCLUDED.devices,
                failed = c.failed + EXCLUDED.failed,
                rolled_back = c.rolled_back + EXCLUDED.rolled_back
        ),
        device_state AS (
            UPDATE devices AS d
            SET current_firmware = COALESCE(m.to_firmware, d.current_firmware),
                current_firmware_at = COALESCE(m.reported_at, d.current_firmware_at),
                current_firmware_device_at = CASE WHEN m.device_id IS NULL THEN d.current_firmware_device_at ELSE m.device_at END,
                last_reported_at = GREATEST(d.last_reported_at, n.received_at),
                last_event_status = CASE WHEN d.last_event_at IS NULL OR d.last_event_at <= n.reported_at
                                         THEN n.status ELSE d.last_event_status END,
                last_event_at = GREATEST(d.last_event_at, n.reported_at)
            FROM newest_event AS n
            LEFT JOIN firmware_move AS m ON m.device_id = n.device_id
            WHERE d.project_id = @ProjectId
              AND d.id = n.device_id
        )
        SELECT id AS Id,
               device_id AS DeviceId,
               project_id AS ProjectId,
               firmware AS Firmware,
               status AS Status,
               occurred_at AS OccurredAt,
               received_at AS ReceivedAt
        FROM inserted
        ORDER BY id
        """;

    // A transaction in one round trip: BEGIN, the lock, the recording statement and COMMIT go to the server
    // together. Should any of them fail, the server skips the rest (COMMIT included) and the transaction is
    // rolled back; the caller is answered only once every result, COMMIT's too, has been read.
    private const string RecordInOneRoundTripSql = "BEGIN;\n" + LockDevicesSql + ";\n" + ActiveDevicesSql + ";\n" + RecordEventsSql + ";\nCOMMIT";

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
        var (locked, active, created) = await RecordInOneRoundTripAsync(
            connection, devices[0].ProjectId, deviceIds, keyIds, devices.SelectMany(d => d.Events).ToList(), cancellationToken);
        var createdByDevice = created.ToLookup(e => e.DeviceId);
        return devices.Select(d =>
            !locked.Contains(d.DeviceId) ? (ReportOutcome.NoDevice, new List<FirmwareEvent>())
            : !active.Contains(d.DeviceId) ? (ReportOutcome.KeyRevoked, new List<FirmwareEvent>())
            : (ReportOutcome.Recorded, createdByDevice[d.DeviceId].ToList())).ToArray();
    }

    // Runs only when a report was a repeat, after its transaction: the stored event is then visible.
    private const string FindRepeatSql = """
        SELECT e.id AS Id,
               e.device_id AS DeviceId,
               e.project_id AS ProjectId,
               e.firmware AS Firmware,
               e.status AS Status,
               e.occurred_at AS OccurredAt,
               e.received_at AS ReceivedAt
        FROM firmware_events AS e
        JOIN devices AS d ON d.id = e.device_id AND d.project_id = e.project_id
        WHERE e.project_id = @ProjectId
          AND d.project_id = @ProjectId
          AND e.device_id = @DeviceId
          AND e.occurred_at = @OccurredAt
          AND e.firmware = @Firmware
          AND e.status = @Status
        """;

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

    // The devices locked (those that exist), those still active with their key, then the events created. Every
    // result is read, COMMIT's last, so that a failing COMMIT throws here, before anything is answered. A plain reader, not Dapper's GridReader:
    // when the connection breaks mid-read (pg_terminate_backend, a restart), the grid's cleanup asks the closed
    // reader for its next result and throws "The reader is closed" (a 500) in place of the database's error.
    private static async Task<(HashSet<long> Locked, HashSet<long> Active, List<FirmwareEvent> Created)> RecordInOneRoundTripAsync(
        NpgsqlConnection connection, long projectId, long[] deviceIds, long[] keyIds, IReadOnlyList<NewFirmwareEvent> reports,
        CancellationToken cancellationToken)
    {
        var parameters = new
        {
            ProjectId = projectId,
            DeviceIds = deviceIds,
            KeyIds = keyIds,
            Firmwares = reports.Select(r => r.Firmware).ToArray(),
            Statuses = reports.Select(r => r.Status).ToArray(),
            OccurredAts = reports.Select(r => r.OccurredAt).ToArray(),
            SetsCurrentFirmware = FirmwareStatus.SetsCurrentFirmware.ToArray(),
        };
        await using var reader = await connection.ExecuteReaderAsync(new CommandDefinition(
            RecordInOneRoundTripSql, parameters, cancellationToken: cancellationToken));
        var locked = new HashSet<long>();
        while (await reader.ReadAsync(cancellationToken))
        {
            locked.Add(reader.GetInt64(0));
        }

        var active = new HashSet<long>();
        if (await reader.NextResultAsync(cancellationToken))
        {
            while (await reader.ReadAsync(cancellationToken))
            {
                active.Add(reader.GetInt64(0));
            }
        }

        var created = new List<FirmwareEvent>();
        if (await reader.NextResultAsync(cancellationToken))
        {
            var parse = reader.GetRowParser<FirmwareEvent>();
            while (await reader.ReadAsync(cancellationToken))
            {
                created.Add(parse(reader));
            }
        }

        while (await reader.NextResultAsync(cancellationToken))
        {
        }

        return (locked, active, created);
    }

    // One page of a device's history in the project, newest first by the device's clock: a backward scan of
    // firmware_events_device_history_key from the cursor's position (keyset paging: every page costs the
    // same), with ties in a stable order (firmware, then status). Events belong to the project they were
    // reported in, on every endpoint: the device's reports from while it belonged to another project are never
    // returned here, and a device that left this project still shows what it reported while it was here.
    private const string HistoryPageSql = """
        SELECT e.id AS Id,
               e.device_id AS DeviceId,
               e.project_id AS ProjectId,
               e.firmware AS Firmware,
               e.status AS Status,
               e.occurred_at AS OccurredAt,
               e.received_at AS ReceivedAt
        FROM firmware_events AS e
        WHERE e.device_id = @DeviceId
          AND e.project_id = @ProjectId
          AND e.occurred_at >= COALESCE(@Since::timestamptz, '-infinity')
          AND e.occurred_at < COALESCE(@Until::timestamptz, 'infinity')
          AND (e.occurred_at, e.firmware, e.status)
              < (COALESCE(@AfterOccurredAt::timestamptz, 'infinity'), COALESCE(@AfterFirmware, ''), COALESCE(@AfterStatus, ''))
          AND (cardinality(@Statuses::text[]) = 0 OR e.status = ANY(@Statuses))
          AND (@Firmware::text IS NULL OR e.firmware = @Firmware)
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
        long deviceId, long projectId, EventFilters filters, HistoryPosition? after, int limit, CancellationToken cancellationToken)
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
            Limit = limit,
        };
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        var events = (await connection.QueryAsync<FirmwareEvent>(
            new CommandDefinition(HistoryPageSql, parameters, cancellationToken: cancellationToken))).AsList();

        // An empty page may also mean the device is unknown to the project: only then is that asked.
        if (events.Count == 0 &&
            !await connection.ExecuteScalarAsync<bool>(new CommandDefinition(DeviceKnownToProjectSql, parameters, cancellationToken: cancellationToken)))
        {
            return null;
        }

        return events;
    }

    private const string FindSql = """
        SELECT e.id AS Id,
               e.device_id AS DeviceId,
               e.project_id AS ProjectId,
               e.firmware AS Firmware,
               e.status AS Status,
               e.occurred_at AS OccurredAt,
               e.received_at AS ReceivedAt
        FROM firmware_events AS e
        WHERE e.id = @EventId
          AND e.device_id = @DeviceId
          AND e.project_id = @ProjectId
        """;

    /// <summary>One event of a device in the project; null when there is no such event there.</summary>
    public async Task<FirmwareEvent?> FindAsync(long deviceId, long projectId, long eventId, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        return await connection.QuerySingleOrDefaultAsync<FirmwareEvent>(new CommandDefinition(
            FindSql, new { DeviceId = deviceId, ProjectId = projectId, EventId = eventId }, cancellationToken: cancellationToken));
    }
}
