using Dapper;
using FirmwareManager.Api.Database;
using Microsoft.Extensions.Options;
using Npgsql;

namespace FirmwareManager.Api.Upkeep;

/// <summary>The <c>FirmwareManager:Retention</c> section: the upkeep job's settings (the section keeps its first name).</summary>
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

/// <summary>The schema owner's connection string (the migrations'), for the upkeep the API role may not do.</summary>
public sealed record MaintenanceConnection(string ConnectionString)
{
    /// <summary>An open connection whose TimeZone is UTC, so that partition bounds read and written print in UTC.</summary>
    public async Task<NpgsqlConnection> OpenAsync(CancellationToken cancellationToken)
    {
        var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync(cancellationToken);
        await connection.ExecuteAsync(new CommandDefinition("SET TimeZone = 'UTC'", cancellationToken: cancellationToken));
        return connection;
    }
}

/// <summary>
/// One feature's part of the upkeep (its partitions, its retention). The job runs every step in the order they were
/// registered, on one connection as the schema's owner, under the job's lock.
/// </summary>
public interface IUpkeepStep
{
    /// <summary>At startup, before the service answers, under the job's lock (waited for).</summary>
    Task AtStartupAsync(UpkeepRound round, CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>The step's share of one round.</summary>
    Task RunAsync(UpkeepRound round, CancellationToken cancellationToken);

    /// <summary>A round another instance ran: what this instance keeps of the schema may have changed.</summary>
    Task AfterOthersRoundAsync(NpgsqlConnection connection, CancellationToken cancellationToken) => Task.CompletedTask;
}

/// <summary>
/// One round of upkeep, as at <see cref="NowUtc"/>: the owner's connection and the settings, and the two ways the
/// steps delete, each delete a short transaction of its own with a pause between, so that no long lock is held and
/// ingest goes on.
/// </summary>
public sealed class UpkeepRound(NpgsqlConnection connection, RetentionOptions settings, DateTime nowUtc)
{
    private static readonly TimeSpan Pause = TimeSpan.FromMilliseconds(20);

    public NpgsqlConnection Connection => connection;

    public RetentionOptions Settings => settings;

    public DateTime NowUtc => nowUtc;

    private sealed record Window(long? LastProjectId, long? LastId, long Deleted);

    /// <summary>
    /// Runs a windowed delete from the start of its key to the end, a window a transaction; the number deleted.
    /// <paramref name="sql"/> takes <c>@ProjectId</c> (null: every project), <c>@AfterProjectId</c>, <c>@AfterId</c>,
    /// <c>@BatchSize</c> and <c>@Cutoff</c>, and answers the window's last key and how many it deleted.
    /// </summary>
    public async Task<long> DeleteInWindowsAsync(string sql, long? projectId, DateTime cutoff, CancellationToken cancellationToken)
    {
        long afterProjectId = 0, afterId = 0, total = 0;
        while (true)
        {
            var window = await connection.QuerySingleAsync<Window>(new CommandDefinition(sql, new
            {
                ProjectId = projectId,
                AfterProjectId = afterProjectId,
                AfterId = afterId,
                settings.BatchSize,
                Cutoff = cutoff,
            }, cancellationToken: cancellationToken));
            total += window.Deleted;
            if (window.LastId is not { } lastId)
            {
                return total;
            }

            (afterProjectId, afterId) = (window.LastProjectId!.Value, lastId);
            await Task.Delay(Pause, cancellationToken);
        }
    }

    /// <summary>Runs a delete of at most <c>@BatchSize</c> rows before <c>@Cutoff</c> until one deletes fewer; the number deleted.</summary>
    public async Task<long> DeleteInBatchesAsync(string sql, DateTime cutoff, CancellationToken cancellationToken)
    {
        long total = 0;
        while (true)
        {
            var deleted = await connection.ExecuteAsync(new CommandDefinition(sql, new { Cutoff = cutoff, settings.BatchSize }, cancellationToken: cancellationToken));
            total += deleted;
            if (deleted < settings.BatchSize)
            {
                return total;
            }

            await Task.Delay(Pause, cancellationToken);
        }
    }
}

/// <summary>
/// The upkeep job, at startup and every <see cref="RetentionOptions.IntervalMinutes"/>, as the schema's owner (DDL
/// and deletes the API role may not do): each feature's <see cref="IUpkeepStep"/> in turn. With several instances,
/// only the one holding the advisory lock works; the others skip that round.
/// </summary>
public sealed class UpkeepService(
    MaintenanceConnection maintenance, DatabaseEngine engine, IEnumerable<IUpkeepStep> steps, IOptions<RetentionOptions> options,
    ILogger<UpkeepService> logger)
    : BackgroundService
{
    // "FMretain" in ASCII; distinct from the migration lock.
    private const long LockKey = 0x464d72657461696e;

    private const string LockSql = "SELECT pg_advisory_lock(@Key)";
    private const string TryLockSql = "SELECT pg_try_advisory_lock(@Key)";
    private const string UnlockSql = "SELECT pg_advisory_unlock(@Key)";

    private readonly IUpkeepStep[] _steps = steps.ToArray();

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
                logger.LogWarning("Upkeep (partitions and retention) failed, retrying at the next interval: {Reason}", e.Message);
            }

            await Task.Delay(TimeSpan.FromMinutes(settings.IntervalMinutes), stoppingToken);
        }
    }

    /// <summary>
    /// At startup, before the service answers: each step's startup part (the partitions ahead), under the job's lock,
    /// waited for: another instance starting at the same moment does it first, and then there is nothing left to do.
    /// </summary>
    public async Task AtStartupAsync(CancellationToken cancellationToken)
    {
        await using var connection = await maintenance.OpenAsync(cancellationToken);
        await connection.ExecuteAsync(new CommandDefinition(LockSql, new { Key = LockKey }, cancellationToken: cancellationToken));
        try
        {
            var round = new UpkeepRound(connection, options.Value, DateTime.UtcNow);
            foreach (var step in _steps)
            {
                await step.AtStartupAsync(round, cancellationToken);
            }
        }
        finally
        {
            await connection.ExecuteAsync(new CommandDefinition(UnlockSql, new { Key = LockKey }, cancellationToken: CancellationToken.None));
        }
    }

    /// <summary>One round, as at <paramref name="nowUtc"/>; false when another instance holds the lock and nothing was done.</summary>
    public async Task<bool> RunOnceAsync(RetentionOptions settings, DateTime nowUtc, CancellationToken cancellationToken)
    {
        await using var connection = await maintenance.OpenAsync(cancellationToken);
        if (!await connection.ExecuteScalarAsync<bool>(new CommandDefinition(TryLockSql, new { Key = LockKey }, cancellationToken: cancellationToken)))
        {
            logger.LogInformation("Upkeep: another instance is at work; skipping this round");
            foreach (var step in _steps)
            {
                await step.AfterOthersRoundAsync(connection, cancellationToken);
            }

            return false;
        }

        try
        {
            if (engine.IsCitus)
            {
                // Upkeep spans every shard: allowed on this connection, whatever the service's connections say.
                await connection.ExecuteAsync(new CommandDefinition("SET citus.multi_task_query_log_level = 'off'", cancellationToken: cancellationToken));
            }

            var round = new UpkeepRound(connection, settings, nowUtc);
            foreach (var step in _steps)
            {
                await step.RunAsync(round, cancellationToken);
            }

            return true;
        }
        finally
        {
            await connection.ExecuteAsync(new CommandDefinition(UnlockSql, new { Key = LockKey }, cancellationToken: CancellationToken.None));
        }
    }
}
