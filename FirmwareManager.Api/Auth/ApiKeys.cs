using System.Collections.Concurrent;
using System.Threading.Channels;
using Dapper;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Http;
using FirmwareManager.Api.Observability;
using Npgsql;

namespace FirmwareManager.Api.Auth;

/// <summary>Looks up the caller behind an API key digest, and notes that the key was used (<see cref="KeyUsage"/>).</summary>
/// <remarks>
/// A revoked key must fail on every instance within 5 seconds. Every change that makes a cached answer wrong moves
/// one number in its own transaction (<see cref="KeyChanges"/>, migration 0040); each instance reads it every
/// <see cref="WatchInterval"/> and forgets every answer when it moved. So a valid key's answer is kept for
/// <see cref="KeptWhileWatched"/>, provided the number was last read less than <see cref="CacheLifetime"/> ago
/// (else, as when the database cannot be read, for <see cref="CacheLifetime"/> from the lookup, as before 0040).
/// A revocation made through this instance forgets everything at once (<see cref="ForgetAll"/>),
/// and a lookup that read the database before a forgetting stores nothing (<see cref="_generation"/>).
/// In a large fleet most reports come from a key not seen for minutes, so most lookups miss: the misses of
/// concurrent requests are looked up together, one query for all the digests waiting at that moment. Hand-written
/// (not a caching library) for that grouping and for the revocation rules above (docs/performance.md, docs/reliability.md).
/// Bounded against floods of made-up keys: at most <see cref="MaxWaitingLookups"/> misses wait (then 503), known
/// and unknown keys are cached apart (<see cref="MaxCached"/> each), and a full cache drops its expired entries,
/// never the valid keys of the fleet for a flood's sake.
/// </remarks>
public sealed class ApiKeys : IAsyncDisposable
{
    public static readonly TimeSpan CacheLifetime = TimeSpan.FromSeconds(4);

    /// <summary>How long a valid key's answer is kept while the change number is watched (a bound on memory churn, not on safety).</summary>
    public static readonly TimeSpan KeptWhileWatched = TimeSpan.FromMinutes(10);

    /// <summary>How often the change number is read.</summary>
    public static readonly TimeSpan WatchInterval = TimeSpan.FromSeconds(1);
    public const int MaxCached = 200_000;

    /// <summary>Lookups waiting for the database at most; past it a request is answered 503 (<see cref="KeyLookupsOverloadedException"/>).</summary>
    public const int MaxWaitingLookups = 20_000;

    /// <summary>Digests asked in one query at most; lookups running at once.</summary>
    private const int MaxLookupGroup = 500, Lookers = 2;

    private readonly NpgsqlDataSource _dataSource;
    private readonly DatabaseEngine _engine;
    private readonly KeyUsage _usage;
    private readonly FirmwareMetrics _metrics;
    private readonly TimeSpan _cacheLifetime;
    private readonly ILogger<ApiKeys> _logger;
    private readonly Channel<PendingLookup> _misses = Channel.CreateBounded<PendingLookup>(
        new BoundedChannelOptions(MaxWaitingLookups) { FullMode = BoundedChannelFullMode.Wait });
    private readonly Task[] _lookers;
    private readonly Task _watcher;
    private readonly CancellationTokenSource _stopping = new();

    // When the last read of the change number that succeeded began (Environment.TickCount64): every change committed
    // before it has been seen. Long before any tick at first, so that nothing is kept past CacheLifetime unwatched.
    private long _watchedAt = long.MinValue / 2;
    private readonly TaskCompletionSource _firstWatched = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Completes once the change number has been read (and the cache forgotten) for the first time: for tests that need an answer to stay cached.</summary>
    internal Task FirstWatched => _firstWatched.Task;

    /// <param name="cacheLifetime"><see cref="CacheLifetime"/>, but for a test that must know no answer expires during it.</param>
    public ApiKeys(
        NpgsqlDataSource dataSource, KeyUsage usage, FirmwareMetrics metrics, DatabaseEngine engine, ILogger<ApiKeys> logger, TimeSpan? cacheLifetime = null)
    {
        _logger = logger;
        _cacheLifetime = cacheLifetime ?? CacheLifetime;
        _engine = engine;
        _dataSource = dataSource;
        _usage = usage;
        _metrics = metrics;
        _lookers = Enumerable.Range(0, Lookers).Select(_ => Task.Run(LookUpGroupsAsync)).ToArray();
        _watcher = Task.Run(WatchChangesAsync);
    }

    /// <param name="StoredAt">When the lookup was answered (Environment.TickCount64).</param>
    /// <param name="ExpiresAt">When it goes whatever else: <see cref="KeptWhileWatched"/> after for a caller, <see cref="CacheLifetime"/> for an unknown key.</param>
    private sealed record Cached(Caller? Caller, DateTime? LastUsedAt, long StoredAt, long ExpiresAt);

