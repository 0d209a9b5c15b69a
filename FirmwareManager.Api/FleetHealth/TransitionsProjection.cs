using FirmwareManager.Api.Projections;

namespace FirmwareManager.Api.FleetHealth;

/// <summary>Transitions, their error codes, each device's state per update target, and silence after an update, projected from the feed.</summary>
public sealed class TransitionsProjection : IProjection
{
    // Per (from, to) pair: the devices whose state for the target moved, out of their old pair and state into the
    // new (from '' when not known). A project's steps run one at a time (its project_projections row), so these rows
    // need no stripes.
    private const string CountTransitionsSql = $$"""
        INSERT INTO firmware_transition_counts AS c (project_id, to_firmware, from_firmware, attempted, succeeded, failed, rolled_back)
        SELECT change.project_id,
               change.to_firmware,
               side.from_firmware,
               sum(side.sign),
               sum(side.sign * (side.status IN ('installed', 'updated'))::int),
               sum(side.sign * (side.status = 'failed')::int),
               sum(side.sign * (side.status = 'rolled_back')::int)
        FROM {{StepEvents.TransitionChanges}} AS change
        CROSS JOIN LATERAL (VALUES (COALESCE(change.new_from, ''), change.new_status, 1),
                                   (COALESCE(change.old_from, ''), change.old_status, -1)) AS side(from_firmware, status, sign)
        WHERE side.status IS NOT NULL
        GROUP BY change.project_id, change.to_firmware, side.from_firmware
        HAVING sum(side.sign) <> 0
            OR sum(side.sign * (side.status IN ('installed', 'updated'))::int) <> 0
            OR sum(side.sign * (side.status = 'failed')::int) <> 0
            OR sum(side.sign * (side.status = 'rolled_back')::int) <> 0
        ORDER BY change.project_id, change.to_firmware, side.from_firmware
        ON CONFLICT (project_id, to_firmware, from_firmware) DO UPDATE
        SET attempted = c.attempted + EXCLUDED.attempted,
            succeeded = c.succeeded + EXCLUDED.succeeded,
            failed = c.failed + EXCLUDED.failed,
            rolled_back = c.rolled_back + EXCLUDED.rolled_back
        """;

    // The same devices, while failed or rolled back with an error code, by that code.
    private const string CountTransitionErrorsSql = $$"""
        INSERT INTO firmware_transition_errors AS c (project_id, to_firmware, from_firmware, error_code, devices)
        SELECT change.project_id,
               change.to_firmware,
               side.from_firmware,
               side.error_code,
               sum(side.sign)
        FROM {{StepEvents.TransitionChanges}} AS change
        CROSS JOIN LATERAL (VALUES (COALESCE(change.new_from, ''), change.new_status, change.new_error, 1),
                                   (COALESCE(change.old_from, ''), change.old_status, change.old_error, -1)) AS side(from_firmware, status, error_code, sign)
        WHERE side.status IN ('failed', 'rolled_back')
          AND side.error_code IS NOT NULL
        GROUP BY change.project_id, change.to_firmware, side.from_firmware, side.error_code
        HAVING sum(side.sign) <> 0
        ORDER BY change.project_id, change.to_firmware, side.from_firmware, side.error_code
        ON CONFLICT (project_id, to_firmware, from_firmware, error_code) DO UPDATE
        SET devices = c.devices + EXCLUDED.devices
        """;

    private const string KeepTransitionStatusSql = $$"""
        INSERT INTO device_transition_status AS t (project_id, device_id, to_firmware, from_firmware, status, error_code, reported_at)
        SELECT change.project_id,
               change.device_id,
               change.to_firmware,
               change.new_from,
               change.new_status,
               change.new_error,
               change.reported_at
        FROM {{StepEvents.TransitionChanges}} AS change
        ON CONFLICT (project_id, device_id, to_firmware) DO UPDATE
        SET from_firmware = EXCLUDED.from_firmware,
            status = EXCLUDED.status,
            error_code = EXCLUDED.error_code,
            reported_at = EXCLUDED.reported_at
        """;

    // Devices whose newest event is installed or updated, by the version they run, their hardware and the UTC hour of
    // their last report (migrations 0027, 0031): each changed device out of its old hour and into its new one. Immutable functions
    // only: Citus evaluates them the same wherever it does.
    private const string CountSilenceSql = $$"""
        INSERT INTO firmware_silence_counts AS c (project_id, firmware, hardware, reported_hour, devices)
        SELECT change.project_id,
               side.firmware,
               change.hardware,
               date_trunc('hour', side.reported_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
               sum(side.sign)
        FROM {{StepEvents.DeviceStateChanges}} AS change
        CROSS JOIN LATERAL (VALUES (change.new_firmware, change.new_status, change.new_reported_at, 1),
                                   (change.old_firmware, change.old_status, change.old_reported_at, -1)) AS side(firmware, status, reported_at, sign)
        WHERE side.status IN ('installed', 'updated')
          AND side.firmware IS NOT NULL
          AND side.reported_at IS NOT NULL
        GROUP BY change.project_id, side.firmware, change.hardware, date_trunc('hour', side.reported_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
        HAVING sum(side.sign) <> 0
        ORDER BY 1, 2, 3, 4
        ON CONFLICT (project_id, firmware, hardware, reported_hour) DO UPDATE
        SET devices = c.devices + EXCLUDED.devices
        """;

    public IEnumerable<ProjectionStatement> Statements { get; } =
    [
        new(StepOrder.TransitionCounts, CountTransitionsSql),
        new(StepOrder.TransitionErrors, CountTransitionErrorsSql),
        new(StepOrder.TransitionStatuses, KeepTransitionStatusSql),
        new(StepOrder.SilenceCounts, CountSilenceSql),
    ];
}
