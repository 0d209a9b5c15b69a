using System.ComponentModel.DataAnnotations;
using System.Globalization;
using System.Threading.RateLimiting;
using FirmwareManager.Api.Auth;
using Microsoft.AspNetCore.Http.Timeouts;
using Microsoft.AspNetCore.RateLimiting;

namespace FirmwareManager.Api.Http;

/// <summary>
/// A change that would pass one of the limits on what a project or an owner may hold (README, "Limits"): answered
/// 409 with the limit in the problem's detail, and nothing of the change is stored.
/// </summary>
public sealed class LimitReachedException(string detail) : Exception(detail);

/// <summary>The <c>FirmwareManager:Limits</c> section: how long a request and a shutdown may take.</summary>
public sealed class LimitsOptions
{
    public const string Section = "FirmwareManager:Limits";

    /// <summary>A request still running after this many seconds is cancelled (its transaction rolled back) and answered 503.</summary>
    [Range(1, 3600)]
    public int RequestTimeoutSeconds { get; set; } = 30;

    /// <summary>On SIGTERM, requests in flight get this long to finish before the process exits.</summary>
    [Range(1, 3600)]
    public int ShutdownTimeoutSeconds { get; set; } = 15;
}

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

/// <summary>
/// What one request may cost: body, header and time limits in Kestrel and the request-timeout middleware, the
/// shutdown drain, and a per-key rate limit (429 with Retry-After) so that one flooding key cannot starve the rest.
/// </summary>
public static class Limits
{
    public const string LongRunningPolicy = "long-running";

    /// <summary>Header limits are Kestrel's defaults, set here so they are written down in one place; Kestrel answers 431 or 414 above them.</summary>
    public const int MaxRequestHeadersTotalBytes = 32 * 1024;
    public const int MaxRequestHeaderCount = 100;
    public const int MaxRequestLineBytes = 8 * 1024;
    public static readonly TimeSpan RequestHeadersTimeout = TimeSpan.FromSeconds(10);

    public static WebApplicationBuilder AddRequestLimits(this WebApplicationBuilder builder)
    {
        // Read now: Kestrel, the shutdown and the timeout policies are configured from them before the host is built.
        var limits = Settings.Read<LimitsOptions>(builder.Configuration, LimitsOptions.Section);
        builder.Services.AddSettings<RateLimitOptions>(builder.Configuration, RateLimitOptions.Section);

        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.Limits.MaxRequestBodySize = RequestLimits.MaxBodyBytes;
            kestrel.Limits.MaxRequestHeadersTotalSize = MaxRequestHeadersTotalBytes;
            kestrel.Limits.MaxRequestHeaderCount = MaxRequestHeaderCount;
            kestrel.Limits.MaxRequestLineSize = MaxRequestLineBytes;
            kestrel.Limits.RequestHeadersTimeout = RequestHeadersTimeout;
            kestrel.AddServerHeader = false;
        });
        builder.Services.Configure<HostOptions>(host => host.ShutdownTimeout = TimeSpan.FromSeconds(limits.ShutdownTimeoutSeconds));
        builder.Services.AddRequestTimeouts(timeouts =>
        {
            timeouts.DefaultPolicy = TimeoutPolicy(TimeSpan.FromSeconds(limits.RequestTimeoutSeconds));
            // Enrolling 100,000 devices streams its answer for a few seconds after the commit.
            timeouts.AddPolicy(LongRunningPolicy, TimeoutPolicy(TimeSpan.FromSeconds(Math.Max(300, limits.RequestTimeoutSeconds))));
        });
        builder.Services.AddSingleton<KeyRateLimiter>();
        builder.Services.AddOptions<RateLimiterOptions>().Configure<KeyRateLimiter>((rateLimits, limiter) =>
        {
            rateLimits.GlobalLimiter = limiter;
            rateLimits.OnRejected = RejectAsync;
        });
        builder.Services.AddRateLimiter(_ => { });
        return builder;
    }

    public static WebApplication UseRequestLimits(this WebApplication app)
    {
        app.UseRequestTimeouts();
        app.UseRateLimiter();
        return app;
    }

    private static RequestTimeoutPolicy TimeoutPolicy(TimeSpan timeout) => new()
    {
        Timeout = timeout,
        TimeoutStatusCode = StatusCodes.Status503ServiceUnavailable,
        WriteTimeoutResponse = context => Problems.WriteAsync(context, StatusCodes.Status503ServiceUnavailable,
            "Request timed out", $"The request took longer than {timeout.TotalSeconds:0} seconds and was cancelled; nothing was stored. Retry later.").AsTask(),
    };

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
