using Dapper;
using FirmwareManager.Api.Audit;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Http;
using FirmwareManager.Api.Keys;
using Npgsql;

namespace FirmwareManager.Api.Members;

public sealed record Member(long Id, long ProjectId, string Email, string Role, DateTime CreatedAt, DateTime? RemovedAt);

public sealed record MemberResponse(long Id, string Email, string Role, string CreatedAt, string? RemovedAt)
{
    public static MemberResponse From(Member m) =>
        new(m.Id, m.Email, m.Role, Rfc3339.Format(m.CreatedAt), m.RemovedAt is { } removed ? Rfc3339.Format(removed) : null);
}

/// <summary>Thrown when a change would leave a project without an active admin.</summary>
public sealed class LastAdminException()
    : Exception("A project keeps at least one admin with a working key: add another admin (or issue one a key) first.");

/// <summary>Projects and their members, each change audited in its transaction.</summary>
public sealed class Memberships(NpgsqlDataSource dataSource, KeyCache? keyCache = null)
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

        await AuditLog.RecordAsync(connection, transaction, id, Actor.Cli, "project.created", "project", id, new { name });
        var (admin, key) = await InviteInTransactionAsync(connection, transaction, id, adminEmail, Admin, Actor.Cli, cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        return (id, admin!, key!);
    }

    private const string FindProjectSql = """
        SELECT id
        FROM projects
        WHERE name = @Name
        """;

    // The recovery path: the email becomes an active admin of the project, whatever it was (new, a viewer, removed).
    private const string UpsertAdminSql = """
        INSERT INTO project_memberships AS m (project_id, email, role)
        VALUES (@ProjectId, @Email, 'admin')
        ON CONFLICT (project_id, email) DO UPDATE
        SET role = 'admin',
            removed_at = NULL
        RETURNING id AS Id, project_id AS ProjectId, email AS Email, role AS Role, created_at AS CreatedAt, removed_at AS RemovedAt
        """;

    /// <summary>
    /// For an operator with database access (the <c>issue-admin-key</c> command): makes the email an active admin of
    /// the project and issues a new key for it, audited as the command's. Null when there is no such project.
    /// </summary>
    public async Task<(Member Admin, NewKeyResponse Key)?> IssueAdminKeyAsync(string projectName, string email, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        var projectId = await connection.ExecuteScalarAsync<long?>(new CommandDefinition(
            FindProjectSql, new { Name = projectName }, transaction, cancellationToken: cancellationToken));
        if (projectId is not { } id)
        {
            return null;
        }

        var admin = await connection.QuerySingleAsync<Member>(new CommandDefinition(
            UpsertAdminSql, new { ProjectId = id, Email = email }, transaction, cancellationToken: cancellationToken));
        await AuditLog.RecordAsync(connection, transaction, id, Actor.Cli, "member.admin_recovered", "member", admin.Id, new { email });
        var key = await ProjectKeys.IssueInTransactionAsync(connection, transaction, id, KeyOwner.Member(admin.Id), Actor.Cli, cancellationToken);
        // The member's keys may be cached with the role it had.
        await KeyCache.InvalidateEverywhereAsync(connection, transaction, cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        return (admin, key);
    }

    /// <summary>Active members a project may have.</summary>
    public const int MaxActiveMembersPerProject = 1000;

    /// <summary>Removed members the member list shows besides the active ones, most recently removed first.</summary>
    public const int RemovedMembersListed = 100;

    private const string CountActiveMembersSql = """
        SELECT count(*)
        FROM project_memberships
        WHERE project_id = @ProjectId
          AND removed_at IS NULL
        """;

    /// <summary>Adds a member with a first key; (null, null) when the email is already an active member.</summary>
    /// <exception cref="LimitReachedException">The project has <see cref="MaxActiveMembersPerProject"/> active members.</exception>
    public Task<(Member? Member, NewKeyResponse? Key)> InviteAsync(
        long projectId, string email, string role, Actor actor, CancellationToken cancellationToken) =>
        Conflicts.RetryAsync(() => InviteOnceAsync(projectId, email, role, actor, cancellationToken), cancellationToken);

    private async Task<(Member? Member, NewKeyResponse? Key)> InviteOnceAsync(
        long projectId, string email, string role, Actor actor, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        await actor.ConfirmStillAuthorizedAsync(connection, transaction, projectId, requireAdmin: true, cancellationToken);
        if (await connection.ExecuteScalarAsync<long>(new CommandDefinition(
                CountActiveMembersSql, new { ProjectId = projectId }, transaction, cancellationToken: cancellationToken)) >= MaxActiveMembersPerProject)
        {
            throw new LimitReachedException($"A project has at most {MaxActiveMembersPerProject} active members: remove one first.");
        }

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

        await AuditLog.RecordAsync(connection, transaction, projectId, actor, "member.added", "member", member.Id, new { email, role });
        var key = await ProjectKeys.IssueInTransactionAsync(connection, transaction, projectId, KeyOwner.Member(member.Id), actor, cancellationToken);
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
          AND (removed_at IS NULL
               OR id IN (SELECT r.id
                         FROM project_memberships AS r
                         WHERE r.project_id = @ProjectId
                           AND r.removed_at IS NOT NULL
                         ORDER BY r.removed_at DESC, r.id DESC
                         LIMIT @RemovedListed))
        ORDER BY id
        """;

    /// <summary>The project's active members and its <see cref="RemovedMembersListed"/> most recently removed ones.</summary>
    public async Task<IReadOnlyList<Member>> ListAsync(long projectId, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        return (await connection.QueryAsync<Member>(new CommandDefinition(
            ListSql, new { ProjectId = projectId, RemovedListed = RemovedMembersListed }, cancellationToken: cancellationToken))).AsList();
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

    private const string RemoveSql = """
        UPDATE project_memberships
        SET removed_at = now()
        WHERE id = @MemberId
          AND project_id = @ProjectId
          AND removed_at IS NULL
        RETURNING email
        """;

    // In id order, as every statement that locks several key rows takes them, so two never wait on each other.
    private const string RevokeAllMemberKeysSql = """
        UPDATE membership_api_keys AS k
        SET revoked_at = now()
        FROM (
            SELECT project_id, id
            FROM membership_api_keys
            WHERE project_id = @ProjectId
              AND membership_id = @MemberId
              AND revoked_at IS NULL
            ORDER BY id
            FOR UPDATE
        ) AS locked
        WHERE k.project_id = @ProjectId
          AND k.project_id = locked.project_id
          AND k.id = locked.id
        """;

    /// <summary>Removes an active member and revokes their keys; false when there is no such active member.</summary>
    /// <exception cref="LastAdminException">No active admin with an active key would remain.</exception>
    public Task<bool> RemoveAsync(long projectId, long memberId, Actor actor, CancellationToken cancellationToken) =>
        Conflicts.RetryAsync(() => RemoveOnceAsync(projectId, memberId, actor, cancellationToken), cancellationToken);

    private async Task<bool> RemoveOnceAsync(long projectId, long memberId, Actor actor, CancellationToken cancellationToken)
    {
        var parameters = new { ProjectId = projectId, MemberId = memberId };
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        await ProjectKeys.LockActiveAdminsAsync(connection, transaction, projectId, cancellationToken);
        await actor.ConfirmStillAuthorizedAsync(connection, transaction, projectId, requireAdmin: true, cancellationToken);
        var email = await connection.ExecuteScalarAsync<string?>(new CommandDefinition(RemoveSql, parameters, transaction, cancellationToken: cancellationToken));
        if (email is null)
        {
            return false;
        }

        var revoked = await connection.ExecuteAsync(new CommandDefinition(RevokeAllMemberKeysSql, parameters, transaction, cancellationToken: cancellationToken));
        if (!await ProjectKeys.AnAdminKeepsAKeyAsync(connection, transaction, projectId, cancellationToken))
        {
            throw new LastAdminException();
        }

        await AuditLog.RecordAsync(connection, transaction, projectId, actor, "member.removed", "member", memberId, new { email, keys_revoked = revoked });
        await KeyCache.InvalidateEverywhereAsync(connection, transaction, cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        keyCache?.ForgetAll();
        return true;
    }
}
