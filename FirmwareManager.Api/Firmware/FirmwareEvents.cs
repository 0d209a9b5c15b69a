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

/// <summary>The firmware_events table: the record of what devices reported, each project's feed.</summary>
public sealed class FirmwareEvents(NpgsqlDataSource dataSource, ReadRouting reads, DatabaseEngine engine)
{
    // Taken first: the devices, in id order, so that transactions recording several devices never deadlock. KEY
    // SHARE: what a key revocation and a decommission lock (FOR UPDATE) waits for, and what ingest and the projection
    // step (FOR NO KEY UPDATE, Projections/ProjectionSteps) never wait for each other by.
    private const string LockDevicesSql = """
        SELECT id
        FROM devices
        WHERE project_id = @ProjectId
          AND id = ANY(@DeviceIds)
        ORDER BY id
        FOR KEY SHARE
        """;

    // Then, with the devices held, what the key cache only approximates: each device's key is still valid and the
    // device not decommissioned. A decommission or a key revocation locks the device's row FOR UPDATE, so one that
    // committed while this waited is seen here (a statement after the lock reads after it), and one that comes
    // later waits for this commit. The statement that stores the events applies the same condition.
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
    // locked until this transaction commits, so that the project's numbers follow commit order (what the projection
    // step relies on: every event numbered up to last_arrival is committed). One number per report, taken at once:
    // a report that stores nothing (a repeat, a revoked key) leaves its number unused.
    private const string TakeArrivalsSql = """
        INSERT INTO project_event_arrivals AS a (project_id, last_arrival)
        VALUES (@ProjectId, @Reports)
        ON CONFLICT (project_id) DO UPDATE
        SET last_arrival = a.last_arrival + EXCLUDED.last_arrival
        RETURNING a.last_arrival
        """;

    // The events, numbered in the order given after the numbers this transaction took, for the devices still active
    // with their key (the condition of ActiveDevicesSql, for each report's own pair of key and device). Identical
    // repeats (same device, project, time, firmware, status) insert nothing (ON CONFLICT). Events without a timestamp
    // get the transaction's time, which is their receive time. The pairs still active are found once, for the
    // distinct devices and keys of the group, and the reports joined to them by a hash: joined row by row, the
    // devices, their keys and the feed number were looked up once per event (EXPLAIN ANALYZE of a group of 10 devices'
    // 100 events on 100,000 devices: 28 ms, 20 ms now; docs/performance.md). Plain PostgreSQL only: on Citus an
    // INSERT ... SELECT whose ids come from a sequence runs through the coordinator with a two-phase commit
    // (docs/scale-out.md), so there the events go as rows of INSERT ... VALUES, in a second round trip (InsertEventsSql).
    private const string StoreEventsSql = """
        WITH active AS MATERIALIZED (
            SELECT k.id, k.device_id
            FROM device_api_keys AS k
            JOIN devices AS d ON d.project_id = k.project_id AND d.id = k.device_id
            WHERE k.project_id = @ProjectId
              AND d.project_id = @ProjectId
              AND k.id = ANY(@KeyIds)
              AND k.device_id = ANY(@DeviceIds)
              AND k.revoked_at IS NULL
              AND d.decommissioned_at IS NULL
        )
        INSERT INTO firmware_events (device_id, project_id, firmware, status, occurred_at, arrival, from_firmware, error_code, detail)
        SELECT r.device_id,
               @ProjectId,
               r.firmware,
               r.status,
               COALESCE(r.occurred_at, now()),
               (SELECT a.last_arrival FROM project_event_arrivals AS a WHERE a.project_id = @ProjectId) - @Reports + r.ordinal,
               r.from_firmware,
               r.error_code,
               r.detail
        FROM unnest(@ReportDeviceIds::bigint[], @ReportKeyIds::bigint[], @Firmwares::text[], @Statuses::text[], @OccurredAts::timestamptz[],
                    @FromFirmwares::text[], @ErrorCodes::text[], @Details::text[])
             WITH ORDINALITY AS r (device_id, key_id, firmware, status, occurred_at, from_firmware, error_code, detail, ordinal)
        WHERE (r.key_id, r.device_id) IN (SELECT active.id, active.device_id FROM active)
        ORDER BY r.ordinal
        ON CONFLICT (device_id, project_id, occurred_at, firmware, status) DO NOTHING
        RETURNING id, device_id, project_id, firmware, status, occurred_at, received_at, from_firmware, error_code, detail, arrival
        """;

    // On Citus: the numbers are read in the first round trip (the row locked, as above), the events stored in the
    // second with the next numbers as the rows of plain INSERT ... VALUES statements (a few fixed sizes, each prepared
    // once), which Citus sends to the project's shard as one task each, with the new last number.
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

