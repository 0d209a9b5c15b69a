using System.ComponentModel.DataAnnotations;
using System.Threading.Channels;
using Dapper;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Observability;
using Microsoft.Extensions.Options;
using Npgsql;

namespace FirmwareManager.Api.Projections;

/// <summary>The <c>FirmwareManager:Projections</c> section: how this instance projects the feeds.</summary>
public sealed class ProjectionOptions
{
    public const string Section = "FirmwareManager:Projections";

    /// <summary>Whether this instance projects at all (an instance that only serves reads may leave it to others).</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>Events a step applies at most: a project's turn, so that one project's backlog never holds back another's.</summary>
    [Range(1, 100_000)]
    public int StepSize { get; set; } = 5000;

    /// <summary>Steps this instance runs at once, each on its own connection, each for another project.</summary>
    [Range(1, 16)]
    public int Workers { get; set; } = 2;

    /// <summary>
    /// How often this instance looks for projects whose feed is ahead of their position (another instance's reports, or
    /// a stopped instance's projects), in milliseconds. Reports this instance stored are projected at once. Also how long
    /// a project waits for this instance's next step after one found it held by another instance's step.
    /// </summary>
    [Range(20, 60_000)]
    public int DiscoveryIntervalMs { get; set; } = 500;

    /// <summary>
    /// The least time between the starts of two steps of one project, in milliseconds, unless a full step's events wait:
    /// under steady reports a step takes what came in meanwhile, and a larger step costs less per event (bench/step-plans.sh
    /// on 100,000 devices: 259 µs an event in a step of 10, 115 in one of 250, 81 in one of 1,000), besides a step's own
    /// round trips and commit. A project's first step after a quiet spell starts at once. 0: each step starts as soon as
    /// events wait.
    /// </summary>
    [Range(0, 10_000)]
    public int StepIntervalMs { get; set; } = 200;

    /// <summary>How long a read with <c>min_position</c> waits for the projection, in milliseconds, before it answers 503.</summary>
    [Range(0, 30_000)]
    public int MaxWaitMs { get; set; } = 5000;

    /// <summary>/health reports a projection whose events have waited this many seconds without it moving.</summary>
    [Range(1, 3600)]
    public int StalledAfterSeconds { get; set; } = 30;

    /// <summary>
    /// With one database host, how old this instance's knowledge of a project's position may be before a read of
    /// projected state reads it again, in milliseconds (<see cref="ProjectedPositions"/>); 0: every read reads it.
    /// </summary>
    [Range(0, 60_000)]
    public int PositionRefreshMs { get; set; } = 1000;
}

/// <summary>
/// Projects each project's new events into the derived state, on every instance (<see cref="ProjectionSteps"/>).
/// Projects with events waiting are queued once each and taken in turn: a worker runs one bounded step of a project,
/// then puts it at the back of the queue when more waits, so every project with new events gets a step before any
/// gets a second, and a project's next step waits until <see cref="ProjectionOptions.StepIntervalMs"/> after its last
/// began (unless that step was full), so that steady reports make steps of some size. Reports this instance commits
/// queue their project at once (<see cref="Notify"/>); a discovery
/// every <see cref="ProjectionOptions.DiscoveryIntervalMs"/> finds the rest (one statement over every shard on Citus,
/// like the webhook sender's). Several instances share the work through the position's row lock: a step finding it
/// held does nothing, and the project's next turn on this instance waits <see cref="ProjectionOptions.DiscoveryIntervalMs"/>
/// (its reports meanwhile queue nothing sooner), so a stopped instance's projects are taken over at the next discovery
/// and a running one's are not claimed again at every report.
/// </summary>
public sealed class Projector : BackgroundService
{
    // Projects whose feed is ahead of their position, with when their oldest waiting event came in, where known.
    private const string BehindSql = """
        SELECT a.project_id AS ProjectId,
               a.last_arrival - COALESCE(p.position, 0) AS Waiting,
               COALESCE(p.position, 0) AS Position
        FROM project_event_arrivals AS a
        LEFT JOIN project_projections AS p ON p.project_id = a.project_id
        WHERE a.last_arrival > COALESCE(p.position, 0)
        """;

    private readonly ProjectionSteps _steps;
    private readonly NpgsqlDataSource _dataSource;
    private readonly DatabaseEngine _engine;
    private readonly ProjectionMetrics _metrics;
    private readonly ProjectionOptions _options;
    private readonly ILogger<Projector> _logger;
    private readonly Channel<long> _queue = Channel.CreateUnbounded<long>();
    private readonly HashSet<long> _queued = [];

