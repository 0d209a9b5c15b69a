using System.ComponentModel.DataAnnotations;
using System.Globalization;
using Microsoft.AspNetCore.Http.Timeouts;

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

/// <summary>
/// What one request may cost: body, header and time limits in Kestrel and the request-timeout middleware and the
/// shutdown drain (the per-key rate limit is Auth's: <c>KeyRateLimits</c>).
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
        return builder;
    }

    public static WebApplication UseRequestLimits(this WebApplication app)
    {
        app.UseRequestTimeouts();
        return app;
    }

    private static RequestTimeoutPolicy TimeoutPolicy(TimeSpan timeout) => new()
    {
        Timeout = timeout,
        TimeoutStatusCode = StatusCodes.Status503ServiceUnavailable,
        WriteTimeoutResponse = context => Problems.WriteAsync(context, StatusCodes.Status503ServiceUnavailable,
            "Request timed out", $"The request took longer than {timeout.TotalSeconds:0} seconds and was cancelled; nothing was stored. Retry later.").AsTask(),
    };
}
