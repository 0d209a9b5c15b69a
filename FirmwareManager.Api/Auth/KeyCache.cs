using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.ComponentModel.DataAnnotations;
using Dapper;
using Microsoft.Extensions.Options;
using Npgsql;

namespace FirmwareManager.Api.Auth;

/// <summary>A key's SHA-256 digest as a value: the cache's key, 32 bytes inline, no string per lookup.</summary>
public readonly struct KeyDigest : IEquatable<KeyDigest>
{
    private readonly ulong _a, _b, _c, _d;

    public KeyDigest(ReadOnlySpan<byte> sha256)
    {
        if (sha256.Length != 32)
        {
            throw new ArgumentException("A key digest is 32 bytes (SHA-256).", nameof(sha256));
        }

        (_a, _b, _c, _d) = (BinaryPrimitives.ReadUInt64LittleEndian(sha256), BinaryPrimitives.ReadUInt64LittleEndian(sha256[8..]),
            BinaryPrimitives.ReadUInt64LittleEndian(sha256[16..]), BinaryPrimitives.ReadUInt64LittleEndian(sha256[24..]));
    }

    public bool Equals(KeyDigest other) => _a == other._a && _b == other._b && _c == other._c && _d == other._d;

    public override bool Equals(object? obj) => obj is KeyDigest other && Equals(other);

    // A digest's bits are uniform already.
    public override int GetHashCode() => (int)_a;

    public static bool operator ==(KeyDigest left, KeyDigest right) => left.Equals(right);

    public static bool operator !=(KeyDigest left, KeyDigest right) => !left.Equals(right);
}

/// <summary>The <c>FirmwareManager:KeyCache</c> section.</summary>
public sealed class KeyCacheOptions
{
    public const string Section = "FirmwareManager:KeyCache";

    /// <summary>
    /// Answers kept at most, for valid keys and for unknown keys each (about 230 bytes of memory per valid key). A fleet
    /// whose devices all report within <see cref="KeyCache.KeptWhileWatched"/> is served from memory when it fits.
    /// </summary>
    [Range(1_000, 10_000_000)]
    public int MaxEntries { get; set; } = 200_000;
}

/// <summary>
/// What key lookups answered, kept while it cannot be wrong. A revoked key must fail on every instance within 5
/// seconds. Every change that makes a cached answer wrong moves one number in its own transaction
/// (<see cref="InvalidateEverywhereAsync"/>, migration 0040); each instance reads it every <see cref="WatchInterval"/>
/// and forgets every answer when it moved. So a valid key's answer is kept for <see cref="KeptWhileWatched"/>,
/// provided the number was last read less than <see cref="CacheLifetime"/> ago (else, as when the database cannot be
/// read, for <see cref="CacheLifetime"/> from the lookup). A revocation made through this instance forgets everything
/// at once (<see cref="ForgetAll"/>), and an answer read from the database before a forgetting is not stored
/// (<see cref="Generation"/>). Bounded against floods of made-up keys: known and unknown keys are kept apart
/// (<see cref="KeyCacheOptions.MaxEntries"/> each), and a full cache drops its expired entries (a sweep walks them all, so one
/// comes at most every MaxEntries / 100,000 seconds, never under a second apart), never the valid keys of the fleet for
/// a flood's sake.
/// </summary>
public sealed class KeyCache : IAsyncDisposable
{
    public static readonly TimeSpan CacheLifetime = TimeSpan.FromSeconds(4);

    /// <summary>How long a valid key's answer is kept while the change number is watched (a bound on memory churn, not on safety).</summary>
    public static readonly TimeSpan KeptWhileWatched = TimeSpan.FromMinutes(10);

    /// <summary>How often the change number is read.</summary>
    public static readonly TimeSpan WatchInterval = TimeSpan.FromSeconds(1);

    // The change number (migration 0040).
    private const string ChangeNumberSql = "SELECT COALESCE(max(epoch), 0) FROM api_key_epoch";

    // Its one row made again should it be gone (a table emptied by hand, a partial restore): the number still moves.
    private const string MoveChangeNumberSql = """
        INSERT INTO api_key_epoch AS a (singleton, epoch)
        VALUES (true, 1)
        ON CONFLICT (singleton) DO UPDATE
        SET epoch = a.epoch + 1
        """;