    // The transaction's time on Citus: the receive time of every event it stores, and so the time of those reported
    // without one, given as a value (a function in a statement may be evaluated on the coordinator or on a worker,
    // whose transaction began later: a value given is the same everywhere).
    private const string TransactionTimeSql = "SELECT now()";

    private const string InsertEventsColumns =
        "INSERT INTO firmware_events (device_id, project_id, firmware, status, occurred_at, arrival, from_firmware, error_code, detail)\nVALUES ";
    private const string InsertEventsReturning = """

        ON CONFLICT (device_id, project_id, occurred_at, firmware, status) DO NOTHING
        RETURNING id, device_id, project_id, firmware, status, occurred_at, received_at, from_firmware, error_code, detail, arrival
        """;

    private static readonly int[] InsertSizes = [256, 64, 16, 4, 1];

    private const int InsertedColumns = 9;

    private static readonly string[] InsertEventsSql = InsertSizes.Select(rows =>
        InsertEventsColumns + string.Join(",\n       ", Enumerable.Range(0, rows).Select(row => "(" + string.Join(", ",
            Enumerable.Range(1, InsertedColumns).Select(column => string.Create(CultureInfo.InvariantCulture, $"${(row * InsertedColumns) + column}"))) + ")"))
        + InsertEventsReturning).ToArray();

    private const string LockAndCheckSql =
        "BEGIN;\n" + LockDevicesSql + ";\n" + ActiveDevicesSql + ";\n" + LockArrivalsSql + ";\n" + TransactionTimeSql;

    /// <summary>
    /// Stores the reports of several devices (one report or a batch each) in one transaction: the service's group
    /// commit, see <see cref="ReportGroupCommit"/>. On one PostgreSQL the devices may belong to several projects, each
    /// project's feed numbers taken in project order; on Citus they belong to one project, so that the transaction runs
    /// on that project's node alone (<see cref="OneTransactionSpansProjects"/>). The transaction stores the events and
    /// the projects' feed numbers, nothing derived from them: the projection step does that (Projections/). For each
    /// device, in order: the events created (identical repeats create none), or why nothing was stored for it.
    /// </summary>
    public async Task<(ReportOutcome Outcome, List<FirmwareEvent> Created)[]> RecordAsync(
        IReadOnlyList<DeviceReports> devices, CancellationToken cancellationToken)
    {
        var projects = devices.GroupBy(d => d.ProjectId).OrderBy(p => p.Key).ToList();
        if (projects.Count != 1 && !OneTransactionSpansProjects)
        {
            throw new ArgumentException("On Citus a transaction records the reports of one project.", nameof(devices));
        }

        if (devices.Select(d => d.DeviceId).Distinct().Count() != devices.Count)
        {
            // Created events are matched to their device (a device's id is unique across projects): two entries of
            // one device would be ambiguous, and would share one receive time.
            throw new ArgumentException("Each device may appear once in a transaction.", nameof(devices));
        }

        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        var (locked, active, created) = engine.IsCitus
            ? await RecordOnProjectShardAsync(connection, projects[0].Key, Reports(projects[0]), cancellationToken)
            : await RecordOnOneServerAsync(connection, projects.ConvertAll(p => (p.Key, Reports(p))), cancellationToken);
        var createdByDevice = created.OrderBy(e => e.Arrival).ToLookup(e => e.DeviceId);
        return devices.Select(d =>
            !locked.Contains(d.DeviceId) ? (ReportOutcome.NoDevice, new List<FirmwareEvent>())
            : !active.Contains(d.DeviceId) ? (ReportOutcome.KeyRevoked, new List<FirmwareEvent>())
            : (ReportOutcome.Recorded, createdByDevice[d.DeviceId].ToList())).ToArray();

        static List<(long DeviceId, long KeyId, NewFirmwareEvent Event)> Reports(IEnumerable<DeviceReports> project) =>
            project.SelectMany(d => d.Events.Select(e => (d.DeviceId, d.KeyId, Event: e))).ToList();
    }

    /// <summary>
    /// Whether one transaction may record the reports of several projects: on one PostgreSQL it may (one commit, one
    /// flush of the log for them all); on Citus each project's transaction runs on its own node, with no two-phase commit.
    /// </summary>
    public bool OneTransactionSpansProjects => !engine.IsCitus;

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

    /// <summary>The project's newest feed position in <paramref name="transaction"/>'s snapshot: every event it sees is at or before it.</summary>
    public static Task<long> LastFeedPositionAsync(
        NpgsqlConnection connection, NpgsqlTransaction transaction, long projectId, CancellationToken cancellationToken) =>
        connection.ExecuteScalarAsync<long>(new CommandDefinition(LastFeedPositionSql, new { ProjectId = projectId }, transaction, cancellationToken: cancellationToken));

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

