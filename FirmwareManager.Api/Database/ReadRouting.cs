using System.Collections.Concurrent;
using System.Globalization;
using FirmwareManager.Api.Observability;
using Npgsql;
using NpgsqlTypes;

namespace FirmwareManager.Api.Database;

/// <summary>
/// What one request's reads need of the node that serves them, and what they saw: the position (a WAL location)
/// that node must have replayed (<see cref="Floor"/>), whether only the primary will do (<see cref="PrimaryOnly"/>),
/// and, after the read, the position that a later page must find at least (<see cref="Seen"/>), which cursors carry.
/// </summary>
public sealed class ReadContext
{
    /// <summary>For a caller with nothing to read its own writes by: any node.</summary>
    public static ReadContext Anywhere() => new();

    /// <summary>For a read of what this request has just written.</summary>
    public static ReadContext OnPrimary() => new() { PrimaryOnly = true };

    public bool PrimaryOnly { get; init; }

    public ulong Floor { get; private set; }

    public ulong Seen { get; internal set; }

    /// <summary>Raises the floor to <paramref name="position"/> (a cursor's, or the caller's last write's).</summary>
    public void AtLeast(ulong position) => Floor = Math.Max(Floor, position);

    /// <summary>
    /// For a read of projected state: the project whose projection position (migration 0037) the node serving the read
    /// must have reached (<see cref="MinProjected"/>), read on that node before the read (<see cref="Projected"/>).
    /// </summary>
    public long? ProjectionOf { get; set; }

    public long MinProjected { get; set; }

    /// <summary>The projection position the node that served the read had reached before it: what the answer includes.</summary>
    public long? Projected { get; set; }
}

/// <summary>
/// Reads that may be served by a hot standby. With one host in the connection string everything goes to it, at no
/// cost. With several (<c>Host=primary:5432,standby:5432</c>), writes, key lookups and the reads below that must see
/// their own writes use the primary (the service's <see cref="NpgsqlDataSource"/>); history, the feed, devices,
/// versions and audit reads run through <see cref="RunAsync"/>, which prefers a standby, provided it has replayed
/// the request's <see cref="ReadContext.Floor"/>:
/// <list type="bullet">
/// <item>a device reads on the primary (what it reported must be there when it follows <c>Location</c>);</item>
/// <item>a member's floor is its own last write through this instance, so a device it provisioned is listed at once;</item>
/// <item>a cursor carries the position its page was read at, so the next page, from whatever node, misses nothing the first saw;</item>
/// <item>a standby that is behind, cancels the statement (a recovery conflict) or goes away: the read runs again on the primary.</item>
/// </list>
/// In one round trip before the read, the node says whether it is in recovery and how far it has replayed; in one
/// after, how far it had got (a snapshot taken between the two sees at least everything before the first).
/// </summary>
public sealed class ReadRouting
{
    // Whether this is a standby, and its position: replayed WAL on a standby, inserted WAL on the primary.
    // (pg_current_wal_insert_lsn() fails during recovery; CASE evaluates only the branch it takes.)
    private const string PositionSql = """
        SELECT pg_is_in_recovery(),
               CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_insert_lsn() END
        """;

    // The project's projection position (migration 0037): 0 before its first step.
    private const string ProjectedSql = """
        SELECT COALESCE(max(position), 0)
        FROM project_projections
        WHERE project_id = $1
        """;

    private readonly NpgsqlDataSource _primary;
    private readonly NpgsqlDataSource? _preferStandby;
    private readonly FirmwareMetrics _metrics;
    private readonly ProjectedPositions _positions;
    private readonly ILogger<ReadRouting> _logger;

    /// <summary>
    /// How long a member key's last write stays its floor. Not until one standby has replayed it: with two or more,
    /// Npgsql may pick another, further behind, for the next read. A standby more than this far behind may serve a
    /// member a read without its own write (README, "Read replicas").
    /// </summary>
    public static readonly TimeSpan FloorKeptFor = TimeSpan.FromMinutes(5);

    // Member keys' last writes through this instance (WAL position, when), for FloorKeptFor.
    private readonly ConcurrentDictionary<long, (ulong Position, long At)> _lastWrites = new();

    public ReadRouting(
        NpgsqlDataSource primary, StandbyDataSource standby, FirmwareMetrics metrics, ProjectedPositions positions, ILogger<ReadRouting> logger)
    {
        _primary = primary;
        _preferStandby = standby.DataSource;
        _metrics = metrics;
        _positions = positions;
        _logger = logger;
    }

    /// <summary>Whether the connection string names more than one host, so that reads may go elsewhere.</summary>
    public bool HasStandby => _preferStandby is not null;

    /// <summary>The read context of a device: on the primary when there is a standby (what it reported must be there when it follows <c>Location</c>).</summary>
    public ReadContext ForDevice() => new() { PrimaryOnly = HasStandby };

