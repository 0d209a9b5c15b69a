using Dapper;
using Microsoft.Extensions.Options;
using Npgsql;

namespace FirmwareManager.Api.Firmware;

/// <summary>The <c>FirmwareManager:Retention</c> section.</summary>
public sealed class RetentionOptions
{
    public const string Section = "FirmwareManager:Retention";

    /// <summary>Events received longer ago than this are deleted. Unset (the default): events are kept forever.</summary>
    [System.ComponentModel.DataAnnotations.Range(1, 36500)]
    public int? MaxAgeDays { get; set; }

    /// <summary>How often the job looks for old events (it also runs once at startup).</summary>
    [System.ComponentModel.DataAnnotations.Range(1, 10080)]
    public int IntervalMinutes { get; set; } = 60;

    /// <summary>Events examined (and at most deleted) per statement; each batch is a short transaction of its own.</summary>
    [System.ComponentModel.DataAnnotations.Range(100, 100000)]
    public int BatchSize { get; set; } = 5000;
}

/// <summary>
/// Deletes events received more than <see cref="RetentionOptions.MaxAgeDays"/> ago, oldest first, in batches
/// of <see cref="RetentionOptions.BatchSize"/> rows, each its own short transaction with a pause between, so no
/// long lock is held and ingest goes on. Current firmware, device summaries and version counts are kept
/// beside the events and are not touched. With several instances, only the one holding the advisory lock
/// works; the others skip that round.
/// </summary>
public sealed class RetentionService(
    NpgsqlDataSource dataSource, IOptions<RetentionOptions> options, ILogger<RetentionService> logger) : BackgroundService
{
    // "FMretain" in ASCII; distinct from the migration lock.
    private const long RetentionLockKey = 0x464d72657461696e;

    private const string TryLockSql = "SELECT pg_try_advisory_lock(@Key)";
    private const string UnlockSql = "SELECT pg_advisory_unlock(@Key)";

    // The next window of events in id order (ids grow with arrival, so the oldest come first); of those, the
    // ones received before the cutoff are deleted. The loop stops at the first window with nothing to delete.
    private const string DeleteBatchSql = """
        WITH window_rows AS (
            SELECT id
            FROM firmware_events
            WHERE id > @AfterId
            ORDER BY id
            LIMIT @BatchSize
        ),
        deleted AS (
            DELETE FROM firmware_events AS e
            USING window_rows AS w
            WHERE e.id = w.id
              AND e.received_at < @Cutoff
            RETURNING e.id
        )
        SELECT COALESCE((SELECT max(id) FROM window_rows), @AfterId) AS LastId,
               (SELECT count(*) FROM deleted) AS Deleted
        """;

    private sealed record BatchOutcome(long LastId, long Deleted);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var settings = options.Value;
        if (settings.MaxAgeDays is not { } maxAgeDays)
        {
            return;
        }

        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await RunOnceAsync(TimeSpan.FromDays(maxAgeDays), settings.BatchSize, stoppingToken);
            }
            catch (Exception e) when (e is NpgsqlException or TimeoutException)
            {
                logger.LogWarning("Retention round failed, retrying at the next interval: {Reason}", e.Message);
            }

            await Task.Delay(TimeSpan.FromMinutes(settings.IntervalMinutes), stoppingToken);
        }
    }

    private async Task RunOnceAsync(TimeSpan maxAge, int batchSize, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        if (!await connection.ExecuteScalarAsync<bool>(new CommandDefinition(TryLockSql, new { Key = RetentionLockKey }, cancellationToken: cancellationToken)))
        {
            logger.LogInformation("Retention: another instance is deleting old events; skipping this round");
            return;
        }

        try
        {
            var cutoff = DateTime.UtcNow - maxAge;
            long afterId = 0, total = 0;
            while (true)
            {
                var batch = await connection.QuerySingleAsync<BatchOutcome>(new CommandDefinition(
                    DeleteBatchSql, new { AfterId = afterId, BatchSize = batchSize, Cutoff = cutoff }, cancellationToken: cancellationToken));
                total += batch.Deleted;
                if (batch.Deleted == 0)
                {
                    break;
                }

                afterId = batch.LastId;
                await Task.Delay(TimeSpan.FromMilliseconds(20), cancellationToken);
            }

            logger.LogInformation("Retention: deleted {Count} events received before {Cutoff:o}", total, cutoff);
        }
        finally
        {
            await connection.ExecuteAsync(new CommandDefinition(UnlockSql, new { Key = RetentionLockKey }, cancellationToken: CancellationToken.None));
        }
    }
}