    private readonly NpgsqlDataSource _dataSource;
    private readonly ILogger<KeyCache> _logger;
    private readonly long _cacheLifetimeMs;
    private readonly BoundedCache _known, _unknown;
    private readonly Task _watcher;
    private readonly CancellationTokenSource _stopping = new();
    private readonly TaskCompletionSource _firstWatched = new(TaskCreationOptions.RunContinuationsAsynchronously);

    // When the last read of the change number that succeeded began (Environment.TickCount64): every change committed
    // before it has been seen. Long before any tick at first, so that nothing is kept past CacheLifetime unwatched.
    private long _watchedAt = long.MinValue / 2;

    // Advanced by every ForgetAll: a lookup stores its answer only if no ForgetAll came between its start and its
    // store, so an answer read before a revocation committed can never be cached after it.
    private long _generation;

    /// <param name="cacheLifetime"><see cref="CacheLifetime"/>, but for a test that must know no answer expires during it.</param>
    public KeyCache(NpgsqlDataSource dataSource, IOptions<KeyCacheOptions> options, ILogger<KeyCache> logger, TimeSpan? cacheLifetime = null)
    {
        _dataSource = dataSource;
        _logger = logger;
        _cacheLifetimeMs = (long)(cacheLifetime ?? CacheLifetime).TotalMilliseconds;
        _known = new BoundedCache(options.Value.MaxEntries);
        _unknown = new BoundedCache(options.Value.MaxEntries);
        _watcher = Task.Run(WatchChangesAsync);
    }

    /// <summary>Completes once the change number has been read (and the cache forgotten) for the first time: for tests that need an answer to stay cached.</summary>
    internal Task FirstWatched => _firstWatched.Task;

    /// <summary>Read before a lookup's query starts, and given back to <see cref="Store"/>.</summary>
    public long Generation => Interlocked.Read(ref _generation);

    /// <summary>A cached answer still usable: the key's caller and when the key was last noted used, or a null caller for a key known not to exist.</summary>
    public bool TryGet(KeyDigest digest, out Caller? caller, out DateTime? lastUsedAt)
    {
        var now = Environment.TickCount64;
        if ((_known.TryGet(digest, out var entry) || _unknown.TryGet(digest, out entry)) && Usable(entry, now))
        {
            (caller, lastUsedAt) = (entry.Caller, entry.LastUsedAt);
            return true;
        }

        (caller, lastUsedAt) = (null, null);
        return false;
    }

    /// <summary>Keeps a lookup's answer, unless the cache was forgotten since <paramref name="generation"/> was read.</summary>
    public void Store(KeyDigest digest, Caller? caller, DateTime? lastUsedAt, long generation)
    {
        var now = Environment.TickCount64;
        var entry = new Entry(caller, lastUsedAt, now, now + (caller is null ? _cacheLifetimeMs : (long)KeptWhileWatched.TotalMilliseconds));
        var cache = caller is null ? _unknown : _known;
        if (Generation != generation)
        {
            return;
        }

        cache.Store(digest, entry, now);
        // A ForgetAll between the check and the store: it may have cleared before the store, so undo it.
        if (Generation != generation)
        {
            cache.Remove(digest, entry);
        }
    }

    /// <summary>Drops every cached answer: called after this instance revokes keys, decommissions or removes.</summary>
    public void ForgetAll()
    {
        Interlocked.Increment(ref _generation);
        _known.Clear();
        _unknown.Clear();
    }

    /// <summary>Whether an answer for the digest is kept, expired or not (for tests of the cache's bounds).</summary>
    internal bool HoldsAnswerFor(byte[] keyHash) => _known.TryGet(new KeyDigest(keyHash), out _) || _unknown.TryGet(new KeyDigest(keyHash), out _);

    /// <summary>The sweeps of the unknown keys' cache so far, and how often a full cache sweeps at most (for tests of the cache's bounds).</summary>
    internal (int Sweeps, TimeSpan Interval) UnknownKeysSweeps => (_unknown.Sweeps, _unknown.SweepInterval);

