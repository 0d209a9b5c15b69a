using System.Collections.Concurrent;
using Dapper;
using Npgsql;

namespace FirmwareManager.Api.Versions;

/// <summary>One version in a project: devices running it, and devices whose newest event for it is failed or rolled_back.</summary>
public sealed record FirmwareVersionCount(string Firmware, long Devices, long Failed, long RolledBack);

/// <summary>The firmware_version_counts table, kept up to date by ingest.</summary>
/// <remarks>
/// A fleet dashboard polled by many operators asks the same question of the same project again and again:
/// requests that arrive while a project's query is running share its answer instead of each running it again.
/// An answer is therefore never older than the query that produced it; nothing is kept once it has been given.
/// </remarks>
public sealed class FirmwareVersions(NpgsqlDataSource dataSource)
{
    private readonly ConcurrentDictionary<long, Lazy<Task<IReadOnlyList<FirmwareVersionCount>>>> _running = new();

    // The stripes of each version added up: one index range of the primary key, never a scan of the devices.
    private const string DistributionSql = """
        SELECT c.firmware AS Firmware,
               sum(c.devices)::bigint AS Devices,
               sum(c.failed)::bigint AS Failed,
               sum(c.rolled_back)::bigint AS RolledBack
        FROM firmware_version_counts AS c
        WHERE c.project_id = @ProjectId
        GROUP BY c.firmware
        HAVING sum(c.devices) > 0 OR sum(c.failed) > 0 OR sum(c.rolled_back) > 0
        """;

    /// <summary>The project's versions in SemVer precedence order, lowest first.</summary>
    public Task<IReadOnlyList<FirmwareVersionCount>> DistributionAsync(long projectId, CancellationToken cancellationToken)
    {
        var query = new Lazy<Task<IReadOnlyList<FirmwareVersionCount>>>(() => QueryDistributionAsync(projectId));
        var running = _running.GetOrAdd(projectId, query);
        if (ReferenceEquals(running, query))
        {
            // This request started the query: once it ends, the next request starts a new one.
            _ = query.Value.ContinueWith(
                _ => _running.TryRemove(KeyValuePair.Create(projectId, query)), CancellationToken.None,
                TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }

        // Only this request's wait is cancelled: the query is shared.
        return running.Value.WaitAsync(cancellationToken);
    }

    private async Task<IReadOnlyList<FirmwareVersionCount>> QueryDistributionAsync(long projectId)
    {
        await using var connection = await dataSource.OpenConnectionAsync();
        var counts = await connection.QueryAsync<FirmwareVersionCount>(new CommandDefinition(DistributionSql, new { ProjectId = projectId }));
        return counts.OrderBy(c => c.Firmware, SemanticVersionPrecedence.Instance).ToList();
    }
}
