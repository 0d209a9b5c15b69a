// One service host at a time: the metrics pipeline listens to instruments by name across the process, so
// hosts alive side by side would report into each other's /metrics.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
