using Dapper;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Upkeep;
using Npgsql;

namespace FirmwareManager.Api.Firmware;

/// <summary>
/// The events' part of the upkeep (<see cref="UpkeepService"/>):
/// <list type="number">
/// <item>the monthly partitions of <c>firmware_events</c> are made <see cref="RetentionOptions.PartitionMonthsAhead"/> months ahead
/// (also at startup, before the first request);</item>
/// <item>with <see cref="RetentionOptions.MaxAgeDays"/>: partitions whose month is wholly older than the cutoff are
/// dropped; in the partitions that hold the cutoff, each device's older events are deleted, a window of devices per
/// statement (the history index finds them; the pairs of project and device come from
/// <c>device_firmware_status</c>); in the default partition, events received before the cutoff too;</item>
/// <item>a project's own <c>event_max_age_days</c> (set through the API, when shorter): its devices' older events, the same way.</item>
/// </list>
/// Current firmware, device summaries and version counts are kept beside the events and are not touched. After
/// every round, this instance's or another's, the history reads' partition bounds (<see cref="EventPartitionSpan"/>) are read again.
/// </summary>
public sealed class EventUpkeep(DatabaseEngine engine, EventPartitionSpan partitionSpan, ILogger<EventUpkeep> logger) : IUpkeepStep
{
    // A window of (project, device) pairs in key order, and those devices' events in those projects before the
    // cutoff: a range at the start of each device's stretch of firmware_events_device_history_key, in the partitions
    // the cutoff does not prune. The pairs come from device_firmware_status, which has a row for every version a
    // device reported in a project, so a device that has since moved to another project is found too.
    private const string DeleteDevicesEventsSql = """
        WITH window_devices AS (
            SELECT DISTINCT w.project_id, w.device_id
            FROM (
                SELECT project_id, device_id
                FROM device_firmware_status
                WHERE (@ProjectId::bigint IS NULL OR project_id = @ProjectId)
                  AND (project_id, device_id) > (@AfterProjectId, @AfterId)
                ORDER BY project_id, device_id
                LIMIT @BatchSize
            ) AS w
        ),
        deleted AS (
            DELETE FROM firmware_events AS e
            USING window_devices AS d
            WHERE e.device_id = d.device_id
              AND e.project_id = d.project_id
              AND e.occurred_at < @Cutoff
            RETURNING 1
        )
        SELECT (SELECT project_id FROM window_devices ORDER BY project_id DESC, device_id DESC LIMIT 1) AS LastProjectId,
               (SELECT device_id FROM window_devices ORDER BY project_id DESC, device_id DESC LIMIT 1) AS LastId,
               (SELECT count(*) FROM deleted) AS Deleted
        """;

    // Reports whose clock was outside every partition: kept no longer than the cutoff after they were received.
    private const string DeleteDefaultSql = """
        DELETE FROM firmware_events_default AS e
        USING (
            SELECT project_id, id, occurred_at
            FROM firmware_events_default
            WHERE received_at < @Cutoff OR occurred_at < @Cutoff
            LIMIT @BatchSize
        ) AS old
        WHERE e.project_id = old.project_id
          AND e.id = old.id
          AND e.occurred_at = old.occurred_at
        """;

    private const string ProjectsWithRetentionSql = """
        SELECT id AS ProjectId, event_max_age_days AS MaxAgeDays
        FROM projects
        WHERE event_max_age_days IS NOT NULL
        ORDER BY id
        """;

    private sealed record ProjectRetention(long ProjectId, int MaxAgeDays);

    public async Task AtStartupAsync(UpkeepRound round, CancellationToken cancellationToken)
    {
        await CreateAheadAsync(round, cancellationToken);
        await partitionSpan.RefreshAsync(round.Connection, cancellationToken);
    }

    public Task AfterOthersRoundAsync(NpgsqlConnection connection, CancellationToken cancellationToken) =>
        partitionSpan.RefreshAsync(connection, cancellationToken);

    public async Task RunAsync(UpkeepRound round, CancellationToken cancellationToken)
    {
        var (connection, settings) = (round.Connection, round.Settings);
        await CreateAheadAsync(round, cancellationToken);

        if (settings.MaxAgeDays is { } maxAgeDays)
        {
            var cutoff = round.NowUtc.AddDays(-maxAgeDays);
            var dropped = await EventPartitions.DropBeforeAsync(connection, cutoff, logger, cancellationToken);
            var deleted = await round.DeleteInWindowsAsync(DeleteDevicesEventsSql, null, cutoff, cancellationToken);
            deleted += await round.DeleteInBatchesAsync(DeleteDefaultSql, cutoff, cancellationToken);
            logger.LogInformation(
                "Retention: events before {Cutoff:o} removed: partitions dropped {Partitions}, {Count} events deleted",
                cutoff, dropped.Count == 0 ? "none" : string.Join(", ", dropped), deleted);
        }

        var projects = await connection.QueryAsync<ProjectRetention>(new CommandDefinition(ProjectsWithRetentionSql, cancellationToken: cancellationToken));
        foreach (var project in projects.Where(p => settings.MaxAgeDays is not { } global || p.MaxAgeDays < global))
        {
            var cutoff = round.NowUtc.AddDays(-project.MaxAgeDays);
            var deleted = await round.DeleteInWindowsAsync(DeleteDevicesEventsSql, project.ProjectId, cutoff, cancellationToken);
            logger.LogInformation("Retention: project {ProjectId}: {Count} events before {Cutoff:o} deleted", project.ProjectId, deleted, cutoff);
        }

        await partitionSpan.RefreshAsync(connection, cancellationToken);
    }

    private async Task CreateAheadAsync(UpkeepRound round, CancellationToken cancellationToken)
    {
        var created = await EventPartitions.CreateAheadAsync(
            round.Connection, round.NowUtc, round.Settings.PartitionMonthsAhead, engine.IsCitus, cancellationToken);
        if (created.Count > 0)
        {
            logger.LogInformation("Partitions made ahead: {Partitions}", string.Join(", ", created));
        }
    }
}
