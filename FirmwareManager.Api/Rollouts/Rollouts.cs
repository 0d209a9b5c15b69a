using Dapper;
using FirmwareManager.Api.Audit;
using FirmwareManager.Api.Database;
using Npgsql;

namespace FirmwareManager.Api.Rollouts;

/// <summary>A rollout as declared, with the counters ingest keeps (migration 0034).</summary>
public sealed record Rollout
{
    public long Id { get; init; }

    public long ProjectId { get; init; }

    public string Firmware { get; init; } = "";

    public string? FromFirmware { get; init; }

    public string? Hardware { get; init; }

    public string[] Tags { get; init; } = [];

    public decimal MaxFailureRate { get; init; }

    public long MinDevices { get; init; }

    public DateTime CreatedAt { get; init; }

    public DateTime? HaltedAt { get; init; }

    public DateTime? EndedAt { get; init; }

    public long Attempted { get; init; }

    public long Updated { get; init; }

    public long Failed { get; init; }

    public long RolledBack { get; init; }
}

/// <summary>A rollout with the two figures read when asked: its audience (eligible) and the silent ones.</summary>
public sealed record RolloutStatus(Rollout Rollout, long Eligible, long Silent);

/// <summary>A rollout to declare.</summary>
public sealed record NewRollout(string Firmware, string? FromFirmware, string? Hardware, string[] Tags, decimal MaxFailureRate, long MinDevices);

/// <summary>The rollouts and rollout_devices tables (migration 0034).</summary>
public sealed class Rollouts(NpgsqlDataSource dataSource, ReadRouting reads, TimeProvider clock)
{
    private const string Columns = """
        r.id AS Id,
               r.project_id AS ProjectId,
               r.firmware AS Firmware,
               r.from_firmware AS FromFirmware,
               r.hardware AS Hardware,
               r.tags AS Tags,
               r.max_failure_rate AS MaxFailureRate,
               r.min_devices AS MinDevices,
               r.created_at AS CreatedAt,
               r.halted_at AS HaltedAt,
               r.ended_at AS EndedAt,
               r.attempted AS Attempted,
               r.updated AS Updated,
               r.failed AS Failed,
               r.rolled_back AS RolledBack
        """;

    // created_at from the service's clock, as a value: on Citus a function in an INSERT may be evaluated on a worker.
    private const string CreateSql = $"""
        INSERT INTO rollouts AS r (project_id, firmware, from_firmware, hardware, tags, max_failure_rate, min_devices, created_at)
        VALUES (@ProjectId, @Firmware, @FromFirmware, @Hardware, @Tags, @MaxFailureRate, @MinDevices, @CreatedAt)
        RETURNING {Columns}
        """;

    public async Task<Rollout> CreateAsync(long projectId, NewRollout rollout, Actor actor, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        await actor.LockActiveAsync(connection, transaction, projectId, requireAdmin: true, cancellationToken);
        var created = await connection.QuerySingleAsync<Rollout>(new CommandDefinition(CreateSql, new
        {
            ProjectId = projectId,
            rollout.Firmware,
            rollout.FromFirmware,
            rollout.Hardware,
            rollout.Tags,
            rollout.MaxFailureRate,
            rollout.MinDevices,
            CreatedAt = clock.GetUtcNow().UtcDateTime,
        }, transaction, cancellationToken: cancellationToken));
        await AuditLog.RecordAsync(connection, transaction, projectId, actor, "rollout.created", "rollout", created.Id, new
        {
            firmware = rollout.Firmware,
            from_firmware = rollout.FromFirmware,
            hardware = rollout.Hardware,
            tags = rollout.Tags,
            max_failure_rate = rollout.MaxFailureRate,
            min_devices = rollout.MinDevices,
        });
        await transaction.CommitAsync(cancellationToken);
        return created;
    }

    private const string EndSql = $"""
        UPDATE rollouts AS r
        SET ended_at = @Now
        WHERE r.project_id = @ProjectId
          AND r.id = @RolloutId
          AND r.ended_at IS NULL
        RETURNING {Columns}
        """;

    /// <summary>Ends a rollout: it is completed, and ingest counts nothing more for it. Null when there is no such open rollout.</summary>
    public async Task<Rollout?> EndAsync(long projectId, long rolloutId, Actor actor, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        await actor.LockActiveAsync(connection, transaction, projectId, requireAdmin: true, cancellationToken);
        var ended = await connection.QuerySingleOrDefaultAsync<Rollout>(new CommandDefinition(
            EndSql, new { ProjectId = projectId, RolloutId = rolloutId, Now = clock.GetUtcNow().UtcDateTime }, transaction, cancellationToken: cancellationToken));
        if (ended is null)
        {
            return null;
        }

        await AuditLog.RecordAsync(connection, transaction, projectId, actor, "rollout.ended", "rollout", rolloutId, new { });
        await transaction.CommitAsync(cancellationToken);
        return ended;
    }

