using System.ComponentModel.DataAnnotations;
using System.Diagnostics;
using System.Threading.Channels;
using FirmwareManager.Api.Observability;
using FirmwareManager.Api.Projections;
using Microsoft.Extensions.Options;
using Npgsql;

namespace FirmwareManager.Api.Firmware;

/// <summary>The <c>FirmwareManager:Ingest</c> section: how reports are committed together.</summary>
public sealed class IngestOptions
{
    public const string Section = "FirmwareManager:Ingest";

    /// <summary>
    /// Reports of different devices that wait at the same moment are stored in one transaction (on Citus, one per
    /// project), up to this many events (a batch counts its events; a larger batch goes alone). 1 = one transaction per
    /// report or batch.
    /// </summary>
    [Range(1, 10000)]
    public int MaxGroupSize { get; set; } = 1000;

    /// <summary>
    /// Groups recorded at the same time, each by its own writer (on its own pooled connection, on Citus one per project
    /// of the group). A project is in one writer's group at a time.
    /// </summary>
    [Range(1, 64)]
    public int Writers { get; set; } = 2;
}

public static class ReportGroupCommitExtensions
{
    public static IServiceCollection AddReportGroupCommit(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddSettings<IngestOptions>(configuration, IngestOptions.Section);
        return services.AddSingleton<ReportGroupCommit>();
    }
}

/// <summary>
/// Group commit for device reports and batches. A request waits while a writer stores its report (or batch)
/// together with every other waiting at that moment (one per device, up to
/// <see cref="IngestOptions.MaxGroupSize"/> events) in one transaction (on Citus, one per project), and is answered
/// only after that transaction has committed: what is acknowledged is as durable as with one transaction per report,
/// but PostgreSQL runs one transaction of a few statements per project, and flushes its log once, per group.
/// Under light load a group is one report and nothing waits; under heavy load groups grow by themselves.
/// A report whose device already has one in the group waits for the next group, so that each device's reports
/// are still recorded one transaction at a time, each with its own receive time. A project is in one writer's
/// group at a time: a project flooding batches keeps one writer busy, never all of them, and the others' groups
/// never wait for its feed number; while other projects report, it rests after each of its large groups as long as
/// the group took, so that it has that writer at most half the time.
/// Hand-written: no library batches requests into one PostgreSQL transaction with per-request answers, and it
/// about tripled ingest on the benchmark fleet (docs/performance.md, "Group commit").
/// </summary>
public sealed class ReportGroupCommit : IAsyncDisposable
{
    private readonly Channel<PendingReport> _queue;
    private readonly FirmwareEvents _events;
    private readonly FirmwareMetrics _metrics;
    private readonly Projector _projector;
    private readonly ILogger<ReportGroupCommit> _logger;
    private readonly int _maxGroupSize;
    private readonly Task[] _writers;

    // Which writer's group holds each project now: a project is in one writer's group at a time (its transactions
    // commit one after another anyway, on its feed number), so the other writers stay free for other projects.
    private readonly Dictionary<long, Writer> _owners = [];
    private readonly Lock _ownersLock = new();

    // Reports received and not yet in a group's transaction: in the queue, set aside for a writer's next group (a
    // device's second report, a resting project's), or handed to the writer whose group holds their project.
    private int _waiting;

    // A project with at least this many events in a group it had at least half of rests afterwards (below), while
    // another project reports: a batch flood's groups, never a few single reports'.
    private const int RestAfterEvents = 100;

    // "While another project reports": another project's group committed within this time.
    private const long OthersReportedWithinMs = 1000;

    // When each project's reports last committed (Environment.TickCount64), for the last OthersReportedWithinMs.
    private readonly Dictionary<long, long> _lastCommitted = [];

    // The projects at rest, and until when (Environment.TickCount64). A project that had at least RestAfterEvents
    // events and half of a group rests, while another project reports, for as long as that group's transaction took:
    // a writer that takes one of its reports meanwhile sets it aside, and takes other projects'. So a project flooding
    // batches has a writer at most half the time while others report, and the database's time it leaves goes to them
    // (docs/performance.md, "A flood at rest"); alone, it never rests. No writer holds a resting project: each one
    // waits for the rests of the reports it has set aside, and takes whatever else comes meanwhile.
    private readonly Dictionary<long, long> _restingUntil = [];

