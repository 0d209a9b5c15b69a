using System.Diagnostics.Metrics;
using FirmwareManager.Api.Observability;

namespace FirmwareManager.Api.Projections;

/// <summary>The projection's instruments, on the service's meter: steps, events, lag, and what waits.</summary>
public sealed class ProjectionMetrics
{
    private readonly Counter<long> _steps;
    private readonly Counter<long> _events;
    private readonly Counter<long> _claimsMissed;
    private readonly Histogram<double> _lag;
    private readonly Histogram<double> _stepDuration;
    private long _waiting;

    public ProjectionMetrics(IMeterFactory meterFactory)
    {
        var meter = meterFactory.Create(FirmwareMetrics.MeterName);
        _steps = meter.CreateCounter<long>(
            "firmware_manager.projection.steps",
            unit: "{step}",
            description: "Projection steps this instance committed (each one project's events, in feed order).");
        _events = meter.CreateCounter<long>(
            "firmware_manager.projection.events",
            unit: "{event}",
            description: "Events this instance projected into the derived state.");
        _claimsMissed = meter.CreateCounter<long>(
            "firmware_manager.projection.claims_missed",
            unit: "{claim}",
            description: "Steps this instance began that found the project's position held by another step (another instance's), and did nothing.");
        _lag = meter.CreateHistogram<double>(
            "firmware_manager.projection.lag",
            unit: "s",
            description: "Per step: from when its oldest event was received to the step's commit (how stale the derived state was).",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60] });
        _stepDuration = meter.CreateHistogram<double>(
            "firmware_manager.projection.step_duration",
            unit: "s",
            description: "How long a projection step took, from its first statement to its commit.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5] });
        meter.CreateObservableGauge(
            "firmware_manager.projection.waiting",
            () => Volatile.Read(ref _waiting),
            unit: "{event}",
            description: "Events stored and not yet projected, over every project, as this instance's last look found them.");
    }

    public void Stepped(int events, TimeSpan took, TimeSpan? lag)
    {
        _steps.Add(1);
        _events.Add(events);
        _stepDuration.Record(took.TotalSeconds);
        if (lag is { } l)
        {
            _lag.Record(Math.Max(0, l.TotalSeconds));
        }
    }

    public void ClaimMissed() => _claimsMissed.Add(1);

    public void Waiting(long events) => Volatile.Write(ref _waiting, events);
}
