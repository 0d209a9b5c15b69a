using Dapper;
using FirmwareManager.Api.Database;
using Npgsql;
using NpgsqlTypes;

namespace FirmwareManager.Api.Projections;

/// <summary>What one step did: nothing (another instance holds the project, or nothing waits), or a range applied.</summary>
public sealed record StepOutcome(bool Claimed, long From, long To, int Events, long LastArrival, DateTime? OldestReceivedAt)
{
    public static readonly StepOutcome Skipped = new(false, 0, 0, 0, 0, null);

    /// <summary>Events wait beyond this step.</summary>
    public bool MoreWaiting => Claimed && To < LastArrival;
}

/// <summary>
/// One projection step of one project, in one transaction: it locks the project's position (migration 0037) without
/// waiting (another instance that holds it is projecting the project: this step does nothing), reads up to
/// <c>stepSize</c> events after it in feed order, locks their devices, runs every projection's statements over that
/// range, and stores the new position, then commits. A crash anywhere before the commit leaves the position and the
/// state as they were; after it, both moved: each event is applied exactly once. Three round trips, each statement
/// filtered by the project (one shard on Citus).
/// </summary>
public sealed class ProjectionSteps(
    NpgsqlDataSource dataSource, DatabaseEngine engine, IEnumerable<IProjection> projections, ProjectedPositions positions)
{
    private readonly ProjectionStatement[] _statements = projections.SelectMany(p => p.Statements).OrderBy(s => s.Order).ToArray();

    // A project's row, made by its first step (a project whose events predate migration 0037 has one). A row there
    // already, locked or not, makes it do nothing and wait for nothing.
    private const string EnsurePositionSql = """
        INSERT INTO project_projections (project_id, position)
        VALUES (@ProjectId, 0)
        ON CONFLICT (project_id) DO NOTHING
        """;

    private const string ClaimSql = """
        SELECT position
        FROM project_projections
        WHERE project_id = @ProjectId
        FOR UPDATE SKIP LOCKED
        """;

    // Every event numbered up to the last number is committed (the number and the events are stored in one
    // transaction, and a project's numbers are handed out in commit order): a statement after this one sees them all.
    private const string LastArrivalSql = """
        SELECT COALESCE(max(last_arrival), 0)
        FROM project_event_arrivals
        WHERE project_id = @ProjectId
        """;

    // Whether the project has a webhook, and an open rollout (migrations 0029, 0034): only then do the deliveries' and
    // the rollouts' statements run.
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

    // The step's events, in feed order (firmware_events_project_feed_idx).
    private const string StepRangeSql = """
        SELECT e.arrival,
               e.device_id,
               e.occurred_at,
               e.received_at
        FROM firmware_events AS e
        WHERE e.project_id = @ProjectId
          AND e.arrival > @Position
          AND e.arrival <= @LastArrival
        ORDER BY e.arrival
        LIMIT @StepSize
        """;

    // The step's devices, in id order, as a change of devices' attributes locks them (DeviceAttributes): the counts
    // by hardware and the device state must not interleave with a move to other hardware. FOR NO KEY UPDATE, which a
    // report's KEY SHARE lock (FirmwareEvents) does not wait for.
    private const string LockDevicesSql = """
        SELECT id
        FROM devices
        WHERE project_id = @ProjectId
          AND id = ANY(@DeviceIds)
        ORDER BY id
        FOR NO KEY UPDATE
        """;

    private const string StorePositionSql = """
        UPDATE project_projections
        SET position = @LastArrival,
            projected_at = @StepTime
        WHERE project_id = @ProjectId
        """;

    private const string StepTimeSql = "SELECT now()";

    // The project's position: how far the derived state has applied its feed (0 before its first step).
    private const string PositionSql = """
        SELECT COALESCE(max(position), 0)
        FROM project_projections
        WHERE project_id = @ProjectId
        """;

    public async Task<long> PositionAsync(long projectId, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        var position = await connection.ExecuteScalarAsync<long>(new CommandDefinition(PositionSql, new { ProjectId = projectId }, cancellationToken: cancellationToken));
        positions.Observe(projectId, position);
        return position;
    }

    /// <summary>The project's last feed position: every report of the project was answered with one at or before it.</summary>
    public async Task<long> LastArrivalAsync(long projectId, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        return await connection.ExecuteScalarAsync<long>(new CommandDefinition(LastArrivalSql, new { ProjectId = projectId }, cancellationToken: cancellationToken));
    }

    /// <summary>Projects up to <paramref name="stepSize"/> of the project's events after its position, in one transaction.</summary>
    public async Task<StepOutcome> RunAsync(long projectId, int stepSize, CancellationToken cancellationToken)
    {
        // BEGIN and COMMIT as statements of the round trips (Npgsql's transaction object would cost a round trip of its
        // own); should anything fail, the transaction is rolled back when the connection goes back to the pool.
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        // As ingest's statements did: each planned afresh at every call cost more than running it (docs/performance.md,
        // "Fleet health"); a generic plan prunes the partitions when it starts. On Citus, as they are (GenericPlan).
        var begin = engine.IsCitus ? "BEGIN;\n" : "BEGIN;\nSET LOCAL plan_cache_mode = force_generic_plan;\n";
        var parameters = new { ProjectId = projectId };
        long? position = null;
        long lastArrival;
        bool hasWebhooks, hasRollouts;
        DateTime stepTime;
        await using (var reader = await connection.ExecuteReaderAsync(new CommandDefinition(
            begin + EnsurePositionSql + ";\n" + ClaimSql + ";\n" + LastArrivalSql + ";\n" + ProjectExtrasSql + ";\n" + StepTimeSql, parameters, cancellationToken: cancellationToken)))
        {
            if (await reader.ReadAsync(cancellationToken))
            {
                position = reader.GetInt64(0);
            }

            await reader.NextResultAsync(cancellationToken);
            await reader.ReadAsync(cancellationToken);
            lastArrival = reader.GetInt64(0);
            await reader.NextResultAsync(cancellationToken);
            await reader.ReadAsync(cancellationToken);
            (hasWebhooks, hasRollouts) = (reader.GetBoolean(0), reader.GetBoolean(1));
            await reader.NextResultAsync(cancellationToken);
            await reader.ReadAsync(cancellationToken);
            stepTime = reader.GetFieldValue<DateTime>(0);
        }

        if (position is not { } from || from >= lastArrival)
        {
            await connection.ExecuteAsync(new CommandDefinition("ROLLBACK", cancellationToken: cancellationToken));
            if (position is { } reached)
            {
                positions.Observe(projectId, reached);
            }

            return position is null ? StepOutcome.Skipped : new StepOutcome(true, position.Value, position.Value, 0, lastArrival, null);
        }

        var range = (await connection.QueryAsync<(long Arrival, long DeviceId, DateTime OccurredAt, DateTime ReceivedAt)>(new CommandDefinition(
            StepRangeSql, new { ProjectId = projectId, Position = from, LastArrival = lastArrival, StepSize = stepSize },
            cancellationToken: cancellationToken))).AsList();

        // A full step ends at its last event; a step that took every event waiting ends at the last number (the numbers
        // after its last event were taken by repeats or refused reports, which stored nothing).
        var to = range.Count == stepSize ? range[^1].Arrival : lastArrival;
        await using var batch = new NpgsqlBatch(connection);
        if (range.Count > 0)
        {
            var deviceIds = range.Select(e => e.DeviceId).Distinct().Order().ToArray();
            batch.BatchCommands.Add(new NpgsqlBatchCommand(LockDevicesSql)
            {
                Parameters = { new("ProjectId", projectId), new("DeviceIds", deviceIds) },
            });
            var needs = (hasRollouts ? StepNeeds.Rollouts : StepNeeds.Nothing) | (hasWebhooks ? StepNeeds.Webhooks : StepNeeds.Nothing);
            foreach (var statement in _statements.Where(s => (s.Needs & needs) == s.Needs))
            {
                batch.BatchCommands.Add(new NpgsqlBatchCommand(statement.Sql)
                {
                    Parameters =
                    {
                        new("ProjectId", projectId),
                        new("FirstArrival", from + 1),
                        new("LastArrival", to),
                        new("EarliestOccurredAt", NpgsqlDbType.TimestampTz) { Value = range.Min(e => e.OccurredAt) },
                        new("LatestOccurredAt", NpgsqlDbType.TimestampTz) { Value = range.Max(e => e.OccurredAt) },
                        new("StepTime", NpgsqlDbType.TimestampTz) { Value = stepTime },
                    },
                });
            }
        }

        batch.BatchCommands.Add(new NpgsqlBatchCommand(StorePositionSql)
        {
            Parameters =
            {
                new("ProjectId", projectId),
                new("LastArrival", to),
                new("StepTime", NpgsqlDbType.TimestampTz) { Value = stepTime },
            },
        });
        batch.BatchCommands.Add(new NpgsqlBatchCommand("COMMIT"));
        await using (var reader = await batch.ExecuteReaderAsync(cancellationToken))
        {
            while (await reader.NextResultAsync(cancellationToken))
            {
            }
        }

        positions.Observe(projectId, to);
        return new StepOutcome(true, from, to, range.Count, lastArrival, range.Count == 0 ? null : range.Min(e => e.ReceivedAt));
    }
}