    // BEGIN to COMMIT in one round trip (pipelined): for each project, in project order, the devices locked (those
    // that exist), those still active with their key, the numbers taken, the events created. Every result is read,
    // COMMIT's last, so that a failing COMMIT throws here, before anything is answered; should any statement fail, the
    // transaction is rolled back when the connection goes back to the pool. Plain readers, not Dapper's GridReader:
    // when the connection breaks mid-read (pg_terminate_backend, a restart), the grid's cleanup asks the closed reader
    // for its next result and throws "The reader is closed" (a 500) in place of the database's error. Two writers'
    // transactions that share projects take their numbers in the same order, so neither waits for the other in a cycle.
    private static async Task<(HashSet<long> Locked, HashSet<long> Active, List<FirmwareEvent> Created)> RecordOnOneServerAsync(
        NpgsqlConnection connection, List<(long ProjectId, List<(long DeviceId, long KeyId, NewFirmwareEvent Event)> Reports)> projects,
        CancellationToken cancellationToken)
    {
        await using var batch = new NpgsqlBatch(connection)
        {
            BatchCommands =
            {
                new NpgsqlBatchCommand("BEGIN"),
                // Each statement on its one generic plan per connection: planned at every call, they cost more to plan
                // than to run (0.57 ms of planning against 0.51 ms of execution for the events' INSERT, bench/ingest-baselines.sh).
                new NpgsqlBatchCommand("SET LOCAL plan_cache_mode = force_generic_plan"),
            },
        };
        foreach (var (projectId, reports) in projects)
        {
            var deviceIds = reports.Select(r => r.DeviceId).ToArray();
            var keyIds = reports.Select(r => r.KeyId).ToArray();
            var (lockIds, checkKeyIds) = (deviceIds.Distinct().ToArray(), keyIds.Distinct().ToArray());
            batch.BatchCommands.Add(new NpgsqlBatchCommand(LockDevicesSql) { Parameters = { new("ProjectId", projectId), new("DeviceIds", lockIds) } });
            batch.BatchCommands.Add(new NpgsqlBatchCommand(ActiveDevicesSql)
            {
                Parameters = { new("ProjectId", projectId), new("DeviceIds", lockIds), new("KeyIds", checkKeyIds) },
            });
            batch.BatchCommands.Add(new NpgsqlBatchCommand(TakeArrivalsSql) { Parameters = { new("ProjectId", projectId), new("Reports", (long)reports.Count) } });
            batch.BatchCommands.Add(new NpgsqlBatchCommand(StoreEventsSql)
            {
                Parameters =
                {
                    new("ProjectId", projectId),
                    new("Reports", (long)reports.Count),
                    new("DeviceIds", lockIds),
                    new("KeyIds", checkKeyIds),
                    new("ReportDeviceIds", deviceIds),
                    new("ReportKeyIds", keyIds),
                    new("Firmwares", reports.Select(r => r.Event.Firmware).ToArray()),
                    new("Statuses", reports.Select(r => r.Event.Status).ToArray()),
                    new("OccurredAts", NpgsqlDbType.Array | NpgsqlDbType.TimestampTz) { Value = reports.Select(r => r.Event.OccurredAt).ToArray() },
                    new("FromFirmwares", NpgsqlDbType.Array | NpgsqlDbType.Text) { Value = reports.Select(r => r.Event.FromFirmware).ToArray() },
                    new("ErrorCodes", NpgsqlDbType.Array | NpgsqlDbType.Text) { Value = reports.Select(r => r.Event.ErrorCode).ToArray() },
                    new("Details", NpgsqlDbType.Array | NpgsqlDbType.Text) { Value = reports.Select(r => r.Event.Detail).ToArray() },
                },
            });
        }

        batch.BatchCommands.Add(new NpgsqlBatchCommand("COMMIT"));
        var locked = new HashSet<long>();
        var active = new HashSet<long>();
        var created = new List<FirmwareEvent>();
        await using (var reader = await batch.ExecuteReaderAsync(cancellationToken))
        {
            for (var i = 0; i < projects.Count; i++)
            {
                await ReadIdsAsync(reader, locked, cancellationToken);
                await ReadIdsAsync(reader, active, cancellationToken);
                // The numbers taken: the events carry theirs.
                await reader.NextResultAsync(cancellationToken);
                await ReadRowsAsync(reader, created, cancellationToken);
                await reader.NextResultAsync(cancellationToken);
            }

            // COMMIT's outcome.
            while (await reader.NextResultAsync(cancellationToken))
            {
            }
        }

        return (locked, active, created);
    }

