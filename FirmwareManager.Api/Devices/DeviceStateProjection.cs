using FirmwareManager.Api.Projections;

namespace FirmwareManager.Api.Devices;

/// <summary>Each device's current firmware, newest event and last report, projected from the feed.</summary>
public sealed class DeviceStateProjection : IProjection
{
    // Last, the devices themselves.
    private const string KeepDeviceStateSql = $$"""
        UPDATE devices AS d
        SET current_firmware = change.new_firmware,
            current_firmware_at = CASE WHEN change.moved THEN change.moved_at ELSE d.current_firmware_at END,
            current_firmware_device_at = CASE WHEN change.moved THEN change.moved_device_at ELSE d.current_firmware_device_at END,
            downgraded_from = change.new_downgraded_from,
            last_reported_at = change.new_reported_at,
            last_event_status = change.new_status,
            last_event_at = change.new_event_at
        FROM {{StepEvents.DeviceStateChanges}} AS change
        WHERE d.project_id = @ProjectId
          AND d.id = change.device_id
        """;

    public IEnumerable<ProjectionStatement> Statements { get; } =
    [
        new(StepOrder.DeviceState, KeepDeviceStateSql),
    ];
}
