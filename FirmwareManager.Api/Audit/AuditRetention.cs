using FirmwareManager.Api.Upkeep;

namespace FirmwareManager.Api.Audit;

/// <summary>The audit log's part of the upkeep: with <see cref="RetentionOptions.AuditMaxAgeDays"/>, older entries deleted, a window a transaction.</summary>
public sealed class AuditRetention(ILogger<AuditRetention> logger) : IUpkeepStep
{
    // A window of audit entries in key order (audit_log_project_id_idx) and, of those, the ones older than the
    // cutoff: one pass over the index a round, never a scan of the table per batch (created_at has no index).
    private const string DeleteAuditSql = """
        WITH window_rows AS (
            SELECT project_id, id, created_at
            FROM audit_log
            WHERE (@ProjectId::bigint IS NULL OR project_id = @ProjectId)
              AND (project_id, id) > (@AfterProjectId, @AfterId)
            ORDER BY project_id, id
            LIMIT @BatchSize
        ),
        deleted AS (
            DELETE FROM audit_log AS a
            USING window_rows AS w
            WHERE a.project_id = w.project_id
              AND a.id = w.id
              AND w.created_at < @Cutoff
            RETURNING 1
        )
        SELECT (SELECT project_id FROM window_rows ORDER BY project_id DESC, id DESC LIMIT 1) AS LastProjectId,
               (SELECT id FROM window_rows ORDER BY project_id DESC, id DESC LIMIT 1) AS LastId,
               (SELECT count(*) FROM deleted) AS Deleted
        """;

    public async Task RunAsync(UpkeepRound round, CancellationToken cancellationToken)
    {
        if (round.Settings.AuditMaxAgeDays is { } maxAgeDays)
        {
            var cutoff = round.NowUtc.AddDays(-maxAgeDays);
            var deleted = await round.DeleteInWindowsAsync(DeleteAuditSql, null, cutoff, cancellationToken);
            logger.LogInformation("Retention: {Count} audit entries before {Cutoff:o} deleted", deleted, cutoff);
        }
    }
}