    public ReportGroupCommit(
        FirmwareEvents events, FirmwareMetrics metrics, Projector projector, IOptions<IngestOptions> options, ILogger<ReportGroupCommit> logger)
    {
        _events = events;
        _projector = projector;
        _metrics = metrics;
        _logger = logger;
        _maxGroupSize = options.Value.MaxGroupSize;
        _queue = Channel.CreateUnbounded<PendingReport>(new UnboundedChannelOptions { SingleReader = options.Value.Writers == 1 });
        _writers = Enumerable.Range(0, options.Value.Writers).Select(_ => Task.Run(() => WriteGroupsAsync(new Writer()))).ToArray();
        metrics.ObserveWaitingReports(() => Waiting);
    }

    /// <summary>Reports received and not yet taken into a group's transaction (or dropped, their request gone).</summary>
    public int Waiting => Volatile.Read(ref _waiting);

    /// <summary>
    /// Stores the report, or finds the identical one already stored; null when the device does not exist. Returns
    /// once the report's transaction has committed. A request's time limit (<paramref name="timeout"/>) or its
    /// client hanging up withdraws a report still queued; once the report is in a group's transaction, only
    /// that request's wait could end, so it waits for the outcome instead: one request's limit never fails the
    /// others of its group. The transaction is cancelled only when every request in it has reached its limit.
    /// </summary>
    /// <exception cref="Auth.CallerRevokedException">The key was revoked or the device decommissioned meanwhile.</exception>
    public async Task<RecordedEvent?> RecordAsync(
        long projectId, long deviceId, long keyId, NewFirmwareEvent report, CancellationToken timeout, CancellationToken cancellationToken)
    {
        var created = await CommitWithOthersAsync(new DeviceReports(projectId, deviceId, [report], keyId), timeout, cancellationToken);
        return created is null ? null
            : created.Count == 1 ? new RecordedEvent(created[0], Created: true)
            : await _events.FindRepeatAsync(projectId, deviceId, report, CancellationToken.None);
    }

    /// <summary>Stores a device's batch in one transaction, as <see cref="RecordAsync"/> does a report: the events it created, or null when the device does not exist.</summary>
    public async Task<IReadOnlyList<FirmwareEvent>?> RecordBatchAsync(
        long projectId, long deviceId, long keyId, IReadOnlyList<NewFirmwareEvent> reports, CancellationToken timeout,
        CancellationToken cancellationToken) =>
        await CommitWithOthersAsync(new DeviceReports(projectId, deviceId, reports, keyId), timeout, cancellationToken);

    private async Task<List<FirmwareEvent>?> CommitWithOthersAsync(
        DeviceReports reports, CancellationToken timeout, CancellationToken cancellationToken)
    {
        var pending = new PendingReport(reports, timeout, cancellationToken);
        Interlocked.Increment(ref _waiting);
        if (!_queue.Writer.TryWrite(pending))
        {
            Interlocked.Decrement(ref _waiting);
            throw new ObjectDisposedException(nameof(ReportGroupCommit), "The service is stopping.");
        }

        try
        {
            return await pending.Task.WaitAsync(cancellationToken);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested && !pending.TryWithdraw())
        {
            // Already in a transaction: its outcome is the answer (201 if it committed, late but true), so that
            // neither a 503 stands for a report stored after all nor this request's limit cancels the others'.
            return await pending.Task;
        }
    }

