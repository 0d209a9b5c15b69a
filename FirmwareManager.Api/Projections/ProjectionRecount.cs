using Dapper;
using Npgsql;

namespace FirmwareManager.Api.Projections;

/// <summary>A projected figure that differs from its recount.</summary>
public sealed record ProjectionDifference(long ProjectId, string Figure, string Key, long? Stored, long? Recounted);

/// <summary>
/// Recounts a project's projected figures and compares them with what the projection stored (the
/// <c>verify-projections</c> command, and the tests). Each count is recounted from the state it summarises, and each
/// device's state from the events (those retention kept): a count that an event moved twice, or not at all, or that
/// a step applied out of order, shows as a difference. Read in one snapshot (REPEATABLE READ), each statement filtered
/// by the project (one shard on Citus); run it when the projection has caught up, or it reports the events still waiting.
/// </summary>
public sealed class ProjectionRecount(NpgsqlDataSource dataSource)
{
    // Version counts (summed over their stripes) against the devices and their per-version statuses, by hardware.
    private const string VersionCountsSql = """
        SELECT 'firmware_version_counts' AS Figure,
               COALESCE(stored.firmware, recount.firmware) || ' hardware=' || COALESCE(stored.hardware, recount.hardware) || ' ' || m.measure AS Key,
               m.stored AS Stored,
               m.recounted AS Recounted
        FROM (
            SELECT firmware, hardware, sum(devices) AS devices, sum(failed) AS failed, sum(rolled_back) AS rolled_back,
                   sum(unexplained_downgrades) AS downgrades
            FROM firmware_version_counts
            WHERE project_id = @ProjectId
            GROUP BY firmware, hardware
        ) AS stored
        FULL JOIN (
            SELECT firmware, hardware, sum(devices) AS devices, sum(failed) AS failed, sum(rolled_back) AS rolled_back, sum(downgrades) AS downgrades
            FROM (
                SELECT d.current_firmware AS firmware, COALESCE(d.hardware, '') AS hardware, 1 AS devices, 0 AS failed, 0 AS rolled_back,
                       (d.downgraded_from IS NOT NULL)::int AS downgrades
                FROM devices AS d
                WHERE d.project_id = @ProjectId
                  AND d.current_firmware IS NOT NULL
                UNION ALL
                SELECT s.firmware, COALESCE(d.hardware, ''), 0, (s.status = 'failed')::int, (s.status = 'rolled_back')::int, 0
                FROM device_firmware_status AS s
                JOIN devices AS d ON d.project_id = s.project_id AND d.id = s.device_id
                WHERE s.project_id = @ProjectId
                  AND d.project_id = @ProjectId
            ) AS state
            GROUP BY firmware, hardware
        ) AS recount ON recount.firmware = stored.firmware AND recount.hardware = stored.hardware
        CROSS JOIN LATERAL (VALUES ('devices', COALESCE(stored.devices, 0), COALESCE(recount.devices, 0)),
                                   ('failed', COALESCE(stored.failed, 0), COALESCE(recount.failed, 0)),
                                   ('rolled_back', COALESCE(stored.rolled_back, 0), COALESCE(recount.rolled_back, 0)),
                                   ('unexplained_downgrades', COALESCE(stored.downgrades, 0), COALESCE(recount.downgrades, 0)))
            AS m(measure, stored, recounted)
        WHERE m.stored <> m.recounted
        """;

