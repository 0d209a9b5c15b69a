using FirmwareManager.Api.Upkeep;

namespace FirmwareManager.Api.Webhooks;

/// <summary>
/// The webhooks' part of the upkeep: deliveries finished (delivered or given up) before
/// <see cref="RetentionOptions.WebhookDeliveriesMaxAgeDays"/> deleted, in batches; pending ones never.
/// </summary>
public sealed class DeliveryRetention(ILogger<DeliveryRetention> logger) : IUpkeepStep
{
    // Finished deliveries older than the cutoff, oldest first, through webhook_deliveries_finished_idx (migration
    // 0036): the pending ones, which the sender reads, are never touched.
    private const string DeleteFinishedDeliveriesSql = """
        DELETE FROM webhook_deliveries AS d
        USING (
            SELECT project_id, webhook_id, event_id
            FROM webhook_deliveries
            WHERE (delivered_at IS NOT NULL OR given_up_at IS NOT NULL)
              AND COALESCE(delivered_at, given_up_at) < @Cutoff
            ORDER BY COALESCE(delivered_at, given_up_at)
            LIMIT @BatchSize
        ) AS old
        WHERE d.project_id = old.project_id
          AND d.webhook_id = old.webhook_id
          AND d.event_id = old.event_id
        """;

    public async Task RunAsync(UpkeepRound round, CancellationToken cancellationToken)
    {
        var cutoff = round.NowUtc.AddDays(-round.Settings.WebhookDeliveriesMaxAgeDays);
        var deleted = await round.DeleteInBatchesAsync(DeleteFinishedDeliveriesSql, cutoff, cancellationToken);
        logger.LogInformation("Retention: {Count} webhook deliveries finished before {Cutoff:o} deleted", deleted, cutoff);
    }
}
