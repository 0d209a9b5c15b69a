using FirmwareManager.Api.Projections;

namespace FirmwareManager.Api.Rollouts;

/// <summary>The open rollouts' counters, their devices and the halt (with its webhook deliveries), projected from the feed.</summary>
public sealed class RolloutsProjection : IProjection
{
    // Each device's newest report on an open rollout's version (its update target) since the rollout was declared,
    // when the device is in the rollout's audience (its hardware and tags as they are now; the version it came from),
    // with the one kept in rollout_devices (migration 0034). From TransitionChanges, before its upsert.
    private const string RolloutChanges = $$"""
        (SELECT r.id AS rollout_id,
                change.device_id,
                change.project_id,
                change.new_status,
                change.reported_at,
                rd.status AS old_status
         FROM {{StepEvents.TransitionChanges}} AS change
         JOIN devices AS d ON d.project_id = @ProjectId AND d.id = change.device_id
         JOIN rollouts AS r ON r.project_id = @ProjectId AND r.firmware = change.to_firmware
         LEFT JOIN rollout_devices AS rd
                ON rd.project_id = @ProjectId AND rd.rollout_id = r.id AND rd.device_id = change.device_id
         WHERE r.ended_at IS NULL
           AND change.reported_at >= r.created_at
           AND (r.hardware IS NULL OR r.hardware = d.hardware)
           AND d.tags @> r.tags
           AND (r.from_firmware IS NULL OR r.from_firmware = change.new_from)
           AND (rd.reported_at IS NULL OR rd.reported_at <= change.reported_at))
        """;

    // The rollouts' counters, by each device's move out of its old state into its new; and the halt, set once, in the
    // step whose reports take the failure rate above the threshold with at least min_devices attempted.
    private const string CountRolloutsSql = $$"""
        UPDATE rollouts AS r
        SET attempted = r.attempted + delta.attempted,
            updated = r.updated + delta.updated,
            failed = r.failed + delta.failed,
            rolled_back = r.rolled_back + delta.rolled_back,
            halted_at = CASE
                            WHEN r.halted_at IS NULL
                             AND r.attempted + delta.attempted >= r.min_devices
                             AND r.failed + delta.failed + r.rolled_back + delta.rolled_back > r.max_failure_rate * (r.attempted + delta.attempted)
                            THEN @StepTime
                            ELSE r.halted_at
                        END
        FROM (
            SELECT change.rollout_id,
                   sum(side.sign) AS attempted,
                   sum(side.sign * (side.status IN ('installed', 'updated'))::int) AS updated,
                   sum(side.sign * (side.status = 'failed')::int) AS failed,
                   sum(side.sign * (side.status = 'rolled_back')::int) AS rolled_back
            FROM {{RolloutChanges}} AS change
            CROSS JOIN LATERAL (VALUES (change.new_status, 1), (change.old_status, -1)) AS side(status, sign)
            WHERE side.status IS NOT NULL
            GROUP BY change.rollout_id
        ) AS delta
        WHERE r.project_id = @ProjectId
          AND r.id = delta.rollout_id
        """;

    private const string KeepRolloutDevicesSql = $$"""
        INSERT INTO rollout_devices AS rd (project_id, rollout_id, device_id, status, reported_at)
        SELECT change.project_id,
               change.rollout_id,
               change.device_id,
               change.new_status,
               change.reported_at
        FROM {{RolloutChanges}} AS change
        ON CONFLICT (project_id, rollout_id, device_id) DO UPDATE
        SET status = EXCLUDED.status,
            reported_at = EXCLUDED.reported_at
        """;

    // A rollout this step halted, to every webhook that subscribes to rollout.halted: keyed by minus the
    // rollout's id, in a lane of its own (device 0).
    private const string RecordRolloutDeliveriesSql = """
        INSERT INTO webhook_deliveries (project_id, webhook_id, event_id, device_id, event_type, created_at, next_attempt_at)
        SELECT r.project_id,
               w.id,
               -r.id,
               0,
               'rollout.halted',
               @StepTime,
               @StepTime
        FROM rollouts AS r
        JOIN webhooks AS w ON w.project_id = r.project_id
        WHERE r.project_id = @ProjectId
          AND w.project_id = @ProjectId
          AND r.halted_at = @StepTime
          AND w.deleted_at IS NULL
          AND 'rollout.halted' = ANY(w.event_types)
        ON CONFLICT DO NOTHING
        """;

    public IEnumerable<ProjectionStatement> Statements { get; } =
    [
        new(StepOrder.RolloutCounts, CountRolloutsSql, StepNeeds.Rollouts),
        new(StepOrder.RolloutDevices, KeepRolloutDevicesSql, StepNeeds.Rollouts),
        new(StepOrder.RolloutHalts, RecordRolloutDeliveriesSql, StepNeeds.RolloutsAndWebhooks),
    ];
}
