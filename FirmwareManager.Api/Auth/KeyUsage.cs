using System.Collections.Concurrent;
using Dapper;
using Microsoft.Extensions.Options;
using Npgsql;

namespace FirmwareManager.Api.Auth;

/// <summary>
/// Notes which keys were used and writes their <c>last_used_at</c> in one statement per table every
/// <c>FirmwareManager:KeyUsageFlushSeconds</c> (default 30), so authenticating never waits on a write. Each key is
/// written at most about once an hour; what is pending when the service stops is written then.
/// </summary>
public sealed class KeyUsage(NpgsqlDataSource dataSource, IOptions<FirmwareManagerOptions> options, ILogger<KeyUsage> logger) : BackgroundService
{
    private static readonly TimeSpan Resolution = TimeSpan.FromHours(1);

    private readonly ConcurrentDictionary<(long ProjectId, long KeyId), byte> _deviceKeys = new();
    private readonly ConcurrentDictionary<(long ProjectId, long KeyId), byte> _memberKeys = new();

    // One project at a time (one node on Citus), in id order, and skipping rows another transaction holds (a revocation, a change checking its actor's key):
    // the time of use is approximate, so a skipped key is written at the next flush instead of waiting or deadlocking.
    private const string TouchDeviceKeysSql = """
        UPDATE device_api_keys AS k
        SET last_used_at = now()
        FROM (
            SELECT project_id, id
            FROM device_api_keys
            WHERE project_id = @ProjectId
              AND id = ANY(@KeyIds)
            ORDER BY id
            FOR NO KEY UPDATE SKIP LOCKED
        ) AS locked
        WHERE k.project_id = @ProjectId
          AND k.project_id = locked.project_id
          AND k.id = locked.id
        RETURNING k.id
        """;

    private const string TouchMemberKeysSql = """
        UPDATE membership_api_keys AS k
        SET last_used_at = now()
        FROM (
            SELECT project_id, id
            FROM membership_api_keys
            WHERE project_id = @ProjectId
              AND id = ANY(@KeyIds)
            ORDER BY id
            FOR NO KEY UPDATE SKIP LOCKED
        ) AS locked
        WHERE k.project_id = @ProjectId
          AND k.project_id = locked.project_id
          AND k.id = locked.id
        RETURNING k.id
        """;

    private const string ExistingDeviceKeysSql = """
        SELECT id
        FROM device_api_keys
        WHERE project_id = @ProjectId
          AND id = ANY(@KeyIds)
        """;

    private const string ExistingMemberKeysSql = """
        SELECT id
        FROM membership_api_keys
        WHERE project_id = @ProjectId
          AND id = ANY(@KeyIds)
        """;

    /// <summary>Called on each authentication; cheap when the key was noted within the hour.</summary>
    public void Used(CallerKind kind, long projectId, long keyId, DateTime? lastUsedAt)
    {
        if (lastUsedAt is null || lastUsedAt < DateTime.UtcNow - Resolution)
        {
            (kind == CallerKind.Device ? _deviceKeys : _memberKeys).TryAdd((projectId, keyId), 0);
        }
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var interval = TimeSpan.FromSeconds(options.Value.KeyUsageFlushSeconds);
        using var timer = new PeriodicTimer(interval);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                await FlushAsync(stoppingToken);
            }
        }
        catch (OperationCanceledException)
        {
        }

        await FlushAsync(CancellationToken.None);
    }

    private async Task FlushAsync(CancellationToken cancellationToken)
    {
        try
        {
            await FlushAsync(_deviceKeys, DeviceKeys, cancellationToken);
            await FlushAsync(_memberKeys, MemberKeys, cancellationToken);
        }
        catch (Exception e) when (e is NpgsqlException or TimeoutException)
        {
            logger.LogWarning("Could not record key use, will retry: {Reason}", e.Message);
        }
    }

    /// <summary>The same two statements on each kind's table (device_api_keys, membership_api_keys).</summary>
    private sealed record KeyTable(string Touch, string Existing);

    private static readonly KeyTable DeviceKeys = new(TouchDeviceKeysSql, ExistingDeviceKeysSql);
    private static readonly KeyTable MemberKeys = new(TouchMemberKeysSql, ExistingMemberKeysSql);

    private async Task FlushAsync(
        ConcurrentDictionary<(long ProjectId, long KeyId), byte> pending, KeyTable table, CancellationToken cancellationToken)
    {
        if (pending.IsEmpty)
        {
            return;
        }

        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        foreach (var project in pending.Keys.GroupBy(k => k.ProjectId, k => k.KeyId))
        {
            var keyIds = project.ToArray();
            var parameters = new { ProjectId = project.Key, KeyIds = keyIds };
            var written = await connection.QueryAsync<long>(new CommandDefinition(table.Touch, parameters, cancellationToken: cancellationToken));
            var missing = keyIds.ToHashSet();
            foreach (var id in written)
            {
                pending.TryRemove((project.Key, id), out _);
                missing.Remove(id);
            }

            // Keys that no longer exist are not written and need no retry; skipped (locked) ones stay for the next flush.
            if (missing.Count > 0)
            {
                var existing = await connection.QueryAsync<long>(new CommandDefinition(
                    table.Existing, new { ProjectId = project.Key, KeyIds = missing.ToArray() }, cancellationToken: cancellationToken));
                missing.ExceptWith(existing);
                foreach (var id in missing)
                {
                    pending.TryRemove((project.Key, id), out _);
                }
            }
        }
    }
}
