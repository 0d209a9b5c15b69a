using Dapper;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Firmware;
using Npgsql;

namespace FirmwareManager.Api.Provisioning;

public sealed record Member(long Id, long ProjectId, string Email, string Role, DateTime CreatedAt, DateTime? RemovedAt);

public sealed record MemberResponse(long Id, string Email, string Role, string CreatedAt, string? RemovedAt)
{
    public static MemberResponse From(Member m) =>
        new(m.Id, m.Email, m.Role, Rfc3339.Format(m.CreatedAt), m.RemovedAt is { } removed ? Rfc3339.Format(removed) : null);
}

/// <summary>Thrown when a change would leave a project without an active admin.</summary>
public sealed class LastAdminException() : Exception("A project keeps at least one admin: add another admin first.");

/// <summary>Projects and their members, each change audited in its transaction.</summary>
public sealed class Members(NpgsqlDataSource dataSource, ApiKeys? apiKeys = null)
{
    public const string Admin = "admin";
    public const string Viewer = "viewer";

    private const string InsertProjectSql = """
        INSERT INTO projects (name)
        VALUES (@Name)
        ON CONFLICT (name) DO NOTHING
        RETURNING id
        """;

    // An email invited again after removal gets its membership back, with the new role.
    private const string UpsertMemberSql = """
        INSERT INTO project_memberships AS m (project_id, email, role)
        VALUES (@ProjectId, @Email, @Role)
        ON CONFLICT (project_id, email) DO UPDATE
        SET role = EXCLUDED.role,
            removed_at = NULL
        WHERE m.removed_at IS NOT NULL
        RETURNING id AS Id, project_id AS ProjectId, email AS Email, role AS Role, created_at AS CreatedAt, removed_at AS RemovedAt
        """;

    /// <summary>Creates a project and its first admin; null when a project of that name exists.</summary>
    public async Task<(long ProjectId, Member Admin, NewKeyResponse Key)?> CreateProjectAsync(
        string name, string adminEmail, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        var projectId = await connection.ExecuteScalarAsync<long?>(new CommandDefinition(
            InsertProjectSql, new { Name = name }, transaction, cancellationToken: cancellationToken));
        if (projectId is not { } id)
        {
            return null;
        }

        await Audit.RecordAsync(connection, transaction, id, Actor.Cli, "project.created", "project", id, new { name });
        var (admin, key) = await InviteInTransactionAsync(connection, transaction, id, adminEmail, Admin, Actor.Cli, cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        return (id, admin!, key!);
    }

    /// <summary>Adds a member with a first key; (null, null) when the email is already an active member.</summary>
    public async Task<(Member? Member, NewKeyResponse? Key)> InviteAsync(
        long projectId, string email, string role, Actor actor, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        var invited = await InviteInTransactionAsync(connection, transaction, projectId, email, role, actor, cancellationToken);
        if (invited.Member is not null)
        {
            await transaction.CommitAsync(cancellationToken);
        }

        return invited;
    }

    private static async Task<(Member? Member, NewKeyResponse? Key)> InviteInTransactionAsync(
        NpgsqlConnection connection, NpgsqlTransaction transaction, long projectId, string email, string role, Actor actor,
        CancellationToken cancellationToken)
    {
        var member = await connection.QuerySingleOrDefaultAsync<Member>(new CommandDefinition(
            UpsertMemberSql, new { ProjectId = projectId, Email = email, Role = role }, transaction, cancellationToken: cancellationToken));
        if (member is null)
        {
            return (null, null);
        }

        await Audit.RecordAsync(connection, transaction, projectId, actor, "member.added", "member", member.Id, new { email, role });
        var key = await Keys.IssueInTransactionAsync(connection, transaction, projectId, KeyOwner.Member(member.Id), actor, cancellationToken);
        return (member, key);
    }

    private const string ListSql = """
        SELECT id AS Id,
               project_id AS ProjectId,
               email AS Email,
               role AS Role,
               created_at AS CreatedAt,
               removed_at AS RemovedAt
        FROM project_memberships
        WHERE project_id = @ProjectId
        ORDER BY id
        """;

    public async Task<IReadOnlyList<Member>> ListAsync(long projectId, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        return (await connection.QueryAsync<Member>(new CommandDefinition(ListSql, new { ProjectId = projectId }, cancellationToken: cancellationToken))).AsList();
    }

    private const string FindActiveSql = """
        SELECT id AS Id,
               project_id AS ProjectId,
               email AS Email,
               role AS Role,
               created_at AS CreatedAt,
               removed_at AS RemovedAt
        FROM project_memberships
        WHERE id = @MemberId
          AND project_id = @ProjectId
          AND removed_at IS NULL
        """;

    public async Task<Member?> FindActiveAsync(long projectId, long memberId, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        return await connection.QuerySingleOrDefaultAsync<Member>(new CommandDefinition(
            FindActiveSql, new { ProjectId = projectId, MemberId = memberId }, cancellationToken: cancellationToken));
    }

    // The project's active admins are locked first, so two admins removing each other at once cannot both win.
    private const string LockActiveAdminsSql = """
        SELECT id
        FROM project_memberships
        WHERE project_id = @ProjectId
          AND role = 'admin'
          AND removed_at IS NULL
        FOR UPDATE
        """;

    private const string RemoveSql = """
        UPDATE project_memberships
        SET removed_at = now()
        WHERE id = @MemberId
          AND project_id = @ProjectId
          AND removed_at IS NULL
        RETURNING email
        """;

    private const string RevokeAllMemberKeysSql = """
        UPDATE membership_api_keys
        SET revoked_at = now()
        WHERE membership_id = @MemberId
          AND revoked_at IS NULL
        """;

    /// <summary>Removes an active member and revokes their keys; false when there is no such active member.</summary>
    public async Task<bool> RemoveAsync(long projectId, long memberId, Actor actor, CancellationToken cancellationToken)
    {
        var parameters = new { ProjectId = projectId, MemberId = memberId };
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        var admins = (await connection.QueryAsync<long>(new CommandDefinition(LockActiveAdminsSql, parameters, transaction, cancellationToken: cancellationToken))).AsList();
        if (admins.Count == 1 && admins[0] == memberId)
        {
            throw new LastAdminException();
        }

        var email = await connection.ExecuteScalarAsync<string?>(new CommandDefinition(RemoveSql, parameters, transaction, cancellationToken: cancellationToken));
        if (email is null)
        {
            return false;
        }

        var revoked = await connection.ExecuteAsync(new CommandDefinition(RevokeAllMemberKeysSql, parameters, transaction, cancellationToken: cancellationToken));
        await Audit.RecordAsync(connection, transaction, projectId, actor, "member.removed", "member", memberId, new { email, keys_revoked = revoked });
        await transaction.CommitAsync(cancellationToken);
        apiKeys?.ForgetAll();
        return true;
    }
}
