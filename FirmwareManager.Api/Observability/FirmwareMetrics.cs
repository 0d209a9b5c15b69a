using System.Diagnostics.Metrics;

namespace FirmwareManager.Api.Observability;

/// <summary>The service's own instruments. Labels hold only values from fixed lists, never input or secrets.</summary>
public sealed class FirmwareMetrics
{
    public const string MeterName = "FirmwareManager";

    private readonly Counter<long> _eventsIngested;
    private readonly Counter<long> _keyCache;
    private readonly Histogram<int> _groupSize;
    private readonly Counter<long> _reads;
    private readonly Histogram<double> _ingestStages;
    private readonly Meter _meter;

    public FirmwareMetrics(IMeterFactory meterFactory)
    {
        var meter = _meter = meterFactory.Create(MeterName);
        _eventsIngested = meter.CreateCounter<long>(
            "firmware_manager.events.ingested",
            unit: "{event}",
            description: "Firmware events reported by devices, by status and outcome (created, repeat, rejected).");
        _keyCache = meter.CreateCounter<long>(
            "firmware_manager.api_key_cache.lookups",
            unit: "{lookup}",
            description: "API key lookups answered from the cache (result=hit) or the database (result=miss).");
        _groupSize = meter.CreateHistogram<int>(
            "firmware_manager.ingest.group_size",
            unit: "{report}",
            description: "Events stored per transaction by the group commit (a report is one, a batch its size; a single report under light load).",
            advice: new InstrumentAdvice<int> { HistogramBucketBoundaries = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 5000, 10000] });
        _reads = meter.CreateCounter<long>(
            "firmware_manager.reads",
            unit: "{read}",
            description: "Reads that may use a standby (only with several hosts in the connection string), by the node that " +
                         "served them and why the primary did: device, standby_behind, not_on_standby, standby_failed, no_standby.");
        _ingestStages = meter.CreateHistogram<double>(
            "firmware_manager.ingest.stage.duration",
            unit: "s",
            description: "Where a report's time goes before its answer, by stage: key_lookup (an API key not in the cache, " +
                         "looked up in the database), queued (received, waiting for its group's transaction to begin), " +
                         "transaction (its group's transaction, begin to commit).",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] });
    }

    /// <summary>How long one stage of a report took (<paramref name="stage"/>: key_lookup, queued or transaction).</summary>
    public void IngestStage(string stage, TimeSpan took) =>
        _ingestStages.Record(took.TotalSeconds, new KeyValuePair<string, object?>("stage", stage));

    public void ReadServed(string node, string reason) =>
        _reads.Add(1, new KeyValuePair<string, object?>("node", node), new KeyValuePair<string, object?>("reason", reason));

    public void GroupCommitted(int reports) => _groupSize.Record(reports);

    /// <summary>Reports waiting for the next group: near zero unless the database falls behind.</summary>
    public void ObserveWaitingReports(Func<int> waiting) =>
        _meter.CreateObservableGauge("firmware_manager.ingest.waiting", waiting, unit: "{report}",
            description: "Reports received and waiting for their group's transaction to begin.");

    public void KeyCache(bool hit) => _keyCache.Add(1, new KeyValuePair<string, object?>("result", hit ? "hit" : "miss"));

    public void EventCreated(string status) => Record(status, "created");

    public void EventRepeated(string status) => Record(status, "repeat");

    /// <summary>A report that failed validation; its status is labelled only when it is a known one.</summary>
    /// <summary>A rejected report, labelled by the caller with a status from the fixed list (or "invalid").</summary>
    public void EventRejected(string statusLabel) => Record(statusLabel, "rejected");

    private void Record(string status, string outcome) =>
        _eventsIngested.Add(1, new KeyValuePair<string, object?>("status", status), new KeyValuePair<string, object?>("outcome", outcome));
}