    private async Task WriteGroupsAsync(Writer self)
    {
        var group = new List<PendingReport>();
        var events = 0;
        var devices = new HashSet<long>();
        var projects = new HashSet<long>();
        var waiting = new List<PendingReport>();
        var nextWaiting = new List<PendingReport>();
        while (waiting.Count > 0 || await _queue.Reader.WaitToReadAsync())
        {
            foreach (var pending in waiting)
            {
                Take(pending);
            }
            while (events < _maxGroupSize && _queue.Reader.TryRead(out var pending))
            {
                Take(pending);
            }

            if (group.Count > 0)
            {
                var started = Environment.TickCount64;
                await CommitAsync(group);
                Rest(Environment.TickCount64 - started);
            }
            else if (nextWaiting.Count > 0)
            {
                // Nothing to store but reports of resting projects (with an empty group, nothing else is set aside):
                // until the first of their rests ends, or another report comes.
                long wait;
                lock (_ownersLock)
                {
                    wait = nextWaiting.Min(p => _restingUntil.GetValueOrDefault(p.Reports.ProjectId)) - Environment.TickCount64;
                }

                if (wait > 0)
                {
                    await Task.WhenAny(Task.Delay(TimeSpan.FromMilliseconds(wait)), _queue.Reader.WaitToReadAsync().AsTask());
                }
            }

            // The group's projects are free again; what other writers handed over meanwhile is this writer's to take next.
            lock (_ownersLock)
            {
                foreach (var project in projects)
                {
                    _owners.Remove(project);
                }

                nextWaiting.AddRange(self.HandedOver);
                self.HandedOver.Clear();
            }

            group.Clear();
            events = 0;
            devices.Clear();
            projects.Clear();
            waiting.Clear();
            (waiting, nextWaiting) = (nextWaiting, waiting);
        }

        void Take(PendingReport pending)
        {
            var size = pending.Reports.Events.Count;
            var projectId = pending.Reports.ProjectId;
            lock (_ownersLock)
            {
                if (_owners.TryGetValue(projectId, out var owner) && owner != self)
                {
                    // Another writer's group holds the project: its transactions would only wait for that one's
                    // commit (the feed number), so the report goes to that writer's next group instead.
                    owner.HandedOver.Add(pending);
                    return;
                }

                if (devices.Contains(pending.Reports.DeviceId) || (group.Count > 0 && events + size > _maxGroupSize)
                    || (_restingUntil.TryGetValue(projectId, out var until) && until > Environment.TickCount64 && !_queue.Reader.Completion.IsCompleted))
                {
                    nextWaiting.Add(pending);
                    return;
                }

                if (pending.CancellationToken.IsCancellationRequested || !pending.TryTake())
                {
                    // Its request is gone (the client hung up, or it reached its time limit and is answered 503): not stored.
                    pending.TryWithdraw();
                    pending.TrySetCanceled(pending.CancellationToken);
                    Interlocked.Decrement(ref _waiting);
                    return;
                }

                _owners[projectId] = self;
            }

            Interlocked.Decrement(ref _waiting);

            projects.Add(projectId);
            devices.Add(pending.Reports.DeviceId);
            group.Add(pending);
            events += size;
        }

        // After a group's commit, which took tookMs: its projects' last commit, and the rest of a project that had
        // RestAfterEvents events and half of the group, if another project committed within OthersReportedWithinMs
        // (this group's other projects among them).
        void Rest(long tookMs)
        {
            var now = Environment.TickCount64;
            var shares = group.GroupBy(p => p.Reports.ProjectId).Select(p => (Project: p.Key, Events: p.Sum(r => r.Reports.Events.Count))).ToList();
            lock (_ownersLock)
            {
                foreach (var stale in _lastCommitted.Where(c => now - c.Value > OthersReportedWithinMs).Select(c => c.Key).ToList())
                {
                    _lastCommitted.Remove(stale);
                }

                foreach (var rested in _restingUntil.Where(r => r.Value <= now).Select(r => r.Key).ToList())
                {
                    _restingUntil.Remove(rested);
                }

                foreach (var (project, _) in shares)
                {
                    _lastCommitted[project] = now;
                }

                foreach (var (project, projectEvents) in shares)
                {
                    if (projectEvents >= RestAfterEvents && projectEvents * 2 >= events && _lastCommitted.Keys.Any(other => other != project))
                    {
                        _restingUntil[project] = now + tookMs;
                    }
                }
            }
        }
    }

    /// <summary>A writer, and the reports other writers handed it because its group held their project.</summary>
    private sealed class Writer
    {
        public List<PendingReport> HandedOver { get; } = [];
    }

    // On one PostgreSQL, the whole group in one transaction: one commit, one flush of the log, whatever the number of
    // projects (ten projects' reports used to make ten transactions of a few reports each). On a database distributed
    // by project, one transaction per project of the group, at the same time, each on the project's node alone (no
    // two-phase commit).
    private Task CommitAsync(List<PendingReport> group) =>
        _events.OneTransactionSpansProjects
            ? CommitTogetherAsync(group)
            : Task.WhenAll(group.GroupBy(p => p.Reports.ProjectId).Select(project => CommitTogetherAsync(project.ToList())));

