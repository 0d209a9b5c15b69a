using Dapper;
using FirmwareManager.Api.Database;
using Microsoft.Extensions.Options;
using Npgsql;

namespace FirmwareManager.Api.Firmware;

/// <summary>The <c>FirmwareManager:Retention</c> section.</summary>
public sealed class RetentionOptions
{
    public const string Section = "FirmwareManager:Retention";

    /// <summary>
    /// Events whose time (<c>occurred_at</c>) is older than this are removed: whole monthly partitions once all of
    /// their month is, the rest row by row. Unset (the default): events are kept forever, unless their project says
    /// otherwise.
    /// </summary>
    [System.ComponentModel.DataAnnotations.Range(1, 36500)]
    public int? MaxAgeDays { get; set; }

    /// <summary>Audit entries older than this are deleted. Unset (the default): kept forever.</summary>
    [System.ComponentModel.DataAnnotations.Range(1, 36500)]
    public int? AuditMaxAgeDays { get; set; }

    /// <summary>
    /// Webhook deliveries that were delivered or given up longer ago than this are deleted (their webhook's delivery
    /// log shows the rest). Pending ones are never deleted.
    /// </summary>
    [System.ComponentModel.DataAnnotations.Range(1, 36500)]
    public int WebhookDeliveriesMaxAgeDays { get; set; } = 30;

    /// <summary>How often the job runs (also once at startup): partitions made ahead, then retention.</summary>
    [System.ComponentModel.DataAnnotations.Range(1, 10080)]
    public int IntervalMinutes { get; set; } = 60;

    /// <summary>Devices whose old events one statement deletes (audit entries: rows); each is a short transaction of its own.</summary>
    [System.ComponentModel.DataAnnotations.Range(100, 100000)]
    public int BatchSize { get; set; } = 5000;

    /// <summary>Monthly partitions of <c>firmware_events</c> kept made ahead of the current month.</summary>
    [System.ComponentModel.DataAnnotations.Range(1, 24)]
    public int PartitionMonthsAhead { get; set; } = 3;
}