    // When each project's next step may start (Environment.TickCount64), after a step of this instance that was not full
    // or that found the project held by another's.
    private readonly Dictionary<long, long> _notBefore = [];

    // Projects with a step of this instance running, and those of them queued meanwhile: a second worker does not
    // start a step that would only find the position locked; the project is queued again when the running one ends.
    private readonly HashSet<long> _running = [];
    private readonly HashSet<long> _again = [];

    // Projects found behind, with the position they had and since when they have had it.
    private Dictionary<long, (long Position, DateTime Since)> _behindSince = [];
    private readonly Lock _lock = new();

    public Projector(
        ProjectionSteps steps, NpgsqlDataSource dataSource, DatabaseEngine engine, ProjectionMetrics metrics, IOptions<ProjectionOptions> options,
        ILogger<Projector> logger)
    {
        _steps = steps;
        _dataSource = dataSource;
        _engine = engine;
        _metrics = metrics;
        _options = options.Value;
        _logger = logger;
    }

    /// <summary>
    /// What the last discovery found: events waiting in all, and since when the longest-stuck project behind has not
    /// moved (null when none is behind). Replaced whole by each discovery (read by the health check's thread).
    /// </summary>
    public Seen LastSeen { get; private set; } = new(0, null);

    public sealed record Seen(long Waiting, DateTime? StuckSince);

    /// <summary>Queues the project for a step (its feed moved): now, unless it is queued already.</summary>
    public void Notify(long projectId)
    {
        if (!_options.Enabled)
        {
            return;
        }

        lock (_lock)
        {
            if (!_queued.Add(projectId))
            {
                return;
            }
        }

        _queue.Writer.TryWrite(projectId);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (!_options.Enabled)
        {
            return;
        }

        var workers = Enumerable.Range(0, _options.Workers).Select(_ => Task.Run(() => WorkAsync(stoppingToken), stoppingToken)).ToList();
        workers.Add(Task.Run(() => DiscoverAsync(stoppingToken), stoppingToken));
        try
        {
            await Task.WhenAll(workers);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    private async Task DiscoverAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(_options.DiscoveryIntervalMs));
        do
        {
            try
            {
                await using var connection = await _dataSource.OpenConnectionAsync(stoppingToken);
                await using var transaction = await connection.BeginTransactionAsync(stoppingToken);
                if (_engine.IsCitus)
                {
                    // The one statement that spans projects, as the webhook sender's: allowed whatever the service's
                    // connections say, for this transaction only.
                    await connection.ExecuteAsync(new CommandDefinition(
                        "SET LOCAL citus.multi_task_query_log_level = 'off'", transaction: transaction, cancellationToken: stoppingToken));
                }

                var behind = (await connection.QueryAsync<(long ProjectId, long Waiting, long Position)>(
                    new CommandDefinition(BehindSql, transaction: transaction, cancellationToken: stoppingToken))).AsList();
                await transaction.CommitAsync(stoppingToken);
                var now = DateTime.UtcNow;
                _behindSince = behind.ToDictionary(b => b.ProjectId, b =>
                    _behindSince.TryGetValue(b.ProjectId, out var before) && before.Position == b.Position ? before : (b.Position, now));
                LastSeen = new Seen(behind.Sum(b => b.Waiting), _behindSince.Count == 0 ? null : _behindSince.Values.Min(b => b.Since));
                _metrics.Waiting(LastSeen.Waiting);
                foreach (var project in behind)
                {
                    Notify(project.ProjectId);
                }
            }
            catch (Exception e) when (!stoppingToken.IsCancellationRequested)
            {
                _logger.LogWarning("Looking for projects to project failed, trying again: {Reason}", e.Message);
            }
        }
        while (await timer.WaitForNextTickAsync(stoppingToken));
    }

