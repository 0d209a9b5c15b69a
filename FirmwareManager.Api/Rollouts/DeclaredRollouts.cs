using Dapper;
using FirmwareManager.Api.Audit;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Http;
using Npgsql;

namespace FirmwareManager.Api.Rollouts;

/// <summary>A rollout as declared, with the counters projected from the feed (migration 0034, RolloutsProjection).</summary>
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
public sealed class DeclaredRollouts(NpgsqlDataSource dataSource, ReadRouting reads, TimeProvider clock)
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

    /// <summary>Rollouts open at once in a project: ingest counts every report against each open one of its version.</summary>
    public const int MaxOpenRolloutsPerProject = 100;

    /// <summary>Rollouts open at once for one version (to different audiences).</summary>
    public const int MaxOpenRolloutsPerVersion = 10;

    // Through rollouts_open_idx (project_id, firmware) WHERE ended_at IS NULL.
    private const string CountOpenSql = """
        SELECT count(*) AS InProject,
               count(*) FILTER (WHERE r.firmware = @Firmware) AS ForVersion
        FROM rollouts AS r
        WHERE r.project_id = @ProjectId
          AND r.ended_at IS NULL
        """;

    private sealed record OpenRollouts(long InProject, long ForVersion);

    /// <exception cref="LimitReachedException">The project or the version has as many open rollouts as it may.</exception>
    public async Task<Rollout> CreateAsync(long projectId, NewRollout rollout, Actor actor, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        await actor.ConfirmStillAuthorizedAsync(connection, transaction, projectId, requireAdmin: true, cancellationToken);
        var open = await connection.QuerySingleAsync<OpenRollouts>(new CommandDefinition(
            CountOpenSql, new { ProjectId = projectId, rollout.Firmware }, transaction, cancellationToken: cancellationToken));
        if (open.InProject >= MaxOpenRolloutsPerProject)
        {
            throw new LimitReachedException($"A project has at most {MaxOpenRolloutsPerProject} open rollouts: end one first.");
        }

        if (open.ForVersion >= MaxOpenRolloutsPerVersion)
        {
            throw new LimitReachedException($"A version has at most {MaxOpenRolloutsPerVersion} open rollouts: end one of {rollout.Firmware}'s first.");
        }

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
        await actor.ConfirmStillAuthorizedAsync(connection, transaction, projectId, requireAdmin: true, cancellationToken);
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

    // A page's figures in one statement, whatever its size (up to 1000 rollouts), not two counts per rollout:
    //  * the audience (eligible): the project's devices are scanned once and grouped by what a rollout selects on
    //    (hardware, tags, current version), and each rollout adds up the groups it selects: a few hundred groups
    //    per rollout rather than a fleet; plus, for a rollout from a version, the devices that attempted it and
    //    now run something else;
    //  * silent: devices whose newest report on the rollout succeeded, that still run its version, and have said
    //    nothing since for longer than the project's silent_after_hours.
    // Every part is bounded by the project's devices and the page's rollout_devices rows.
    private const string FiguresSql = """
        WITH page AS (
            SELECT r.id,
                   r.firmware,
                   r.from_firmware,
                   r.hardware,
                   r.tags
            FROM rollouts AS r
            WHERE r.project_id = @ProjectId
              AND r.id = ANY(@RolloutIds)
        ),
        device_groups AS (
            SELECT d.hardware,
                   d.tags,
                   d.current_firmware,
                   count(*) AS devices
            FROM devices AS d
            WHERE d.project_id = @ProjectId
              AND d.decommissioned_at IS NULL
            GROUP BY d.hardware, d.tags, d.current_firmware
        ),
        audience AS (
            SELECT p.id,
                   COALESCE(sum(g.devices), 0)::bigint AS devices
            FROM page AS p
            LEFT JOIN device_groups AS g
                ON (p.hardware IS NULL OR g.hardware = p.hardware)
               AND g.tags @> p.tags
               AND (p.from_firmware IS NULL OR g.current_firmware = p.from_firmware)
            GROUP BY p.id
        ),
        attempted AS (
            SELECT rd.rollout_id AS id,
                   count(*) FILTER (WHERE p.from_firmware IS NOT NULL
                                      AND d.current_firmware IS DISTINCT FROM p.from_firmware) AS moved_on,
                   count(*) FILTER (WHERE rd.status IN ('installed', 'updated')
                                      AND d.current_firmware = p.firmware
                                      AND d.last_event_status IN ('installed', 'updated')
                                      AND d.last_reported_at < cutoff.at) AS silent
            FROM rollout_devices AS rd
            JOIN page AS p ON p.id = rd.rollout_id
            JOIN devices AS d ON d.project_id = rd.project_id AND d.id = rd.device_id
            CROSS JOIN (
                SELECT @Now::timestamptz - make_interval(hours => COALESCE(pr.silent_after_hours, 24)) AS at
                FROM projects AS pr
                WHERE pr.id = @ProjectId
            ) AS cutoff
            WHERE rd.project_id = @ProjectId
              AND d.project_id = @ProjectId
              AND rd.rollout_id = ANY(@RolloutIds)
            GROUP BY rd.rollout_id
        )
        SELECT a.id AS RolloutId,
               a.devices + COALESCE(t.moved_on, 0) AS Eligible,
               COALESCE(t.silent, 0) AS Silent
        FROM audience AS a
        LEFT JOIN attempted AS t ON t.id = a.id
        """;

    private sealed record Figures(long RolloutId, long Eligible, long Silent);

    /// <summary>A page of the project's rollouts, newest first (or one of them), each with its audience and silent devices: two statements.</summary>
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
            if (rollouts.Count == 0)
            {
                return [];
            }

            var figures = (await connection.QueryAsync<Figures>(new CommandDefinition(FiguresSql, new
            {
                ProjectId = projectId,
                RolloutIds = rollouts.Select(r => r.Id).ToArray(),
                Now = now,
            }, cancellationToken: cancellationToken))).ToDictionary(f => f.RolloutId);
            return rollouts.ConvertAll(r => figures.TryGetValue(r.Id, out var f) ? new RolloutStatus(r, f.Eligible, f.Silent) : new RolloutStatus(r, 0, 0));
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
