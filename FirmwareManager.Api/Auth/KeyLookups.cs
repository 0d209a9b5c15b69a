using System.Threading.Channels;
using Dapper;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Http;
using Npgsql;

namespace FirmwareManager.Api.Auth;

/// <summary>A valid key as the database has it: whose it is (a device or a member), in which project, and when it was last noted used.</summary>
public sealed record FoundKey(byte[] KeyHash, string Kind, long OwnerId, long ProjectId, string? Role, long KeyId, string KeyPrefix, DateTime? LastUsedAt)
{
    public Caller ToCaller() =>
        new(Kind == "device" ? CallerKind.Device : CallerKind.Member, OwnerId, ProjectId, Role, KeyId, KeyPrefix);
}

/// <summary>
/// Looks up key digests in the database, the lookups of concurrent requests together: in a large fleet most reports
/// come from a key not seen for minutes, so the misses of the cache arrive together, and one query answers every
/// digest waiting at that moment. Bounded: at most <see cref="MaxWaiting"/> lookups wait (then
/// <see cref="KeyLookupsOverloadedException"/>, a 503). Hand-written, as no library groups requests' reads into one
/// query with per-request answers.
/// </summary>
public sealed class KeyLookups : IAsyncDisposable
{
    /// <summary>Lookups waiting for the database at most; past it a request is answered 503.</summary>
    public const int MaxWaiting = 20_000;

    /// <summary>Digests asked in one query at most; lookups running at once.</summary>
    private const int MaxGroup = 500, Lookers = 2;

    // The project of each of the group's digests (api_key_digests: one shard per digest on Citus).
    private const string FindProjectsSql = """
        SELECT key_hash AS KeyHash,
               project_id AS ProjectId
        FROM api_key_digests
        WHERE key_hash = ANY(@KeyHashes)
        """;

    // One project's valid keys among the group's digests: device and member keys live in separate tables (each with
    // its own foreign key), and one statement asks both. The project is one value, not a list: Citus then sends the
    // whole union to the project's shard as one task (docs/citus-plans.md), where a list made it two tasks and a merge
    // on the coordinator. A revoked key, a decommissioned device and a removed member are all unknown here.
    internal const string FindKeysInProjectSql = """
        SELECT k.key_hash AS KeyHash,
               'device' AS Kind,
               d.id AS OwnerId,
               d.project_id AS ProjectId,
               NULL::text AS Role,
               k.id AS KeyId,
               k.key_prefix AS KeyPrefix,
               k.last_used_at AS LastUsedAt
        FROM device_api_keys AS k
        JOIN devices AS d ON d.project_id = k.project_id AND d.id = k.device_id
        WHERE k.key_hash = ANY(@KeyHashes)
          AND k.project_id = @ProjectId
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
        WHERE k.key_hash = ANY(@KeyHashes)
          AND k.project_id = @ProjectId
          AND k.revoked_at IS NULL
          AND m.removed_at IS NULL
        """;

    // The same for every project at once, on one PostgreSQL, where a digest is unique in each key table (UNIQUE
    // (key_hash), 0001 and 0002): no routing, every digest of the group in one statement and one round trip. The
    // statement above without its two project conditions (KeyCacheTests checks the text).
    internal static readonly string FindKeysSql = FindKeysInProjectSql.Replace("\n  AND k.project_id = @ProjectId", "", StringComparison.Ordinal);

    private readonly NpgsqlDataSource _dataSource;
    private readonly DatabaseEngine _engine;
    private readonly Channel<PendingLookup> _waiting = Channel.CreateBounded<PendingLookup>(
        new BoundedChannelOptions(MaxWaiting) { FullMode = BoundedChannelFullMode.Wait });
    private readonly Task[] _lookers;

    public KeyLookups(NpgsqlDataSource dataSource, DatabaseEngine engine)
    {
        _dataSource = dataSource;
        _engine = engine;
        _lookers = Enumerable.Range(0, Lookers).Select(_ => Task.Run(LookUpGroupsAsync)).ToArray();
    }

