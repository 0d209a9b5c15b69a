using System.Collections.Concurrent;
using Dapper;
using FirmwareManager.Api.Observability;
using Npgsql;

namespace FirmwareManager.Api.Auth;

/// <summary>Looks up the caller behind an API key digest, and notes that the key was used (<see cref="KeyUsage"/>).</summary>
/// <remarks>
/// Answers are cached for <see cref="CacheLifetime"/> (under the 5 seconds within which a revoked key must fail on
/// every instance), bounded to <see cref="MaxCached"/> digests. A revocation made through this instance forgets
/// everything at once (<see cref="ForgetAll"/>); other instances' caches expire on their own.
/// </remarks>
public sealed class ApiKeys(NpgsqlDataSource dataSource, KeyUsage usage, FirmwareMetrics metrics)
{
    public static readonly TimeSpan CacheLifetime = TimeSpan.FromSeconds(4);
    public const int MaxCached = 200_000;

    private sealed record Cached(Caller? Caller, DateTime? LastUsedAt, long ExpiresAt);

    private readonly ConcurrentDictionary<string, Cached> _cache = new(StringComparer.Ordinal);

    // Counted here: ConcurrentDictionary.Count takes every one of its locks, on every cache miss.
    private int _cachedCount;

    /// <summary>Drops every cached answer: called after this instance revokes keys, decommissions or removes.</summary>
    public void ForgetAll()
    {
        _cache.Clear();
        Interlocked.Exchange(ref _cachedCount, 0);
    }


    private sealed record CallerRow(string Kind, long Id, long ProjectId, string? Role, long KeyId, string KeyPrefix, DateTime? LastUsedAt);

    // Device and member keys live in separate tables (each with its own foreign key); one round trip asks both.
    // A revoked key, a decommissioned device and a removed member are all unknown here.
    private const string FindCallerSql = """
        SELECT 'device' AS Kind,
               d.id AS Id,
               d.project_id AS ProjectId,
               NULL::text AS Role,
               k.id AS KeyId,
               k.key_prefix AS KeyPrefix,
               k.last_used_at AS LastUsedAt
        FROM device_api_keys AS k
        JOIN devices AS d ON d.id = k.device_id
        WHERE k.key_hash = @KeyHash
          AND k.revoked_at IS NULL
          AND d.decommissioned_at IS NULL
        UNION ALL
        SELECT 'member' AS Kind,
               m.id AS Id,
               m.project_id AS ProjectId,
               m.role AS Role,
               k.id AS KeyId,
               k.key_prefix AS KeyPrefix,
               k.last_used_at AS LastUsedAt
        FROM membership_api_keys AS k
        JOIN project_memberships AS m ON m.id = k.membership_id
        WHERE k.key_hash = @KeyHash
          AND k.revoked_at IS NULL
          AND m.removed_at IS NULL
        LIMIT 1
        """;

    public async Task<Caller?> FindCallerAsync(byte[] keyHash, CancellationToken cancellationToken)
    {
        var digest = Convert.ToBase64String(keyHash);
        var now = Environment.TickCount64;
        if (_cache.TryGetValue(digest, out var cached) && cached.ExpiresAt > now)
        {
            metrics.KeyCache(hit: true);
            if (cached.Caller is { } known)
            {
                usage.Used(known.Kind, known.KeyId, cached.LastUsedAt);
            }

            return cached.Caller;
        }

        metrics.KeyCache(hit: false);
        var caller = await LookUpAsync(keyHash, cancellationToken);
        if (Volatile.Read(ref _cachedCount) >= MaxCached)
        {
            ForgetAll();
        }

        var entry = new Cached(caller.Caller, caller.LastUsedAt, now + (long)CacheLifetime.TotalMilliseconds);
        if (_cache.TryAdd(digest, entry))
        {
            Interlocked.Increment(ref _cachedCount);
        }
        else
        {
            _cache[digest] = entry;
        }
        return caller.Caller;
    }

    private async Task<(Caller? Caller, DateTime? LastUsedAt)> LookUpAsync(byte[] keyHash, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        var row = await connection.QuerySingleOrDefaultAsync<CallerRow>(
            new CommandDefinition(FindCallerSql, new { KeyHash = keyHash }, cancellationToken: cancellationToken));
        if (row is null)
        {
            return (null, null);
        }

        var kind = row.Kind == "device" ? CallerKind.Device : CallerKind.Member;
        usage.Used(kind, row.KeyId, row.LastUsedAt);

        // Noted just now: later cache hits need not note it again.
        return (new Caller(kind, row.Id, row.ProjectId, row.Role, row.KeyId, row.KeyPrefix), DateTime.UtcNow);
    }
}