    // On Citus: the first round trip takes the locks, checks the keys and reads the last number; the second stores the
    // recordable events with the next numbers, the new last number, and commits.
    private static async Task<(HashSet<long> Locked, HashSet<long> Active, List<FirmwareEvent> Created)> RecordOnProjectShardAsync(
        NpgsqlConnection connection, long projectId, List<(long DeviceId, long KeyId, NewFirmwareEvent Event)> reports,
        CancellationToken cancellationToken)
    {
        var deviceIds = reports.Select(r => r.DeviceId).Distinct().ToArray();
        var locked = new HashSet<long>();
        var active = new HashSet<long>();
        long lastArrival = 0;
        var transactionTime = DateTime.UtcNow;
        await using (var reader = await connection.ExecuteReaderAsync(new CommandDefinition(
            LockAndCheckSql, new { ProjectId = projectId, DeviceIds = deviceIds, KeyIds = reports.Select(r => r.KeyId).Distinct().ToArray() },
            cancellationToken: cancellationToken)))
        {
            await ReadIdsAsync(reader, locked, cancellationToken);
            await ReadIdsAsync(reader, active, cancellationToken);
            while (await reader.ReadAsync(cancellationToken))
            {
                lastArrival = reader.GetInt64(0);
            }

            await reader.NextResultAsync(cancellationToken);
            while (await reader.ReadAsync(cancellationToken))
            {
                transactionTime = reader.GetFieldValue<DateTime>(0);
            }

            while (await reader.NextResultAsync(cancellationToken))
            {
            }
        }

        var recordable = reports.Where(r => active.Contains(r.DeviceId)).ToList();
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
                        var (deviceId, _, report) = recordable[k];
                        insert.Parameters.Add(new NpgsqlParameter<long> { TypedValue = deviceId });
                        insert.Parameters.Add(new NpgsqlParameter<long> { TypedValue = projectId });
                        insert.Parameters.Add(new NpgsqlParameter<string> { TypedValue = report.Firmware });
                        insert.Parameters.Add(new NpgsqlParameter<string> { TypedValue = report.Status });
                        insert.Parameters.Add(new NpgsqlParameter<DateTime> { NpgsqlDbType = NpgsqlDbType.TimestampTz, TypedValue = report.OccurredAt ?? transactionTime });
                        insert.Parameters.Add(new NpgsqlParameter<long> { TypedValue = lastArrival + 1 + k });
                        insert.Parameters.Add(new NpgsqlParameter<string?> { NpgsqlDbType = NpgsqlDbType.Text, TypedValue = report.FromFirmware });
                        insert.Parameters.Add(new NpgsqlParameter<string?> { NpgsqlDbType = NpgsqlDbType.Text, TypedValue = report.ErrorCode });
                        insert.Parameters.Add(new NpgsqlParameter<string?> { NpgsqlDbType = NpgsqlDbType.Text, TypedValue = report.Detail });
                    }

                    batch.BatchCommands.Add(insert);
                }
            }

            batch.BatchCommands.Add(new NpgsqlBatchCommand(StoreLastArrivalSql)
            {
                Parameters = { new("ProjectId", projectId), new("LastArrival", lastArrival + recordable.Count) },
            });
        }

        batch.BatchCommands.Add(new NpgsqlBatchCommand("COMMIT"));
        var created = new List<FirmwareEvent>();
        await using (var reader = await batch.ExecuteReaderAsync(cancellationToken))
        {
            await ReadCreatedAsync(reader, created, cancellationToken);
        }

        return (locked, active, created);
    }

    // The ids of the current result, then on to the next result.
    private static async Task ReadIdsAsync(System.Data.Common.DbDataReader reader, HashSet<long> ids, CancellationToken cancellationToken)
    {
        while (await reader.ReadAsync(cancellationToken))
        {
            ids.Add(reader.GetInt64(0));
        }

        await reader.NextResultAsync(cancellationToken);
    }

    // The created events of every remaining result, to the last (COMMIT's).
    private static async Task ReadCreatedAsync(NpgsqlDataReader reader, List<FirmwareEvent> created, CancellationToken cancellationToken)
    {
        do
        {
            await ReadRowsAsync(reader, created, cancellationToken);
        }
        while (await reader.NextResultAsync(cancellationToken));
    }

    // The created events of the current result.
    private static async Task ReadRowsAsync(NpgsqlDataReader reader, List<FirmwareEvent> created, CancellationToken cancellationToken)
    {
        while (await reader.ReadAsync(cancellationToken))
        {
            created.Add(new FirmwareEvent(reader.GetInt64(0), reader.GetInt64(1), reader.GetInt64(2), reader.GetString(3),
                reader.GetString(4), reader.GetFieldValue<DateTime>(5), reader.GetFieldValue<DateTime>(6),
                NullableText(reader, 7), NullableText(reader, 8), NullableText(reader, 9), reader.GetInt64(10)));
        }
    }

    private static string? NullableText(NpgsqlDataReader reader, int ordinal) => reader.IsDBNull(ordinal) ? null : reader.GetString(ordinal);

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
