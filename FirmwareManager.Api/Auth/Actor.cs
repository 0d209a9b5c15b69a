using Dapper;
using Npgsql;

namespace FirmwareManager.Api.Auth;

/// <summary>Who acted: a member through one of their keys, or an operator's command.</summary>
public sealed record Actor(string Kind, long? Id, string? KeyPrefix, long? KeyId = null)
{
    public static Actor Cli { get; } = new("cli", null, null);

    public static Actor From(Caller caller) => new("member", caller.Id, caller.KeyPrefix, caller.KeyId);

    // The member and the key the request authenticated with, still active (and, for admin work, still an admin),
    // locked FOR SHARE until the change commits: a removal or revocation that commits first makes this find
    // nothing (it is re-checked after waiting for the row), one that comes later waits for this change.
    private const string LockActiveSql = """
        SELECT m.id
        FROM project_memberships AS m
        JOIN membership_api_keys AS k ON k.project_id = m.project_id AND k.membership_id = m.id
        WHERE m.id = @MemberId
          AND m.project_id = @ProjectId
          AND m.removed_at IS NULL
          AND (m.role = 'admin' OR NOT @RequireAdmin)
          AND k.id = @KeyId
          AND k.revoked_at IS NULL
        FOR SHARE OF m, k
        """;

    /// <summary>
    /// Re-checks in the change's transaction what the key cache only approximates: the acting member and key are
    /// still active. Throws <see cref="CallerRevokedException"/> (401) when not. Commands need no check.
    /// </summary>
    public async Task ConfirmStillAuthorizedAsync(
        NpgsqlConnection connection, NpgsqlTransaction transaction, long projectId, bool requireAdmin, CancellationToken cancellationToken)
    {
        if (Kind != "member")
        {
            return;
        }

        var found = await connection.ExecuteScalarAsync<long?>(new CommandDefinition(
            LockActiveSql, new { MemberId = Id, ProjectId = projectId, KeyId, RequireAdmin = requireAdmin }, transaction,
            cancellationToken: cancellationToken));
        if (found is null)
        {
            throw new CallerRevokedException();
        }
    }
}