    // Transition counts and their error codes against each device's state per update target.
    private const string TransitionCountsSql = """
        SELECT 'firmware_transition_counts' AS Figure,
               COALESCE(stored.to_firmware, recount.to_firmware) || ' from=' || COALESCE(stored.from_firmware, recount.from_firmware) || ' ' || m.measure AS Key,
               m.stored AS Stored,
               m.recounted AS Recounted
        FROM (
            SELECT to_firmware, from_firmware, attempted, succeeded, failed, rolled_back
            FROM firmware_transition_counts
            WHERE project_id = @ProjectId
        ) AS stored
        FULL JOIN (
            SELECT to_firmware,
                   COALESCE(from_firmware, '') AS from_firmware,
                   count(*) AS attempted,
                   count(*) FILTER (WHERE status IN ('installed', 'updated')) AS succeeded,
                   count(*) FILTER (WHERE status = 'failed') AS failed,
                   count(*) FILTER (WHERE status = 'rolled_back') AS rolled_back
            FROM device_transition_status
            WHERE project_id = @ProjectId
            GROUP BY to_firmware, COALESCE(from_firmware, '')
        ) AS recount ON recount.to_firmware = stored.to_firmware AND recount.from_firmware = stored.from_firmware
        CROSS JOIN LATERAL (VALUES ('attempted', COALESCE(stored.attempted, 0), COALESCE(recount.attempted, 0)),
                                   ('succeeded', COALESCE(stored.succeeded, 0), COALESCE(recount.succeeded, 0)),
                                   ('failed', COALESCE(stored.failed, 0), COALESCE(recount.failed, 0)),
                                   ('rolled_back', COALESCE(stored.rolled_back, 0), COALESCE(recount.rolled_back, 0)))
            AS m(measure, stored, recounted)
        WHERE m.stored <> m.recounted
        UNION ALL
        SELECT 'firmware_transition_errors',
               COALESCE(stored.to_firmware, recount.to_firmware) || ' from=' || COALESCE(stored.from_firmware, recount.from_firmware)
                   || ' error=' || COALESCE(stored.error_code, recount.error_code),
               COALESCE(stored.devices, 0),
               COALESCE(recount.devices, 0)
        FROM (
            SELECT to_firmware, from_firmware, error_code, devices
            FROM firmware_transition_errors
            WHERE project_id = @ProjectId
        ) AS stored
        FULL JOIN (
            SELECT to_firmware, COALESCE(from_firmware, '') AS from_firmware, error_code, count(*) AS devices
            FROM device_transition_status
            WHERE project_id = @ProjectId
              AND status IN ('failed', 'rolled_back')
              AND error_code IS NOT NULL
            GROUP BY to_firmware, COALESCE(from_firmware, ''), error_code
        ) AS recount ON recount.to_firmware = stored.to_firmware AND recount.from_firmware = stored.from_firmware
                    AND recount.error_code = stored.error_code
        WHERE COALESCE(stored.devices, 0) <> COALESCE(recount.devices, 0)
        """;

    // Silence counts against the devices whose newest event is installed or updated, by the hour of their last report.
    private const string SilenceCountsSql = """
        SELECT 'firmware_silence_counts' AS Figure,
               COALESCE(stored.firmware, recount.firmware) || ' hardware=' || COALESCE(stored.hardware, recount.hardware)
                   || ' hour=' || to_char(COALESCE(stored.reported_hour, recount.reported_hour) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24"Z"') AS Key,
               COALESCE(stored.devices, 0) AS Stored,
               COALESCE(recount.devices, 0) AS Recounted
        FROM (
            SELECT firmware, hardware, reported_hour, devices
            FROM firmware_silence_counts
            WHERE project_id = @ProjectId
              AND devices <> 0
        ) AS stored
        FULL JOIN (
            SELECT current_firmware AS firmware,
                   COALESCE(hardware, '') AS hardware,
                   date_trunc('hour', last_reported_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS reported_hour,
                   count(*) AS devices
            FROM devices
            WHERE project_id = @ProjectId
              AND last_event_status IN ('installed', 'updated')
              AND current_firmware IS NOT NULL
              AND last_reported_at IS NOT NULL
            GROUP BY 1, 2, 3
        ) AS recount ON recount.firmware = stored.firmware AND recount.hardware = stored.hardware
                    AND recount.reported_hour = stored.reported_hour
        WHERE COALESCE(stored.devices, 0) <> COALESCE(recount.devices, 0)
        """;

    // Each rollout's counters against its devices.
    private const string RolloutCountsSql = """
        SELECT 'rollouts' AS Figure,
               'rollout ' || r.id || ' ' || m.measure AS Key,
               m.stored AS Stored,
               m.recounted AS Recounted
        FROM rollouts AS r
        LEFT JOIN (
            SELECT rollout_id,
                   count(*) AS attempted,
                   count(*) FILTER (WHERE status IN ('installed', 'updated')) AS updated,
                   count(*) FILTER (WHERE status = 'failed') AS failed,
                   count(*) FILTER (WHERE status = 'rolled_back') AS rolled_back
            FROM rollout_devices
            WHERE project_id = @ProjectId
            GROUP BY rollout_id
        ) AS recount ON recount.rollout_id = r.id
        CROSS JOIN LATERAL (VALUES ('attempted', r.attempted, COALESCE(recount.attempted, 0)),
                                   ('updated', r.updated, COALESCE(recount.updated, 0)),
                                   ('failed', r.failed, COALESCE(recount.failed, 0)),
                                   ('rolled_back', r.rolled_back, COALESCE(recount.rolled_back, 0)))
            AS m(measure, stored, recounted)
        WHERE r.project_id = @ProjectId
          AND m.stored <> m.recounted
        """;

