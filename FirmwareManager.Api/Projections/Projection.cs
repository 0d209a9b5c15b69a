namespace FirmwareManager.Api.Projections;

/// <summary>
/// One feature's part of the derived state, projected from the project's feed: statements that run in each step's
/// transaction, with the step's parameters (<c>@ProjectId</c>, <c>@FirstArrival</c> and <c>@LastArrival</c>, the range
/// of the feed the step applies; <c>@EarliestOccurredAt</c> and <c>@LatestOccurredAt</c>, its events' times, which
/// bound the partitions read; <c>@StepTime</c>, the step's time). Registered as a service; the step runs every
/// registered projection's statements in <see cref="StepOrder"/>.
/// </summary>
public interface IProjection
{
    IEnumerable<ProjectionStatement> Statements { get; }
}

/// <summary>A statement of a projection, where it runs in the step, and what the project must have for it to run.</summary>
public sealed record ProjectionStatement(StepOrder Order, string Sql, StepNeeds Needs = StepNeeds.Nothing);

/// <summary>
/// The order of a step's statements, across features: first the step's changes, derived once from its events and the
/// state as the step found it (<see cref="StepChanges"/>); then each statement that counts reads the state (as the step
/// found it) that the statements after it change, so the counts come first and the devices' own state last; last, the
/// changes deleted.
/// </summary>
public enum StepOrder
{
    StepDevices = 1,
    StepTransitions = 2,
    VersionCounts = 10,
    VersionStatuses = 20,
    TransitionCounts = 30,
    TransitionErrors = 40,
    RolloutCounts = 50,
    RolloutDevices = 60,
    RolloutHalts = 70,
    TransitionStatuses = 80,
    SilenceCounts = 90,
    DeviceState = 100,
    EventDeliveries = 110,
    StepChangesCleared = 120,
}

/// <summary>What a project must have for a statement to run: the rollouts' and the webhooks' run only when there are any.</summary>
[Flags]
public enum StepNeeds
{
    Nothing = 0,
    Rollouts = 1,
    Webhooks = 2,
    RolloutsAndWebhooks = Rollouts | Webhooks,
}
