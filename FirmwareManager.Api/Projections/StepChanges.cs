namespace FirmwareManager.Api.Projections;

/// <summary>
/// A step's changes, derived once from its events at its start and deleted at its end (migration 0042): each device
/// of the step (<see cref="StepEvents.StepDevicesFromEvents"/>) and each device's change per update target
/// (<see cref="StepEvents.TransitionChangesFromEvents"/>), which the version counts, the transitions, the silence,
/// the rollouts and the devices' own state read (up to five statements each, every one deriving them again from the
/// events before this). The rows live within the step's transaction: a crash or a failed statement takes them
/// with it, and a project's steps run one at a time, so a step reads only its own.
/// </summary>
public sealed class StepChanges : IProjection
{
    private const string WriteStepDevicesSql = $$"""
        INSERT INTO projection_step_devices (device_id, project_id, last_arrival, hardware, current_firmware, downgraded_from, last_event_status, last_event_at,
                                             last_reported_at, status, reported_at, received_at, move_firmware, move_reported_at, move_device_at, moves, downgrade)
        SELECT device.device_id,
               device.project_id,
               @LastArrival,
               device.hardware,
               device.current_firmware,
               device.downgraded_from,
               device.last_event_status,
               device.last_event_at,
               device.last_reported_at,
               device.status,
               device.reported_at,
               device.received_at,
               device.move_firmware,
               device.move_reported_at,
               device.move_device_at,
               device.moves,
               device.downgrade
        FROM {{StepEvents.StepDevicesFromEvents}} AS device
        """;

    private const string WriteStepTransitionsSql = $$"""
        INSERT INTO projection_step_transitions (device_id, project_id, last_arrival, to_firmware, new_status, reported_at, new_from, new_error, old_status, old_from, old_error)
        SELECT change.device_id,
               change.project_id,
               @LastArrival,
               change.to_firmware,
               change.new_status,
               change.reported_at,
               change.new_from,
               change.new_error,
               change.old_status,
               change.old_from,
               change.old_error
        FROM {{StepEvents.TransitionChangesFromEvents}} AS change
        """;

    private const string ClearStepChangesSql = """
        DELETE FROM projection_step_devices
        WHERE project_id = @ProjectId
          AND last_arrival = @LastArrival
        """;

    private const string ClearStepTransitionsSql = """
        DELETE FROM projection_step_transitions
        WHERE project_id = @ProjectId
          AND last_arrival = @LastArrival
        """;

    public IEnumerable<ProjectionStatement> Statements { get; } =
    [
        new(StepOrder.StepDevices, WriteStepDevicesSql),
        new(StepOrder.StepTransitions, WriteStepTransitionsSql),
        new(StepOrder.StepChangesCleared, ClearStepChangesSql),
        new(StepOrder.StepChangesCleared, ClearStepTransitionsSql),
    ];
}