    // Each device's last report and its newest status per version, against its events in the project (those kept):
    // an event skipped leaves them behind. A device's newest status per version is that of its newest report on it by
    // the time it counts by (reported_at: a time ahead of the receive time counts as the receive time), the later
    // stored first among equals.
    private const string DeviceStateSql = """
        SELECT 'devices.last_reported_at' AS Figure,
               'device ' || d.id AS Key,
               (extract(epoch FROM d.last_reported_at) * 1000000)::bigint AS Stored,
               (extract(epoch FROM e.received_at) * 1000000)::bigint AS Recounted
        FROM devices AS d
        JOIN (
            SELECT device_id, max(received_at) AS received_at
            FROM firmware_events
            WHERE project_id = @ProjectId
            GROUP BY device_id
        ) AS e ON e.device_id = d.id
        WHERE d.project_id = @ProjectId
          AND (d.last_reported_at IS NULL OR d.last_reported_at < e.received_at)
        UNION ALL
        SELECT 'device_firmware_status',
               'device ' || newest.device_id || ' firmware=' || newest.firmware || ' status=' || newest.status || ' kept=' || COALESCE(s.status, '(none)'),
               NULL,
               NULL
        FROM (
            SELECT DISTINCT ON (device_id, firmware) device_id, firmware, status, LEAST(occurred_at, received_at) AS reported_at
            FROM firmware_events
            WHERE project_id = @ProjectId
            ORDER BY device_id, firmware, LEAST(occurred_at, received_at) DESC, arrival DESC, id DESC
        ) AS newest
        LEFT JOIN device_firmware_status AS s
               ON s.project_id = @ProjectId AND s.device_id = newest.device_id AND s.firmware = newest.firmware
        WHERE s.reported_at IS NULL
           OR s.reported_at < newest.reported_at
           OR (s.reported_at = newest.reported_at AND s.status <> newest.status)
        """;

    // Events stored and not yet projected.
    private const string WaitingSql = """
        SELECT 'project_projections' AS Figure,
               'events waiting' AS Key,
               COALESCE(p.position, 0) AS Stored,
               a.last_arrival AS Recounted
        FROM project_event_arrivals AS a
        LEFT JOIN project_projections AS p ON p.project_id = a.project_id
        WHERE a.project_id = @ProjectId
          AND a.last_arrival > COALESCE(p.position, 0)
        """;

    private const string ProjectsSql = "SELECT id FROM projects ORDER BY id";

    /// <summary>Every difference in <paramref name="projectId"/>'s projected figures, or in every project's when null.</summary>
    public async Task<IReadOnlyList<ProjectionDifference>> DifferencesAsync(long? projectId, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        var projects = projectId is { } one
            ? [one]
            : (await connection.QueryAsync<long>(new CommandDefinition(ProjectsSql, cancellationToken: cancellationToken))).AsList();
        var differences = new List<ProjectionDifference>();
        foreach (var project in projects)
        {
            await using var transaction = await connection.BeginTransactionAsync(System.Data.IsolationLevel.RepeatableRead, cancellationToken);
            foreach (var sql in new[] { WaitingSql, VersionCountsSql, TransitionCountsSql, SilenceCountsSql, RolloutCountsSql, DeviceStateSql })
            {
                var rows = await connection.QueryAsync<(string Figure, string Key, long? Stored, long? Recounted)>(new CommandDefinition(
                    sql, new { ProjectId = project }, transaction, cancellationToken: cancellationToken));
                differences.AddRange(rows.Select(r => new ProjectionDifference(project, r.Figure, r.Key, r.Stored, r.Recounted)));
            }

            await transaction.CommitAsync(cancellationToken);
        }

        return differences;
    }
}