    // Newest first, from the cursor.
    private const string PageSql = $"""
        SELECT {Columns}
        FROM rollouts AS r
        WHERE r.project_id = @ProjectId
          AND r.id < @BeforeId
          AND (@RolloutId::bigint IS NULL OR r.id = @RolloutId)
        ORDER BY r.id DESC
        LIMIT @Limit
        """;

    // The audience: devices of the hardware and with the tags (through their indexes), running the version the
    // rollout comes from when it names one; and those that attempted it and run something else now.
    private const string EligibleSql = """
        SELECT (SELECT count(*)
                FROM devices AS d
                WHERE d.project_id = @ProjectId
                  AND d.decommissioned_at IS NULL
                  AND (@Hardware::text IS NULL OR d.hardware = @Hardware)
                  AND d.tags @> @Tags::text[]
                  AND (@FromFirmware::text IS NULL OR d.current_firmware = @FromFirmware))
             + (SELECT count(*)
                FROM rollout_devices AS rd
                JOIN devices AS d ON d.project_id = rd.project_id AND d.id = rd.device_id
                WHERE rd.project_id = @ProjectId
                  AND d.project_id = @ProjectId
                  AND rd.rollout_id = @RolloutId
                  AND @FromFirmware::text IS NOT NULL
                  AND d.current_firmware IS DISTINCT FROM @FromFirmware)
        """;

    // Devices whose newest report on the rollout succeeded, that still run its version, and have said nothing since
    // for longer than the project's silent_after_hours.
    private const string SilentSql = """
        SELECT count(*)
        FROM rollout_devices AS rd
        JOIN devices AS d ON d.project_id = rd.project_id AND d.id = rd.device_id
        WHERE rd.project_id = @ProjectId
          AND d.project_id = @ProjectId
          AND rd.rollout_id = @RolloutId
          AND rd.status IN ('installed', 'updated')
          AND d.current_firmware = @Firmware
          AND d.last_event_status IN ('installed', 'updated')
          AND d.last_reported_at < @Now::timestamptz - make_interval(hours => (SELECT COALESCE(p.silent_after_hours, 24) FROM projects AS p WHERE p.id = @ProjectId))
        """;

    /// <summary>A page of the project's rollouts, newest first (or one of them), each with its audience and silent devices.</summary>
    public async Task<IReadOnlyList<RolloutStatus>> PageAsync(
        long projectId, long? rolloutId, long beforeId, int limit, ReadContext read, CancellationToken cancellationToken)
    {
        var now = clock.GetUtcNow().UtcDateTime;
        return await reads.RunAsync<IReadOnlyList<RolloutStatus>>(read, async connection =>
        {
            var rollouts = (await connection.QueryAsync<Rollout>(new CommandDefinition(PageSql, new
            {
                ProjectId = projectId,
                RolloutId = rolloutId,
                BeforeId = beforeId,
                Limit = limit,
            }, cancellationToken: cancellationToken))).AsList();
            var page = new List<RolloutStatus>();
            foreach (var r in rollouts)
            {
                var parameters = new { ProjectId = projectId, RolloutId = r.Id, r.Hardware, r.Tags, r.FromFirmware, r.Firmware, Now = now };
                var eligible = await connection.ExecuteScalarAsync<long>(new CommandDefinition(EligibleSql, parameters, cancellationToken: cancellationToken));
                var silent = await connection.ExecuteScalarAsync<long>(new CommandDefinition(SilentSql, parameters, cancellationToken: cancellationToken));
                page.Add(new RolloutStatus(r, eligible, silent));
            }

            return page;
        }, cancellationToken);
    }

    /// <summary>The rollouts a webhook delivery names (by minus their id), for its payload.</summary>
    public async Task<Dictionary<long, RolloutStatus>> FindAsync(long projectId, IEnumerable<long> rolloutIds, CancellationToken cancellationToken)
    {
        var found = new Dictionary<long, RolloutStatus>();
        foreach (var id in rolloutIds.Distinct())
        {
            var page = await PageAsync(projectId, id, long.MaxValue, 1, ReadContext.OnPrimary(), cancellationToken);
            if (page.Count == 1)
            {
                found[id] = page[0];
            }
        }

        return found;
    }
}