/// <summary>
/// The events' upkeep, at startup and every <see cref="RetentionOptions.IntervalMinutes"/>, as the schema's owner
/// (DDL and deletes the API role may not do):
/// <list type="number">
/// <item>the monthly partitions of <c>firmware_events</c> are made <see cref="RetentionOptions.PartitionMonthsAhead"/> months ahead;</item>
/// <item>with <see cref="RetentionOptions.MaxAgeDays"/>: partitions whose month is wholly older than the cutoff are
/// dropped; in the partitions that hold the cutoff, each device's older events are deleted, a window of devices per
/// statement (the history index finds them; the pairs of project and device come from
/// <c>device_firmware_status</c>); in the default partition, events received before the cutoff too;</item>
/// <item>a project's own <c>event_max_age_days</c> (set through the API, when shorter): its devices' older events, the same way;</item>
/// <item>with <see cref="RetentionOptions.AuditMaxAgeDays"/>: older audit entries, in batches;</item>
/// <item>webhook deliveries finished (delivered or given up) before <see cref="RetentionOptions.WebhookDeliveriesMaxAgeDays"/>, in batches.</item>
/// </list>
/// Every delete is a short transaction of its own with a pause between, so no long lock is held and ingest goes
/// on. Current firmware, device summaries and version counts are kept beside the events and are not touched. With
/// several instances, only the one holding the advisory lock works; the others skip that round.
/// </summary>
public sealed class RetentionService(
    MaintenanceConnection maintenance, DatabaseEngine engine, EventPartitionSpan partitionSpan, IOptions<RetentionOptions> options,
    ILogger<RetentionService> logger)
    : BackgroundService
{
    // "FMretain" in ASCII; distinct from the migration lock.
    private const long RetentionLockKey = 0x464d72657461696e;

    private const string TryLockSql = "SELECT pg_try_advisory_lock(@Key)";
    private const string UnlockSql = "SELECT pg_advisory_unlock(@Key)";

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

    // A window of audit entries in key order (audit_log_project_id_idx) and, of those, the ones older than the
    // cutoff: one pass over the index a round, never a scan of the table per batch (created_at has no index).
    private const string DeleteAuditSql = """
        WITH window_rows AS (
            SELECT project_id, id, created_at
            FROM audit_log
            WHERE (@ProjectId::bigint IS NULL OR project_id = @ProjectId)
              AND (project_id, id) > (@AfterProjectId, @AfterId)
            ORDER BY project_id, id
            LIMIT @BatchSize
        ),
        deleted AS (
            DELETE FROM audit_log AS a
            USING window_rows AS w
            WHERE a.project_id = w.project_id
              AND a.id = w.id
              AND w.created_at < @Cutoff
            RETURNING 1
        )
        SELECT (SELECT project_id FROM window_rows ORDER BY project_id DESC, id DESC LIMIT 1) AS LastProjectId,
               (SELECT id FROM window_rows ORDER BY project_id DESC, id DESC LIMIT 1) AS LastId,
               (SELECT count(*) FROM deleted) AS Deleted
        """;

    // Finished deliveries older than the cutoff, oldest first, through webhook_deliveries_finished_idx (migration
    // 0036): the pending ones, which the sender reads, are never touched.
    private const string DeleteFinishedDeliveriesSql = """
        DELETE FROM webhook_deliveries AS d
        USING (
            SELECT project_id, webhook_id, event_id
            FROM webhook_deliveries
            WHERE (delivered_at IS NOT NULL OR given_up_at IS NOT NULL)
              AND COALESCE(delivered_at, given_up_at) < @Cutoff
            ORDER BY COALESCE(delivered_at, given_up_at)
            LIMIT @BatchSize
        ) AS old
        WHERE d.project_id = old.project_id
          AND d.webhook_id = old.webhook_id
          AND d.event_id = old.event_id
        """;

    private sealed record Window(long? LastProjectId, long? LastId, long Deleted);

    private sealed record ProjectRetention(long ProjectId, int MaxAgeDays);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var settings = options.Value;
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await RunOnceAsync(settings, DateTime.UtcNow, stoppingToken);
            }
            catch (Exception e) when (e is NpgsqlException or TimeoutException)
            {
                logger.LogWarning("Partition upkeep and retention failed, retrying at the next interval: {Reason}", e.Message);
            }

            await Task.Delay(TimeSpan.FromMinutes(settings.IntervalMinutes), stoppingToken);
        }
    }

    /// <summary>
    /// At startup, before the service answers: the partitions ahead, under the job's lock (waited for: another
    /// instance starting at the same moment makes them first, and then there is nothing left to make).
    /// </summary>
    public async Task MakePartitionsAheadAsync(CancellationToken cancellationToken)
    {
        await using var connection = await EventPartitions.OpenAsync(maintenance.ConnectionString, cancellationToken);
        await connection.ExecuteAsync(new CommandDefinition("SELECT pg_advisory_lock(@Key)", new { Key = RetentionLockKey }, cancellationToken: cancellationToken));
        try
        {
            await CreateAheadAsync(connection, DateTime.UtcNow, options.Value.PartitionMonthsAhead, cancellationToken);
            await partitionSpan.RefreshAsync(connection, cancellationToken);
        }
        finally
        {
            await connection.ExecuteAsync(new CommandDefinition(UnlockSql, new { Key = RetentionLockKey }, cancellationToken: CancellationToken.None));
        }
    }

    /// <summary>One round, as at <paramref name="nowUtc"/>; false when another instance holds the lock and nothing was done.</summary>
    public async Task<bool> RunOnceAsync(RetentionOptions settings, DateTime nowUtc, CancellationToken cancellationToken)
    {
        await using var connection = await EventPartitions.OpenAsync(maintenance.ConnectionString, cancellationToken);
        if (!await connection.ExecuteScalarAsync<bool>(new CommandDefinition(TryLockSql, new { Key = RetentionLockKey }, cancellationToken: cancellationToken)))
        {
            logger.LogInformation("Retention: another instance is at work; skipping this round");
            await partitionSpan.RefreshAsync(connection, cancellationToken);
            return false;
        }

        try
        {
            if (engine.IsCitus)
            {
                // Upkeep spans every shard: allowed on this connection, whatever the service's connections say.
                await connection.ExecuteAsync(new CommandDefinition("SET citus.multi_task_query_log_level = 'off'", cancellationToken: cancellationToken));
            }

            await CreateAheadAsync(connection, nowUtc, settings.PartitionMonthsAhead, cancellationToken);

            if (settings.MaxAgeDays is { } maxAgeDays)
            {
                var cutoff = nowUtc.AddDays(-maxAgeDays);
                var dropped = await EventPartitions.DropBeforeAsync(connection, cutoff, logger, cancellationToken);
                var deleted = await DeleteInWindowsAsync(connection, DeleteDevicesEventsSql, null, cutoff, settings.BatchSize, cancellationToken);
                deleted += await DeleteInBatchesAsync(connection, DeleteDefaultSql, cutoff, settings.BatchSize, cancellationToken);
                logger.LogInformation(
                    "Retention: events before {Cutoff:o} removed: partitions dropped {Partitions}, {Count} events deleted",
                    cutoff, dropped.Count == 0 ? "none" : string.Join(", ", dropped), deleted);
            }

            var projects = await connection.QueryAsync<ProjectRetention>(new CommandDefinition(ProjectsWithRetentionSql, cancellationToken: cancellationToken));
            foreach (var project in projects.Where(p => settings.MaxAgeDays is not { } global || p.MaxAgeDays < global))
            {
                var cutoff = nowUtc.AddDays(-project.MaxAgeDays);
                var deleted = await DeleteInWindowsAsync(connection, DeleteDevicesEventsSql, project.ProjectId, cutoff, settings.BatchSize, cancellationToken);
                logger.LogInformation("Retention: project {ProjectId}: {Count} events before {Cutoff:o} deleted", project.ProjectId, deleted, cutoff);
            }

            if (settings.AuditMaxAgeDays is { } auditMaxAgeDays)
            {
                var cutoff = nowUtc.AddDays(-auditMaxAgeDays);
                var deleted = await DeleteInWindowsAsync(connection, DeleteAuditSql, null, cutoff, settings.BatchSize, cancellationToken);
                logger.LogInformation("Retention: {Count} audit entries before {Cutoff:o} deleted", deleted, cutoff);
            }

            var deliveriesCutoff = nowUtc.AddDays(-settings.WebhookDeliveriesMaxAgeDays);
            var deliveries = await DeleteInBatchesAsync(connection, DeleteFinishedDeliveriesSql, deliveriesCutoff, settings.BatchSize, cancellationToken);
            logger.LogInformation("Retention: {Count} webhook deliveries finished before {Cutoff:o} deleted", deliveries, deliveriesCutoff);

            await partitionSpan.RefreshAsync(connection, cancellationToken);
            return true;
        }
        finally
        {
            await connection.ExecuteAsync(new CommandDefinition(UnlockSql, new { Key = RetentionLockKey }, cancellationToken: CancellationToken.None));
        }
    }

    private async Task CreateAheadAsync(NpgsqlConnection connection, DateTime nowUtc, int monthsAhead, CancellationToken cancellationToken)
    {
        var created = await EventPartitions.CreateAheadAsync(connection, nowUtc, monthsAhead, engine.IsCitus, cancellationToken);
        if (created.Count > 0)
        {
            logger.LogInformation("Partitions made ahead: {Partitions}", string.Join(", ", created));
        }
    }

    // Runs a windowed delete (DeleteDevicesEventsSql, DeleteAuditSql) from the start of its key to the end, a window
    // a short transaction; the number deleted.
    private static async Task<long> DeleteInWindowsAsync(
        NpgsqlConnection connection, string sql, long? projectId, DateTime cutoff, int batchSize, CancellationToken cancellationToken)
    {
        long afterProjectId = 0, afterId = 0, total = 0;
        while (true)
        {
            var window = await connection.QuerySingleAsync<Window>(new CommandDefinition(sql, new
            {
                ProjectId = projectId,
                AfterProjectId = afterProjectId,
                AfterId = afterId,
                BatchSize = batchSize,
                Cutoff = cutoff,
            }, cancellationToken: cancellationToken));
            total += window.Deleted;
            if (window.LastId is not { } lastId)
            {
                return total;
            }

            (afterProjectId, afterId) = (window.LastProjectId!.Value, lastId);
            await Task.Delay(TimeSpan.FromMilliseconds(20), cancellationToken);
        }
    }

    private static async Task<long> DeleteInBatchesAsync(NpgsqlConnection connection, string sql, DateTime cutoff, int batchSize, CancellationToken cancellationToken)
    {
        long total = 0;
        while (true)
        {
            var deleted = await connection.ExecuteAsync(new CommandDefinition(sql, new { Cutoff = cutoff, BatchSize = batchSize }, cancellationToken: cancellationToken));
            total += deleted;
            if (deleted < batchSize)
            {
                return total;
            }

            await Task.Delay(TimeSpan.FromMilliseconds(20), cancellationToken);
        }
    }
}

/// <summary>The schema owner's connection string (the migrations'), for the upkeep the API role may not do.</summary>
public sealed record MaintenanceConnection(string ConnectionString);