    // The change number (migration 0040).
    private const string ChangeNumberSql = "SELECT COALESCE(max(epoch), 0) FROM api_key_epoch";

    // Its one row made again should it be gone (a table emptied by hand, a partial restore): the number still moves.
    private const string MoveChangeNumberSql = """
        INSERT INTO api_key_epoch AS a (singleton, epoch)
        VALUES (true, 1)
        ON CONFLICT (singleton) DO UPDATE
        SET epoch = a.epoch + 1
        """;

    /// <summary>Whether <paramref name="entry"/> may answer at <paramref name="now"/>.</summary>
    private bool Usable(Cached entry, long now) =>
        entry.ExpiresAt > now
        && (now - entry.StoredAt < (long)_cacheLifetime.TotalMilliseconds || now - Volatile.Read(ref _watchedAt) < (long)_cacheLifetime.TotalMilliseconds);

    // Reads the change number every WatchInterval; forgets every answer when it moved.
    private async Task WatchChangesAsync()
    {
        long? seen = null;
        var failures = 0;
        while (!_stopping.IsCancellationRequested)
        {
            var began = Environment.TickCount64;
            try
            {
                await using var connection = await _dataSource.OpenConnectionAsync(_stopping.Token);
                var number = await connection.ExecuteScalarAsync<long>(new CommandDefinition(ChangeNumberSql, cancellationToken: _stopping.Token));
                // The first read forgets too: a lookup answered before it may predate a change it cannot tell from
                // the number alone (read for the first time), and would otherwise be kept as if watched.
                if (number != seen)
                {
                    ForgetAll();
                }

                seen = number;
                Volatile.Write(ref _watchedAt, began);
                _firstWatched.TrySetResult();
                failures = 0;
            }
            catch (Exception e) when (!_stopping.IsCancellationRequested)
            {
                // Answers then go after CacheLifetime, as before 0040; the log says so once, not every second.
                if (failures++ == 0)
                {
                    _logger.LogWarning("API keys: the change number cannot be read, cached lookups expire after {Seconds} s until it can: {Reason}",
                        _cacheLifetime.TotalSeconds, e.Message);
                }
            }
            catch (OperationCanceledException)
            {
                return;
            }

            try
            {
                await Task.Delay(WatchInterval, _stopping.Token);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    /// <summary>
    /// For a change that makes a cached lookup wrong (a key revoked, a device decommissioned, a member removed or made
    /// admin): moves the change number in the change's transaction, as its last statement, so that every instance
    /// forgets its cached lookups within <see cref="WatchInterval"/> of the commit. Changes across all projects take
    /// turns on this one row for as long as their commit takes.
    /// </summary>
    public static Task KeyChangesAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, CancellationToken cancellationToken) =>
        connection.ExecuteAsync(new CommandDefinition(MoveChangeNumberSql, transaction: transaction, cancellationToken: cancellationToken));

    /// <summary>A cache of digests, bounded: when full, its expired entries go; when none has expired, nothing new is kept.</summary>
    private sealed class BoundedCache
    {
        private readonly ConcurrentDictionary<string, Cached> _entries = new(StringComparer.Ordinal);

        // Counted here: ConcurrentDictionary.Count takes every one of its locks, on every cache miss.
        private int _count;
        private int _sweeping;

        public bool TryGet(string digest, out Cached? entry) => _entries.TryGetValue(digest, out entry);

        public void Store(string digest, Cached entry, long now)
        {
            if (Volatile.Read(ref _count) >= MaxCached)
            {
                Sweep(now);
                if (Volatile.Read(ref _count) >= MaxCached)
                {
                    return;
                }
            }

            if (_entries.TryAdd(digest, entry))
            {
                Interlocked.Increment(ref _count);
            }
            else
            {
                _entries[digest] = entry;
            }
        }

        /// <summary>Takes out <paramref name="entry"/> if it is still the one stored for <paramref name="digest"/>.</summary>
        public void Remove(string digest, Cached entry)
        {
            if (_entries.TryRemove(new KeyValuePair<string, Cached>(digest, entry)))
            {
                Interlocked.Decrement(ref _count);
            }
        }

        public void Clear()
        {
            _entries.Clear();
            Interlocked.Exchange(ref _count, 0);
        }

        private void Sweep(long now)
        {
            // One sweep at a time; the others meanwhile just do not cache.
            if (Interlocked.Exchange(ref _sweeping, 1) == 1)
            {
                return;
            }

            try
            {
                foreach (var (digest, entry) in _entries)
                {
                    if (entry.ExpiresAt <= now)
                    {
                        Remove(digest, entry);
                    }
                }
            }
            finally
            {
                Volatile.Write(ref _sweeping, 0);
            }
        }
    }

    private readonly BoundedCache _known = new();
    private readonly BoundedCache _unknown = new();

    // Advanced by every ForgetAll: a lookup stores its answer only if no ForgetAll came between its start and its
    // store, so an answer read before a revocation committed can never be cached after it.
    private long _generation;

    /// <summary>Whether an answer for the digest is kept, expired or not (for tests of the cache's bounds).</summary>
    internal bool HoldsAnswerFor(byte[] keyHash)
    {
        var digest = Convert.ToBase64String(keyHash);
        return _known.TryGet(digest, out _) || _unknown.TryGet(digest, out _);
    }

    /// <summary>Drops every cached answer: called after this instance revokes keys, decommissions or removes.</summary>
    public void ForgetAll()
    {
        Interlocked.Increment(ref _generation);
        _known.Clear();
        _unknown.Clear();
    }

    // The project of each of the group's digests (api_key_digests: one shard per digest on Citus).
    private const string FindProjectsSql = """
        SELECT key_hash AS KeyHash,
               project_id AS ProjectId
        FROM api_key_digests
        WHERE key_hash = ANY(@KeyHashes)
        """;

    // One project's callers among the group's digests ($1), in that project ($2): device and member keys live in
    // separate tables (each with its own foreign key), and one statement asks both. The project is one value, not
    // a list: Citus then sends the whole union to the project's shard as one task (docs/citus-plans.md), where a
    // list made it two tasks and a merge on the coordinator. A revoked key, a decommissioned device and a removed
    // member are all unknown here.
    private const string FindCallersInProjectSql = """
        SELECT k.key_hash,
               'device',
               d.id,
               d.project_id,
               NULL::text,
               k.id,
               k.key_prefix,
               k.last_used_at
        FROM device_api_keys AS k
        JOIN devices AS d ON d.project_id = k.project_id AND d.id = k.device_id
        WHERE k.key_hash = ANY($1)
          AND k.project_id = $2
          AND k.revoked_at IS NULL
          AND d.decommissioned_at IS NULL
        UNION ALL
        SELECT k.key_hash,
               'member',
               m.id,
               m.project_id,
               m.role,
               k.id,
               k.key_prefix,
               k.last_used_at
        FROM membership_api_keys AS k
        JOIN project_memberships AS m ON m.project_id = k.project_id AND m.id = k.membership_id
        WHERE k.key_hash = ANY($1)
          AND k.project_id = $2
          AND k.revoked_at IS NULL
          AND m.removed_at IS NULL
        """;

    // FindCallersInProjectSql for every project at once, on one PostgreSQL (LookUpAsync).
    private static readonly string FindCallersSql = FindCallersInProjectSql.Replace("\n  AND k.project_id = $2", "", StringComparison.Ordinal);

    public async Task<Caller?> FindCallerAsync(byte[] keyHash, CancellationToken cancellationToken)
    {
        var digest = Convert.ToBase64String(keyHash);
        var now = Environment.TickCount64;
        if ((_known.TryGet(digest, out var cached) || _unknown.TryGet(digest, out cached)) && Usable(cached!, now))
        {
            _metrics.KeyCache(hit: true);
            if (cached!.Caller is { } known)
            {
                _usage.Used(known.Kind, known.ProjectId, known.KeyId, cached.LastUsedAt);
            }

            return cached.Caller;
        }

        _metrics.KeyCache(hit: false);
        // Read before the lookup is queued, so before its query starts.
        var generation = Interlocked.Read(ref _generation);
        var pending = new PendingLookup(keyHash, digest);
        if (!_misses.Writer.TryWrite(pending))
        {
            throw _misses.Reader.Completion.IsCompleted
                ? new ObjectDisposedException(nameof(ApiKeys), "The service is stopping.")
                : new KeyLookupsOverloadedException();
        }

        // Only the wait is cancelled: the group's query is shared, and a read.
        var caller = await pending.Task.WaitAsync(cancellationToken);
        var entry = new Cached(caller.Caller, caller.LastUsedAt, now,
            now + (long)(caller.Caller is null ? _cacheLifetime : KeptWhileWatched).TotalMilliseconds);
        var cache = caller.Caller is null ? _unknown : _known;
        if (Interlocked.Read(ref _generation) == generation)
        {
            cache.Store(digest, entry, now);
            // A ForgetAll between the check and the store: it may have cleared before the store, so undo it.
            if (Interlocked.Read(ref _generation) != generation)
            {
                cache.Remove(digest, entry);
            }
        }

        return caller.Caller;
    }

    private async Task LookUpGroupsAsync()
    {
        var group = new List<PendingLookup>(MaxLookupGroup);
        while (await _misses.Reader.WaitToReadAsync())
        {
            group.Clear();
            while (group.Count < MaxLookupGroup && _misses.Reader.TryRead(out var pending))
            {
                group.Add(pending);
            }

            if (group.Count == 0)
            {
                continue;
            }

            await AnswerAsync(group);
        }
    }

    private async Task AnswerAsync(List<PendingLookup> group)
    {
        try
        {
            var found = await LookUpAsync(group);
            foreach (var pending in group)
            {
                pending.TrySetResult(found.TryGetValue(pending.Digest, out var caller) ? caller : (null, null));
            }
        }
        catch (PostgresException e) when (group.Count > 1 && e.SqlState.StartsWith("08", StringComparison.Ordinal))
        {
            // A node the group needed did not answer (on Citus, the worker of one digest's shard or of one project's):
            // each key alone, so that only the lookups that need that node fail.
            foreach (var pending in group)
            {
                await AnswerAsync([pending]);
            }
        }
        catch (Exception e)
        {
            foreach (var pending in group)
            {
                pending.TrySetException(e);
            }
        }
    }

    private async Task<Dictionary<string, (Caller? Caller, DateTime? LastUsedAt)>> LookUpAsync(List<PendingLookup> group)
    {
        var keyHashes = group.DistinctBy(p => p.Digest).Select(p => p.KeyHash).ToArray();
        await using var connection = await _dataSource.OpenConnectionAsync();
        var found = new Dictionary<string, (Caller?, DateTime?)>(StringComparer.Ordinal);
        await using var batch = new NpgsqlBatch(connection);
        if (_engine.IsCitus)
        {
            // The digests' projects first (api_key_digests is distributed by digest), then one statement per project
            // of the group, all in one round trip.
            var digests = (await connection.QueryAsync<(byte[] KeyHash, long ProjectId)>(
                new CommandDefinition(FindProjectsSql, new { KeyHashes = keyHashes }))).AsList();
            if (digests.Count == 0)
            {
                return found;
            }

            foreach (var project in digests.GroupBy(d => d.ProjectId))
            {
                batch.BatchCommands.Add(new NpgsqlBatchCommand(FindCallersInProjectSql)
                {
                    Parameters = { new() { Value = project.Select(d => d.KeyHash).ToArray() }, new() { Value = project.Key } },
                });
            }
        }
        else
        {
            // On one PostgreSQL a digest is unique in each key table (UNIQUE (key_hash), 0001 and 0002): no routing,
            // every digest of the group in one statement and one round trip.
            batch.BatchCommands.Add(new NpgsqlBatchCommand(FindCallersSql) { Parameters = { new() { Value = keyHashes } } });
        }

        // On PostgreSQL, always the generic plan (each digest through the unique key_hash indexes, right for every
        // group size up to MaxLookupGroup): PostgreSQL otherwise planned every lookup anew, and planning this union of
        // joins cost more than executing it (docs/performance.md, "The key lookup on its generic plan").
        GenericPlan.ReadOnly(batch, _engine);
        await using var reader = await batch.ExecuteReaderAsync();
        do
        {
            while (await reader.ReadAsync())
            {
                var kind = reader.GetString(1) == "device" ? CallerKind.Device : CallerKind.Member;
                var projectId = reader.GetInt64(3);
                var keyId = reader.GetInt64(5);
                _usage.Used(kind, projectId, keyId, reader.IsDBNull(7) ? null : reader.GetFieldValue<DateTime>(7));

                // Noted just now: later cache hits need not note it again.
                var caller = new Caller(kind, reader.GetInt64(2), projectId, reader.IsDBNull(4) ? null : reader.GetString(4), keyId, reader.GetString(6));
                found.TryAdd(Convert.ToBase64String(reader.GetFieldValue<byte[]>(0)), (caller, DateTime.UtcNow));
            }
        }
        while (await reader.NextResultAsync());

        return found;
    }

    /// <summary>Answers the lookups already waiting, then stops.</summary>
    public async ValueTask DisposeAsync()
    {
        _misses.Writer.TryComplete();
        await _stopping.CancelAsync();
        await Task.WhenAll(_lookers);
        await _watcher;
        _stopping.Dispose();
    }

    private sealed class PendingLookup(byte[] keyHash, string digest)
        : TaskCompletionSource<(Caller? Caller, DateTime? LastUsedAt)>(TaskCreationOptions.RunContinuationsAsynchronously)
    {
        public byte[] KeyHash { get; } = keyHash;

        public string Digest { get; } = digest;
    }
}

/// <summary>More key lookups wait for the database than <see cref="ApiKeys.MaxWaitingLookups"/>: answered 503 with Retry-After.</summary>
public sealed class KeyLookupsOverloadedException()
    : ServiceOverloadedException("Too many API keys are being looked up at once. Retry in 1 second; nothing was stored.", retryAfterSeconds: 1);