    private async Task CommitTogetherAsync(List<PendingReport> group)
    {
        // The group's transaction is cancelled (rolled back) only once every request in it has reached its time
        // limit: until then some request still waits for it, and one request's limit may only fail that request.
        using var deadline = new CancellationTokenSource();
        var running = group.Count;
        var registrations = group.ConvertAll(p => p.Timeout.Register(() =>
        {
            if (Interlocked.Decrement(ref running) == 0)
            {
                deadline.Cancel();
            }
        }));
        try
        {
            var began = Began(group);
            var results = await _events.RecordAsync(group.ConvertAll(p => p.Reports), deadline.Token);
            _metrics.IngestStage("transaction", Stopwatch.GetElapsedTime(began));
            _metrics.GroupCommitted(group.Sum(p => p.Reports.Events.Count));
            foreach (var projectId in group.Select(p => p.Reports.ProjectId).Distinct())
            {
                _projector.Notify(projectId);
            }

            for (var i = 0; i < group.Count; i++)
            {
                Answer(group[i], results[i]);
            }
        }
        catch (PostgresException e) when (RolledBack(e) && (group.Count > 1 || Database.Conflicts.IsConflict(e)))
        {
            // The server refused a statement and rolled the transaction back, nothing of it stored: a deadlock, a
            // row routed to a partition the upkeep job changed meanwhile, or one report the validation let through
            // and a constraint did not. Each report on its own (conflicts tried again), so that only its own
            // request fails.
            _logger.LogWarning("A group of {Reports} reports was rolled back ({SqlState}); recording them one by one",
                group.Count, e.SqlState);
            foreach (var pending in group)
            {
                await CommitAloneAsync(pending);
            }
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested)
        {
            // Rolled back, every request of the group at its limit: each is answered 503 by the timeout middleware.
            foreach (var pending in group)
            {
                pending.TrySetCanceled(pending.Timeout);
            }
        }
        catch (Exception e)
        {
            // The connection failed (the transaction may or may not have committed) or the database is
            // unreachable: every request of the group gets the error (503), and its device retries.
            foreach (var pending in group)
            {
                pending.TrySetException(e);
            }
        }
        finally
        {
            foreach (var registration in registrations)
            {
                await registration.DisposeAsync();
            }
        }
    }

    private static void Answer(PendingReport pending, (ReportOutcome Outcome, List<FirmwareEvent> Created) result)
    {
        switch (result.Outcome)
        {
            case ReportOutcome.Recorded:
                pending.TrySetResult(result.Created);
                break;
            case ReportOutcome.NoDevice:
                pending.TrySetResult(null);
                break;
            default:
                pending.TrySetException(new Auth.CallerRevokedException());
                break;
        }
    }

    private async Task CommitAloneAsync(PendingReport pending)
    {
        try
        {
            var began = Began([pending]);
            var results = await Database.Conflicts.RetryAsync(() => _events.RecordAsync([pending.Reports], pending.Timeout), pending.Timeout);
            _metrics.IngestStage("transaction", Stopwatch.GetElapsedTime(began));
            _metrics.GroupCommitted(pending.Reports.Events.Count);
            _projector.Notify(pending.Reports.ProjectId);
            Answer(pending, results[0]);
        }
        catch (Exception e)
        {
            pending.TrySetException(e);
        }
    }

    // An error the server reported for a statement of the transaction, on a connection still open: the server
    // rolled it back. Not so for classes 08 (connection) and 57 (shutdown, termination, cancel), where the
    // connection is gone or the outcome is not known.
    private static bool RolledBack(PostgresException e) =>
        !e.SqlState.StartsWith("08", StringComparison.Ordinal) && !e.SqlState.StartsWith("57", StringComparison.Ordinal);

    /// <summary>Lets the writers store every report already queued, then stops them (after the server has drained its requests).</summary>
    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        await Task.WhenAll(_writers);
    }

    // The moment a group's transaction begins; each report's wait in the queue until then goes to the metrics.
    private long Began(List<PendingReport> group)
    {
        var now = Stopwatch.GetTimestamp();
        foreach (var pending in group)
        {
            _metrics.IngestStage("queued", Stopwatch.GetElapsedTime(pending.ReceivedAt, now));
        }

        return now;
    }

    private sealed class PendingReport(DeviceReports reports, CancellationToken timeout, CancellationToken cancellationToken)
        : TaskCompletionSource<List<FirmwareEvent>?>(TaskCreationOptions.RunContinuationsAsynchronously)
    {
        public DeviceReports Reports { get; } = reports;

        /// <summary>When the report was queued (<see cref="Stopwatch.GetTimestamp"/>).</summary>
        public long ReceivedAt { get; } = Stopwatch.GetTimestamp();

        public CancellationToken Timeout { get; } = timeout;

        public CancellationToken CancellationToken { get; } = cancellationToken;

        private const int Queued = 0, Taken = 1, Withdrawn = 2;
        private int _state;

        /// <summary>A writer puts it in a group; false when its request withdrew it first.</summary>
        public bool TryTake() => Interlocked.CompareExchange(ref _state, Taken, Queued) == Queued;

        /// <summary>Its request stops waiting; false when a writer has taken it already.</summary>
        public bool TryWithdraw() => Interlocked.CompareExchange(ref _state, Withdrawn, Queued) != Taken;
    }
}