    private async Task WorkAsync(CancellationToken stoppingToken)
    {
        await foreach (var projectId in _queue.Reader.ReadAllAsync(stoppingToken))
        {
            long wait;
            lock (_lock)
            {
                wait = _notBefore.GetValueOrDefault(projectId) - Environment.TickCount64;
                if (wait <= 0 || _running.Contains(projectId))
                {
                    _queued.Remove(projectId);
                }

                if (_running.Contains(projectId))
                {
                    _again.Add(projectId);
                    continue;
                }

                if (wait <= 0)
                {
                    _running.Add(projectId);
                }
            }

            if (wait > 0)
            {
                // Its turn comes when the interval has passed; it stays queued meanwhile (a report's Notify adds
                // nothing) and holds no worker.
                _ = RequeueAsync(projectId, wait, stoppingToken);
                continue;
            }

            var again = false;
            try
            {
                var started = DateTime.UtcNow;
                var startedTicks = Environment.TickCount64;
                var outcome = await _steps.RunAsync(projectId, _options.StepSize, stoppingToken);
                if (!outcome.Claimed)
                {
                    // Another instance's step holds the position (or, during an upgrade, an older instance's): it is
                    // projecting these events now. Without a pause this instance's own reports would queue the project
                    // again at once, each time a claim of its own that finds the row locked (one at every group commit).
                    lock (_lock)
                    {
                        _notBefore[projectId] = startedTicks + _options.DiscoveryIntervalMs;
                    }

                    _metrics.ClaimMissed();
                }
                else if (outcome.To > outcome.From)
                {
                    lock (_lock)
                    {
                        _notBefore[projectId] = outcome.Events >= _options.StepSize ? 0 : startedTicks + _options.StepIntervalMs;
                    }

                    _metrics.Stepped(outcome.Events, DateTime.UtcNow - started, outcome.OldestReceivedAt is { } oldest ? DateTime.UtcNow - oldest : null);
                    Stepped?.Invoke(projectId, outcome.To);
                }

                again = outcome.MoreWaiting;
            }
            catch (Exception e) when (!stoppingToken.IsCancellationRequested)
            {
                // Nothing of the step was kept: the discovery queues the project again, or a report does.
                _logger.LogWarning("A projection step of project {ProjectId} failed, to be tried again: {Reason}", projectId, e.Message);
                await Task.Delay(TimeSpan.FromMilliseconds(100), stoppingToken);
            }
            finally
            {
                lock (_lock)
                {
                    _running.Remove(projectId);
                    again |= _again.Remove(projectId);
                }
            }

            if (again)
            {
                Notify(projectId);
            }
        }
    }

    private async Task RequeueAsync(long projectId, long delayMs, CancellationToken stoppingToken)
    {
        try
        {
            await Task.Delay(TimeSpan.FromMilliseconds(delayMs), stoppingToken);
            _queue.Writer.TryWrite(projectId);
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>Raised after each of this instance's steps that moved a position: the project, its new position.</summary>
    public event Action<long, long>? Stepped;
}

public static class ProjectionExtensions
{
    /// <summary>The projection step, the background projector (<see cref="ProjectionOptions"/>) and its health check.</summary>
    public static IServiceCollection AddProjections(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddSettings<ProjectionOptions>(configuration, ProjectionOptions.Section);
        services.AddSingleton<ProjectionSteps>();
        // The step's changes that the features' projections read, derived at its start and deleted at its end.
        services.AddSingleton<IProjection, StepChanges>();
        services.AddSingleton(sp => new ProjectedPositions(sp.GetRequiredService<IOptions<ProjectionOptions>>().Value.PositionRefreshMs));
        services.AddSingleton<ProjectionMetrics>();
        services.AddSingleton<ProjectionRecount>();
        services.AddSingleton<Projector>();
        services.AddHostedService(sp => sp.GetRequiredService<Projector>());
        services.AddHealthChecks().AddCheck<ProjectionHealthCheck>("projection");
        return services;
    }
}

/// <summary>
/// Unhealthy when a project's events have waited <see cref="ProjectionOptions.StalledAfterSeconds"/> with its position
/// not moving, as this instance's last look found (a projection that has stopped: every instance's steps fail, or
/// none runs them). A database that does not answer is the database check's to report.
/// </summary>
internal sealed class ProjectionHealthCheck(Projector projector, IOptions<ProjectionOptions> options) : Microsoft.Extensions.Diagnostics.HealthChecks.IHealthCheck
{
    public Task<Microsoft.Extensions.Diagnostics.HealthChecks.HealthCheckResult> CheckHealthAsync(
        Microsoft.Extensions.Diagnostics.HealthChecks.HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var limit = TimeSpan.FromSeconds(options.Value.StalledAfterSeconds);
        var now = DateTime.UtcNow;
        if (options.Value.Enabled && projector.LastSeen.StuckSince is { } since && now - since > limit)
        {
            return Task.FromResult(Microsoft.Extensions.Diagnostics.HealthChecks.HealthCheckResult.Unhealthy(
                $"The projection has not moved for {(now - since).TotalSeconds:F0} s while {projector.LastSeen.Waiting} events wait."));
        }

        return Task.FromResult(Microsoft.Extensions.Diagnostics.HealthChecks.HealthCheckResult.Healthy());
    }
}