    /// <summary>The read context of a member's key: from its last write through this instance on.</summary>
    public ReadContext ForMemberKey(long keyId)
    {
        var context = new ReadContext();
        if (_lastWrites.TryGetValue(keyId, out var written))
        {
            if (Environment.TickCount64 - written.At <= (long)FloorKeptFor.TotalMilliseconds)
            {
                context.AtLeast(written.Position);
            }
            else
            {
                _lastWrites.TryRemove(new KeyValuePair<long, (ulong, long)>(keyId, written));
            }
        }

        return context;
    }

    /// <summary>Remembers where the primary's WAL stood after a member key's write, as that key's floor from now on.</summary>
    public async Task RememberWriteAsync(long keyId, CancellationToken cancellationToken)
    {
        if (!HasStandby)
        {
            return;
        }

        await using var connection = await _primary.OpenConnectionAsync(cancellationToken);
        var (_, position) = await PositionAsync(connection, cancellationToken);
        var now = Environment.TickCount64;
        _lastWrites.AddOrUpdate(keyId, (position, now), (_, before) => (Math.Max(before.Position, position), now));
        if (_lastWrites.Count > 10_000)
        {
            ForgetFloorsOlderThan(now - (long)FloorKeptFor.TotalMilliseconds);
        }
    }

    /// <summary>
    /// Runs <paramref name="read"/> on a standby that has replayed <paramref name="context"/>'s floor, or else on the
    /// primary; also on the primary when <paramref name="retryOnPrimary"/> says the standby's answer may be stale.
    /// </summary>
    public async Task<T> RunAsync<T>(
        ReadContext context, Func<NpgsqlConnection, Task<T>> read, CancellationToken cancellationToken, Func<T, bool>? retryOnPrimary = null)
    {
        if (_preferStandby is null)
        {
            await using var only = await _primary.OpenConnectionAsync(cancellationToken);
            // One host: the position this instance saw last, when recent, is one the read includes (ProjectedPositions).
            if (context.ProjectionOf is { } projectId && _positions.TryGet(projectId, context.MinProjected, out var known))
            {
                context.Projected = known;
            }
            else
            {
                await ReadProjectedAsync(only, context, cancellationToken);
                if (context is { ProjectionOf: { } project, Projected: { } position })
                {
                    _positions.Observe(project, position);
                }
            }

            return await read(only);
        }

        if (!context.PrimaryOnly)
        {
            try
            {
                await using var connection = await _preferStandby.OpenConnectionAsync(cancellationToken);
                var (inRecovery, replayed) = await PositionAsync(connection, cancellationToken);
                if (!inRecovery)
                {
                    // No standby is up: PreferStandby fell back to the primary.
                    await ReadProjectedAsync(connection, context, cancellationToken);
                    var result = await read(connection);
                    context.Seen = (await PositionAsync(connection, cancellationToken)).Position;
                    _metrics.ReadServed("primary", "no_standby");
                    return result;
                }

                if (replayed >= context.Floor && await ReadProjectedAsync(connection, context, cancellationToken))
                {
                    var result = await read(connection);
                    if (retryOnPrimary is null || !retryOnPrimary(result))
                    {
                        context.Seen = (await PositionAsync(connection, cancellationToken)).Position;
                        _metrics.ReadServed("standby", "");
                        return result;
                    }

                    _metrics.ReadServed("primary", "not_on_standby");
                }
                else
                {
                    _metrics.ReadServed("primary", "standby_behind");
                }
            }
            catch (Exception e) when (IsStandbyFailure(e) && !cancellationToken.IsCancellationRequested)
            {
                _logger.LogWarning("A read on a standby failed, reading on the primary instead: {Reason}", e.Message);
                _metrics.ReadServed("primary", "standby_failed");
            }
        }
        else
        {
            _metrics.ReadServed("primary", "device");
        }

        await using var primary = await _primary.OpenConnectionAsync(cancellationToken);
        await ReadProjectedAsync(primary, context, cancellationToken);
        var answer = await read(primary);
        context.Seen = (await PositionAsync(primary, cancellationToken)).Position;
        return answer;
    }

