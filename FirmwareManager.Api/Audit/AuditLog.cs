using System.Text.Json;
using Dapper;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Http;
using Npgsql;

namespace FirmwareManager.Api.Audit;

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
    public async Task LockActiveAsync(
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

public sealed record AuditEntry(
    long Id, long ProjectId, string ActorKind, long? ActorId, string? ActorKeyPrefix, string Action, string TargetKind, long? TargetId,
    string Details, DateTime CreatedAt);

/// <summary>The audit log: written inside the transaction of the change it records; read newest first.</summary>
public sealed class AuditLog(ReadRouting reads)
{
    private const string RecordSql = """
        INSERT INTO audit_log (project_id, actor_kind, actor_id, actor_key_prefix, action, target_kind, target_id, details)
        VALUES (@ProjectId, @ActorKind, @ActorId, @ActorKeyPrefix, @Action, @TargetKind, @TargetId, @Details::jsonb)
        """;

    /// <summary>Records a change in the caller's transaction, so the entry commits (or not) with it.</summary>
    public static Task RecordAsync(
        NpgsqlConnection connection, NpgsqlTransaction transaction, long projectId, Actor actor, string action, string targetKind,
        long? targetId, object? details = null) =>
        connection.ExecuteAsync(new CommandDefinition(RecordSql, new
        {
            ProjectId = projectId,
            ActorKind = actor.Kind,
            ActorId = actor.Id,
            ActorKeyPrefix = actor.KeyPrefix,
            Action = action,
            TargetKind = targetKind,
            TargetId = targetId,
            Details = JsonSerializer.Serialize(details ?? new { }),
        }, transaction));

    // Newest first from the cursor: a backward range of audit_log_project_id_idx.
    private const string PageSql = """
        SELECT a.id AS Id,
               a.project_id AS ProjectId,
               a.actor_kind AS ActorKind,
               a.actor_id AS ActorId,
               a.actor_key_prefix AS ActorKeyPrefix,
               a.action AS Action,
               a.target_kind AS TargetKind,
               a.target_id AS TargetId,
               a.details::text AS Details,
               a.created_at AS CreatedAt
        FROM audit_log AS a
        WHERE a.project_id = @ProjectId
          AND a.id < @BeforeId
        ORDER BY a.id DESC
        LIMIT @Limit
        """;

    /// <summary>Every entry of the project, newest first as the pages are: their statement without its bound.</summary>
    public static ExportQuery Export(long projectId) => new(PageSql, new { ProjectId = projectId, BeforeId = long.MaxValue, Limit = (int?)null });

    public Task<IReadOnlyList<AuditEntry>> PageAsync(long projectId, long beforeId, int limit, ReadContext read, CancellationToken cancellationToken) =>
        reads.RunAsync<IReadOnlyList<AuditEntry>>(read, async connection => (await connection.QueryAsync<AuditEntry>(new CommandDefinition(
            PageSql, new { ProjectId = projectId, BeforeId = beforeId, Limit = limit }, cancellationToken: cancellationToken))).AsList(),
            cancellationToken);
}

public sealed record AuditEntryResponse(
    long Id, string ActorKind, long? ActorId, string? ActorKeyPrefix, string Action, string TargetKind, long? TargetId,
    JsonElement Details, string CreatedAt)
{
    public static AuditEntryResponse From(AuditEntry e)
    {
        using var details = JsonDocument.Parse(e.Details);
        return new AuditEntryResponse(
            e.Id, e.ActorKind, e.ActorId, e.ActorKeyPrefix, e.Action, e.TargetKind, e.TargetId, details.RootElement.Clone(), Rfc3339.Format(e.CreatedAt));
    }
}
