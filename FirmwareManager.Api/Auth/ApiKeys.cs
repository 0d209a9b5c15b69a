using Dapper;
using Npgsql;

namespace FirmwareManager.Api.Auth;

/// <summary>Looks up the caller behind an API key digest.</summary>
public sealed class ApiKeys(NpgsqlDataSource dataSource)
{
    private sealed record CallerRow(string Kind, long Id, long ProjectId, string? Role);

    // Device and member keys live in separate tables (each with its own foreign key); one round trip asks both.
    private const string FindCallerSql = """
        SELECT 'device' AS kind,
               d.id AS id,
               d.project_id AS projectid,
               NULL::text AS role
        FROM device_api_keys AS k
        JOIN devices AS d ON d.id = k.device_id
        WHERE k.key_hash = @KeyHash
          AND k.revoked_at IS NULL
        UNION ALL
        SELECT 'member' AS kind,
               m.id AS id,
               m.project_id AS projectid,
               m.role AS role
        FROM membership_api_keys AS k
        JOIN project_memberships AS m ON m.id = k.membership_id
        WHERE k.key_hash = @KeyHash
          AND k.revoked_at IS NULL
        LIMIT 1
        """;

    public async Task<Caller?> FindCallerAsync(byte[] keyHash, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        var row = await connection.QuerySingleOrDefaultAsync<CallerRow>(
            new CommandDefinition(FindCallerSql, new { KeyHash = keyHash }, cancellationToken: cancellationToken));
        return row is null
            ? null
            : new Caller(row.Kind == "device" ? CallerKind.Device : CallerKind.Member, row.Id, row.ProjectId, row.Role);
    }
}