    /// <summary>
    /// For a read too long to run again (an export): a connection, in a <c>REPEATABLE READ READ ONLY</c> transaction
    /// whose snapshot every statement on it reads, on a standby that has replayed <paramref name="context"/>'s floor
    /// (and its projection minimum) or else on the primary. <see cref="ReadContext.Seen"/> is the node's position once
    /// the snapshot was taken (at or past everything it sees), <see cref="ReadContext.Projected"/> the projection
    /// position it includes. Nothing is retried once the caller reads: a failure then is the caller's to report.
    /// </summary>
    public async Task<(NpgsqlConnection Connection, NpgsqlTransaction Transaction)> BeginSnapshotAsync(
        ReadContext context, int statementTimeoutMs, CancellationToken cancellationToken)
    {
        if (_preferStandby is not null && !context.PrimaryOnly)
        {
            NpgsqlConnection? standby = null;
            try
            {
                standby = await _preferStandby.OpenConnectionAsync(cancellationToken);
                var begun = await BeginSnapshotOnAsync(standby, context, statementTimeoutMs, onStandby: true, cancellationToken);
                if (begun.Transaction is not null)
                {
                    _metrics.ReadServed(begun.InRecovery ? "standby" : "primary", begun.InRecovery ? "" : "no_standby");
                    return (standby, begun.Transaction);
                }

                _metrics.ReadServed("primary", "standby_behind");
            }
            catch (Exception e) when (IsStandbyFailure(e) && !cancellationToken.IsCancellationRequested)
            {
                _logger.LogWarning("A read on a standby failed, reading on the primary instead: {Reason}", e.Message);
                _metrics.ReadServed("primary", "standby_failed");
            }

            if (standby is not null)
            {
                await standby.DisposeAsync();
            }
        }

        var primary = await _primary.OpenConnectionAsync(cancellationToken);
        try
        {
            var begun = await BeginSnapshotOnAsync(primary, context, statementTimeoutMs, onStandby: false, cancellationToken);
            return (primary, begun.Transaction!);
        }
        catch
        {
            await primary.DisposeAsync();
            throw;
        }
    }

    // The transaction, or null (rolled back) on a standby that has not replayed the floor or the projection minimum
    // (the primary has: the request waited for its projection there).
    private static async Task<(NpgsqlTransaction? Transaction, bool InRecovery)> BeginSnapshotOnAsync(
        NpgsqlConnection connection, ReadContext context, int statementTimeoutMs, bool onStandby, CancellationToken cancellationToken)
    {
        var transaction = await connection.BeginTransactionAsync(System.Data.IsolationLevel.RepeatableRead, cancellationToken);
        // No JIT: an export's statement is an index-ordered read with nothing to compile for, and its estimate (all of
        // a project's rows) crosses the JIT thresholds, whose compiling delayed the first byte by 0.4 s (bench/exports.sh).
        await using (var settings = new NpgsqlCommand(string.Create(CultureInfo.InvariantCulture,
            $"SET TRANSACTION READ ONLY; SET LOCAL statement_timeout = {statementTimeoutMs}; SET LOCAL jit = off"), connection, transaction))
        {
            await settings.ExecuteNonQueryAsync(cancellationToken);
        }

        var (inRecovery, position) = await PositionAsync(connection, cancellationToken);
        var reached = await ReadProjectedAsync(connection, context, cancellationToken);
        if (onStandby && inRecovery && (position < context.Floor || !reached))
        {
            await transaction.RollbackAsync(cancellationToken);
            return (null, inRecovery);
        }

        context.Seen = position;
        return (transaction, inRecovery);
    }

    // For a read of projected state, the project's position on this node, before the read: false when the node has
    // not reached the read's minimum (a standby behind; the caller waited for the primary to reach it).
    private static async Task<bool> ReadProjectedAsync(NpgsqlConnection connection, ReadContext context, CancellationToken cancellationToken)
    {
        if (context.ProjectionOf is not { } projectId)
        {
            return true;
        }

        await using var command = new NpgsqlCommand(ProjectedSql, connection) { Parameters = { new() { Value = projectId } } };
        context.Projected = (long)(await command.ExecuteScalarAsync(cancellationToken))!;
        return context.Projected >= context.MinProjected;
    }

    // Bounds the memory of floors: members that wrote once and never read again.
    private void ForgetFloorsOlderThan(long at)
    {
        foreach (var (keyId, written) in _lastWrites)
        {
            if (written.At < at)
            {
                _lastWrites.TryRemove(new KeyValuePair<long, (ulong, long)>(keyId, written));
            }
        }
    }

    private static async Task<(bool InRecovery, ulong Position)> PositionAsync(NpgsqlConnection connection, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(PositionSql, connection);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        await reader.ReadAsync(cancellationToken);
        // NULL: a standby that has replayed nothing yet.
        var position = reader.IsDBNull(1) ? 0UL : (ulong)reader.GetFieldValue<NpgsqlLogSequenceNumber>(1);
        return (reader.GetBoolean(0), position);
    }

    // A standby that went away (connection errors, shutdown) or cancelled the statement because replay needed what
    // it held: 40001 "canceling statement due to conflict with recovery", or 57P04 when its database was dropped.
    internal static bool IsStandbyFailure(Exception exception) =>
        DatabaseFailures.IsDatabaseUnavailable(exception) || exception is PostgresException { SqlState: "40001" or "57P04" };
}

/// <summary>The data source that prefers standbys, when the connection string names more than one host; null otherwise.</summary>
public sealed record StandbyDataSource(NpgsqlDataSource? DataSource);
