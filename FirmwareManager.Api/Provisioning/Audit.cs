using System.Text.Json;
using Dapper;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Firmware;
using Npgsql;

namespace FirmwareManager.Api.Provisioning;

/// <summary>Who acted: a member through one of their keys, or the bootstrap command.</summary>
public sealed record Actor(string Kind, long? Id, string? KeyPrefix)
{
    public static Actor Cli { get; } = new("cli", null, null);

    public static Actor From(Caller caller) => new("member", caller.Id, caller.KeyPrefix);
}

public sealed record AuditEntry(
    long Id, long ProjectId, string ActorKind, long? ActorId, string? ActorKeyPrefix, string Action, string TargetKind, long? TargetId,
    string Details, DateTime CreatedAt);

/// <summary>The audit log: written inside the transaction of the change it records; read newest first.</summary>
public sealed class Audit(NpgsqlDataSource dataSource)
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

    public async Task<IReadOnlyList<AuditEntry>> PageAsync(long projectId, long beforeId, int limit, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        var entries = await connection.QueryAsync<AuditEntry>(new CommandDefinition(
            PageSql, new { ProjectId = projectId, BeforeId = beforeId, Limit = limit }, cancellationToken: cancellationToken));
        return entries.AsList();
    }
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
