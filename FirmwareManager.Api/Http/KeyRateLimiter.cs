using System.Collections.Concurrent;
using System.Diagnostics;
using System.Threading.RateLimiting;
using FirmwareManager.Api.Auth;
using Microsoft.Extensions.Options;

namespace FirmwareManager.Api.Http;

/// <summary>
/// The rate limiter's global limiter: one token bucket per API key, refilled lazily from the clock when the key
/// is next used (no timer per bucket), in a concurrent dictionary (no lock shared by all requests). Requests
/// without an authenticated caller are not limited here.
/// </summary>
/// <remarks>
/// Hand-written rather than <see cref="PartitionedRateLimiter.Create{TResource, TPartitionKey}"/>, whose one lock
/// for every request of every key was the service's most contended lock (docs/performance.md, "What limits each
/// figure"). Idle buckets (full again) are dropped every minute, so memory follows the keys active lately.
/// </remarks>
public sealed class KeyRateLimiter : PartitionedRateLimiter<HttpContext>
{
    private static readonly TimeSpan SweepInterval = TimeSpan.FromMinutes(1);

    private readonly IOptionsMonitor<RateLimitOptions> _options;
    private readonly ConcurrentDictionary<(CallerKind Kind, long KeyId), Bucket> _buckets = new();
    private readonly Timer _sweeper;

    public KeyRateLimiter(IOptionsMonitor<RateLimitOptions> options)
    {
        _options = options;
        _sweeper = new Timer(_ => Sweep(), null, SweepInterval, SweepInterval);
    }

    public override RateLimiterStatistics? GetStatistics(HttpContext resource) => null;

    protected override RateLimitLease AttemptAcquireCore(HttpContext resource, int permitCount)
    {
        if (resource.User.Identity?.IsAuthenticated != true)
        {
            return Lease.Acquired;
        }

        var caller = Caller.From(resource.User);
        var limit = caller.Kind == CallerKind.Device ? _options.CurrentValue.Device : _options.CurrentValue.Member;
        if (limit.PermitsPerSecond == 0)
        {
            return Lease.Acquired;
        }

        var bucket = _buckets.GetOrAdd((caller.Kind, caller.KeyId), static (_, l) => new Bucket(l.Burst), limit);
        var wait = bucket.TryTake(permitCount, limit.PermitsPerSecond, limit.Burst);
        return wait == TimeSpan.Zero ? Lease.Acquired : new Lease(wait);
    }

    protected override ValueTask<RateLimitLease> AcquireAsyncCore(HttpContext resource, int permitCount, CancellationToken cancellationToken) =>
        ValueTask.FromResult(AttemptAcquireCore(resource, permitCount));

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _sweeper.Dispose();
        }

        base.Dispose(disposing);
    }

    private void Sweep()
    {
        var options = _options.CurrentValue;
        foreach (var (key, bucket) in _buckets)
        {
            var limit = key.Kind == CallerKind.Device ? options.Device : options.Member;
            if (bucket.IsFull(limit.PermitsPerSecond, limit.Burst))
            {
                _buckets.TryRemove(key, out _);
            }
        }
    }

    private sealed class Bucket(int burst)
    {
        private double _tokens = burst;
        private long _refilledAt = Stopwatch.GetTimestamp();

        /// <summary>Takes the permits and answers zero, or answers how long until they would be there.</summary>
        public TimeSpan TryTake(int permits, int perSecond, int burst)
        {
            lock (this)
            {
                Refill(perSecond, burst);
                if (_tokens >= permits)
                {
                    _tokens -= permits;
                    return TimeSpan.Zero;
                }

                return TimeSpan.FromSeconds((permits - _tokens) / perSecond);
            }
        }

        public bool IsFull(int perSecond, int burst)
        {
            lock (this)
            {
                Refill(perSecond, burst);
                return _tokens >= burst;
            }
        }

        private void Refill(int perSecond, int burst)
        {
            var now = Stopwatch.GetTimestamp();
            _tokens = Math.Min(burst, _tokens + Stopwatch.GetElapsedTime(_refilledAt, now).TotalSeconds * perSecond);
            _refilledAt = now;
        }
    }

    private sealed class Lease(TimeSpan? retryAfter) : RateLimitLease
    {
        public static readonly Lease Acquired = new(null);

        public override bool IsAcquired => retryAfter is null;

        public override IEnumerable<string> MetadataNames => retryAfter is null ? [] : [MetadataName.RetryAfter.Name];

        public override bool TryGetMetadata(string metadataName, out object? metadata)
        {
            metadata = retryAfter;
            return retryAfter is not null && metadataName == MetadataName.RetryAfter.Name;
        }
    }
}
