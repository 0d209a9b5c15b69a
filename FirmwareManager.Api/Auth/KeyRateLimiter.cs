using System.Collections.Concurrent;
using System.ComponentModel.DataAnnotations;
using System.Diagnostics;
using System.Globalization;
using System.Threading.RateLimiting;
using FirmwareManager.Api.Http;
using Microsoft.AspNetCore.RateLimiting;
using Microsoft.Extensions.Options;

namespace FirmwareManager.Api.Auth;

/// <summary>One token bucket per API key: <see cref="PermitsPerSecond"/> sustained, <see cref="Burst"/> at once. 0 switches it off.</summary>
public sealed class KeyRateLimit
{
    [Range(0, 1_000_000)]
    public int PermitsPerSecond { get; set; }

    [Range(1, 1_000_000)]
    public int Burst { get; set; } = 1;
}

/// <summary>The <c>FirmwareManager:RateLimits</c> section: separate budgets for device keys and member keys.</summary>
public sealed class RateLimitOptions
{
    public const string Section = "FirmwareManager:RateLimits";

    /// <summary>A device reports a few events an hour; a burst covers a backlog sent after a reconnect (batches are one request).</summary>
    public KeyRateLimit Device { get; set; } = new() { PermitsPerSecond = 5, Burst = 50 };

    /// <summary>An operator's tool paging through a large fleet.</summary>
    public KeyRateLimit Member { get; set; } = new() { PermitsPerSecond = 100, Burst = 200 };
}

/// <summary>A per-key rate limit (429 with Retry-After), so that one flooding key cannot starve the rest.</summary>
public static class KeyRateLimits
{
    public static IServiceCollection AddKeyRateLimits(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddSettings<RateLimitOptions>(configuration, RateLimitOptions.Section);
        services.AddSingleton<KeyRateLimiter>();
        services.AddOptions<RateLimiterOptions>().Configure<KeyRateLimiter>((rateLimits, limiter) =>
        {
            rateLimits.GlobalLimiter = limiter;
            rateLimits.OnRejected = RejectAsync;
        });
        return services.AddRateLimiter(_ => { });
    }

    /// <summary>After authentication: the limit is the caller's key's.</summary>
    public static IApplicationBuilder UseKeyRateLimits(this IApplicationBuilder app) => app.UseRateLimiter();

    private static async ValueTask RejectAsync(OnRejectedContext rejected, CancellationToken cancellationToken)
    {
        var seconds = rejected.Lease.TryGetMetadata(MetadataName.RetryAfter, out var retryAfter)
            ? Math.Max(1, (int)Math.Ceiling(retryAfter.TotalSeconds))
            : 1;
        var context = rejected.HttpContext;
        context.Response.Headers.RetryAfter = seconds.ToString(CultureInfo.InvariantCulture);
        await Problems.WriteAsync(context, StatusCodes.Status429TooManyRequests, "Too many requests",
            $"This API key sent more requests than its rate limit allows. Retry in {seconds} seconds; nothing was stored.");
    }
}

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
