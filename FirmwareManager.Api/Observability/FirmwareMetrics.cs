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
    }

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
