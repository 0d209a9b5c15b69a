using System.Text.Json;
using Dapper;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Http;
using Npgsql;

namespace FirmwareManager.Api.Audit;

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