    /// <summary>
    /// For a change that makes a cached lookup wrong (a key revoked, a device decommissioned, a member removed or made
    /// admin): moves the change number in the change's transaction, as its last statement, so that every instance
    /// forgets its cached lookups within <see cref="WatchInterval"/> of the commit. Changes across all projects take
    /// turns on this one row for as long as their commit takes.
    /// </summary>
    public static Task InvalidateEverywhereAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, CancellationToken cancellationToken) =>
        connection.ExecuteAsync(new CommandDefinition(MoveChangeNumberSql, transaction: transaction, cancellationToken: cancellationToken));

    /// <summary>Whether <paramref name="entry"/> may answer at <paramref name="now"/>.</summary>
    private bool Usable(Entry entry, long now) =>
        entry.ExpiresAt > now && (now - entry.StoredAt < _cacheLifetimeMs || now - Volatile.Read(ref _watchedAt) < _cacheLifetimeMs);

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
                // Answers then go after CacheLifetime; the log says so once, not every second.
                if (failures++ == 0)
                {
                    _logger.LogWarning("API keys: the change number cannot be read, cached lookups expire after {Seconds} s until it can: {Reason}",
                        _cacheLifetimeMs / 1000.0, e.Message);
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

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync();
        await _watcher;
        _stopping.Dispose();
    }

    /// <param name="StoredAt">When the lookup was answered (Environment.TickCount64).</param>
    /// <param name="ExpiresAt">When it goes whatever else: <see cref="KeptWhileWatched"/> after for a caller, <see cref="CacheLifetime"/> for an unknown key.</param>
    private readonly record struct Entry(Caller? Caller, DateTime? LastUsedAt, long StoredAt, long ExpiresAt);

    /// <summary>
    /// A cache of digests, bounded: when full, its expired entries go, swept out at most once per
    /// <see cref="SweepInterval"/>; until a sweep frees room, nothing new is kept.
    /// </summary>
    private sealed class BoundedCache(int maxEntries)
    {
        private readonly ConcurrentDictionary<KeyDigest, Entry> _entries = new();

        // A sweep walks every entry. A fleet larger than the cache keeps it full of answers that are all still valid,
        // so sweeping at every store into a full cache walked 200,000 entries for each lookup that missed, and found
        // nothing to drop (a million devices reading their histories with the default 200,000 entries: the API's CPU
        // a read 423 to 560 µs, and 238 to 403 µs with this bound; docs/performance.md). One sweep every
        // MaxEntries / 100,000 seconds at most, never under a second apart: a sweep of 200,000 entries takes
        // milliseconds, so a full cache spends well under 1% of a core on it.
        private readonly long _sweepIntervalMs = Math.Max(1_000, maxEntries / 100);

        // Counted here: ConcurrentDictionary.Count takes every one of its locks, on every cache miss.
        private int _count;

        // When a full cache may sweep next (Environment.TickCount64); the store that moves it on sweeps.
        private long _nextSweepAt = long.MinValue;

        private int _sweeps;

        /// <summary>Sweeps made (for tests of their bound).</summary>
        public int Sweeps => Volatile.Read(ref _sweeps);

        public TimeSpan SweepInterval => TimeSpan.FromMilliseconds(_sweepIntervalMs);

        public bool TryGet(KeyDigest digest, out Entry entry) => _entries.TryGetValue(digest, out entry);

        public void Store(KeyDigest digest, Entry entry, long now)
        {
            if (Volatile.Read(ref _count) >= maxEntries)
            {
                Sweep(now);
                if (Volatile.Read(ref _count) >= maxEntries)
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
        public void Remove(KeyDigest digest, Entry entry)
        {
            if (_entries.TryRemove(new KeyValuePair<KeyDigest, Entry>(digest, entry)))
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
            // One sweep per interval; the stores meanwhile just do not cache.
            var due = Volatile.Read(ref _nextSweepAt);
            if (now < due || Interlocked.CompareExchange(ref _nextSweepAt, now + _sweepIntervalMs, due) != due)
            {
                return;
            }

            Interlocked.Increment(ref _sweeps);
            foreach (var (digest, entry) in _entries)
            {
                if (entry.ExpiresAt <= now)
                {
                    Remove(digest, entry);
                }
            }
        }
    }
}