    /// <summary>The valid key with this digest, or null. Only the wait is cancelled: the group's query is shared, and a read.</summary>
    /// <exception cref="KeyLookupsOverloadedException">More lookups wait than <see cref="MaxWaiting"/>.</exception>
    public Task<FoundKey?> FindAsync(byte[] keyHash, KeyDigest digest, CancellationToken cancellationToken)
    {
        var pending = new PendingLookup(keyHash, digest);
        if (!_waiting.Writer.TryWrite(pending))
        {
            throw _waiting.Reader.Completion.IsCompleted
                ? new ObjectDisposedException(nameof(KeyLookups), "The service is stopping.")
                : new KeyLookupsOverloadedException();
        }

        return pending.Task.WaitAsync(cancellationToken);
    }

    private async Task LookUpGroupsAsync()
    {
        var group = new List<PendingLookup>(MaxGroup);
        while (await _waiting.Reader.WaitToReadAsync())
        {
            group.Clear();
            while (group.Count < MaxGroup && _waiting.Reader.TryRead(out var pending))
            {
                group.Add(pending);
            }

            if (group.Count > 0)
            {
                await AnswerAsync(group);
            }
        }
    }

    private async Task AnswerAsync(List<PendingLookup> group)
    {
        try
        {
            var found = await LookUpAsync(group);
            foreach (var pending in group)
            {
                pending.TrySetResult(found.GetValueOrDefault(pending.Digest));
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

    private async Task<Dictionary<KeyDigest, FoundKey>> LookUpAsync(List<PendingLookup> group)
    {
        var keyHashes = group.DistinctBy(p => p.Digest).Select(p => p.KeyHash).ToArray();
        await using var connection = await _dataSource.OpenConnectionAsync();
        var found = new Dictionary<KeyDigest, FoundKey>();
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
                batch.BatchCommands.Add(new NpgsqlBatchCommand(FindKeysInProjectSql)
                {
                    Parameters = { new("KeyHashes", project.Select(d => d.KeyHash).ToArray()), new("ProjectId", project.Key) },
                });
            }
        }
        else
        {
            batch.BatchCommands.Add(new NpgsqlBatchCommand(FindKeysSql) { Parameters = { new("KeyHashes", keyHashes) } });
        }

        // On PostgreSQL, always the generic plan (each digest through the unique key_hash indexes, right for every
        // group size up to MaxGroup): PostgreSQL otherwise planned every lookup anew, and planning this union of
        // joins cost more than executing it (docs/performance.md, "The key lookup on its generic plan").
        GenericPlan.ReadOnly(batch, _engine);
        await using var reader = await batch.ExecuteReaderAsync();
        do
        {
            if (reader.FieldCount == 0)
            {
                continue;
            }

            var parse = reader.GetRowParser<FoundKey>();
            while (await reader.ReadAsync())
            {
                var key = parse(reader);
                found.TryAdd(new KeyDigest(key.KeyHash), key);
            }
        }
        while (await reader.NextResultAsync());

        return found;
    }

    /// <summary>Answers the lookups already waiting, then stops.</summary>
    public async ValueTask DisposeAsync()
    {
        _waiting.Writer.TryComplete();
        await Task.WhenAll(_lookers);
    }

    private sealed class PendingLookup(byte[] keyHash, KeyDigest digest)
        : TaskCompletionSource<FoundKey?>(TaskCreationOptions.RunContinuationsAsynchronously)
    {
        public byte[] KeyHash { get; } = keyHash;

        public KeyDigest Digest { get; } = digest;
    }
}

/// <summary>More key lookups wait for the database than <see cref="KeyLookups.MaxWaiting"/>: answered 503 with Retry-After.</summary>
public sealed class KeyLookupsOverloadedException()
    : ServiceOverloadedException("Too many API keys are being looked up at once. Retry in 1 second; nothing was stored.", retryAfterSeconds: 1);
