using FirmwareManager.Api.Projections;

namespace FirmwareManager.Api.Versions;

/// <summary>The version counts and each device's newest status per version, projected from the feed.</summary>
public sealed class VersionsProjection : IProjection
{
    // The per-project version counts (devices running each version; devices whose newest event for a version is
    // failed or rolled_back; devices running it after an unexplained downgrade), by hardware (migration 0031: '' for
    // none), as one delta per version and hardware into stripe 0, upserted in key order so that concurrent
    // transactions take those rows' locks in the same order. First of the three: it reads the state the other two
    // change. Stripe 0 only: the stripes (0004) spread ingest's transactions, which kept the counts until the
    // projections (0037), over 16 rows per version; a project's steps run one at a time, and a step that wrote each
    // device's delta into its stripe upserted up to 16 rows per version where one does (and, with a snapshot held open,
    // walked the versions of each; docs/performance.md). Readers add the stripes up, so the rows earlier versions
    // wrote into stripes 1 to 15 keep counting.
    private const string CountVersionsSql = $$"""
        INSERT INTO firmware_version_counts AS c (project_id, firmware, hardware, stripe, devices, failed, rolled_back, unexplained_downgrades)
        SELECT delta.project_id,
               delta.firmware,
               delta.hardware,
               0,
               sum(delta.devices),
               sum(delta.failed),
               sum(delta.rolled_back),
               sum(delta.downgrades)
        FROM (
            SELECT move.project_id, move.hardware, side.firmware, side.devices, 0 AS failed, 0 AS rolled_back, side.downgrades
            FROM {{StepEvents.FirmwareMoves}} AS move
            CROSS JOIN LATERAL (VALUES (move.to_firmware, 1, move.downgrade::int),
                                       (move.from_firmware, -1, -(move.downgraded_from IS NOT NULL)::int)) AS side(firmware, devices, downgrades)
            WHERE move.from_firmware IS DISTINCT FROM move.to_firmware
              AND side.firmware IS NOT NULL
            UNION ALL
            SELECT change.project_id, change.hardware, change.firmware, 0, side.sign * (side.status = 'failed')::int, side.sign * (side.status = 'rolled_back')::int, 0
            FROM {{StepEvents.VersionChanges}} AS change
            CROSS JOIN LATERAL (VALUES (change.new_status, 1), (change.old_status, -1)) AS side(status, sign)
            WHERE side.status IS NOT NULL
        ) AS delta
        GROUP BY delta.project_id, delta.firmware, delta.hardware
        HAVING sum(delta.devices) <> 0 OR sum(delta.failed) <> 0 OR sum(delta.rolled_back) <> 0 OR sum(delta.downgrades) <> 0
        ORDER BY delta.project_id, delta.firmware, delta.hardware
        ON CONFLICT (project_id, firmware, hardware, stripe) DO UPDATE
        SET devices = c.devices + EXCLUDED.devices,
            failed = c.failed + EXCLUDED.failed,
            rolled_back = c.rolled_back + EXCLUDED.rolled_back,
            unexplained_downgrades = c.unexplained_downgrades + EXCLUDED.unexplained_downgrades
        """;

    // Each device's newest status per version it reported on in the step, kept where it is not older than the one
    // kept. The upsert's own conflict check finds the row kept, so this reads neither the devices nor the kept
    // statuses beforehand, as the counts above must (VersionChanges: the kept status is what their deltas subtract).
    private const string KeepVersionStatusSql = $$"""
        INSERT INTO device_firmware_status AS s (device_id, firmware, project_id, status, reported_at)
        SELECT DISTINCT ON (stored.device_id, stored.firmware) stored.device_id,
               stored.firmware,
               stored.project_id,
               stored.status,
               stored.reported_at
        FROM {{StepEvents.StoredEvents}} AS stored
        ORDER BY stored.device_id, stored.firmware, stored.reported_at DESC, stored.id DESC
        ON CONFLICT (project_id, device_id, firmware) DO UPDATE
        SET status = EXCLUDED.status,
            reported_at = EXCLUDED.reported_at
        WHERE s.reported_at <= EXCLUDED.reported_at
        """;

    public IEnumerable<ProjectionStatement> Statements { get; } =
    [
        new(StepOrder.VersionCounts, CountVersionsSql),
        new(StepOrder.VersionStatuses, KeepVersionStatusSql),
    ];
}
