using Dapper;
using Npgsql;

namespace FirmwareManager.Api.Versions;

/// <summary>One version in a project: devices running it, and devices whose newest event for it is failed or rolled_back.</summary>
public sealed record FirmwareVersionCount(string Firmware, long Devices, long Failed, long RolledBack);

/// <summary>The firmware_version_counts table, kept up to date by ingest.</summary>
public sealed class FirmwareVersions(NpgsqlDataSource dataSource)
{
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
    public async Task<IReadOnlyList<FirmwareVersionCount>> DistributionAsync(long projectId, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        var counts = await connection.QueryAsync<FirmwareVersionCount>(
            new CommandDefinition(DistributionSql, new { ProjectId = projectId }, cancellationToken: cancellationToken));
        return counts.OrderBy(c => c.Firmware, SemanticVersionPrecedence.Instance).ToList();
    }
}
