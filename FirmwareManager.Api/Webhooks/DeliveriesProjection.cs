using FirmwareManager.Api.Projections;

namespace FirmwareManager.Api.Webhooks;

/// <summary>A webhook delivery per event and subscribing webhook, projected from the feed.</summary>
public sealed class DeliveriesProjection : IProjection
{
    // The webhook outbox (migration 0029): a delivery per event and webhook that subscribes to it, in the step that
    // projects the event (in feed order, exactly once), so that nothing stored is missing from the push stream. Keyed by the
    // event's id (no sequence: the INSERT ... SELECT stays on the project's shard); WebhookSender sends them. Recorded at
    // the step's time (as a halted rollout's), due since the event's receipt.
    private const string RecordDeliveriesSql = $$"""
        INSERT INTO webhook_deliveries (project_id, webhook_id, event_id, device_id, event_type, created_at, next_attempt_at)
        SELECT stored.project_id,
               w.id,
               stored.id,
               stored.device_id,
               'event.' || stored.status,
               @StepTime,
               stored.received_at
        FROM {{StepEvents.StoredEvents}} AS stored
        JOIN webhooks AS w ON w.project_id = stored.project_id
        WHERE w.project_id = @ProjectId
          AND w.deleted_at IS NULL
          AND ('event.' || stored.status) = ANY(w.event_types)
          AND (w.firmware IS NULL OR w.firmware = stored.firmware)
        ORDER BY stored.id, w.id
        ON CONFLICT DO NOTHING
        """;

    public IEnumerable<ProjectionStatement> Statements { get; } =
    [
        new(StepOrder.EventDeliveries, RecordDeliveriesSql, StepNeeds.Webhooks),
    ];
}
