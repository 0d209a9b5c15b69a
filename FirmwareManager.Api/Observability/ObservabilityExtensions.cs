using System.Diagnostics;
using System.Globalization;
using Npgsql;
using OpenTelemetry.Metrics;
using Serilog;
using Serilog.Formatting.Compact;

namespace FirmwareManager.Api.Observability;

/// <summary>The <c>FirmwareManager:Metrics</c> section.</summary>
public sealed class MetricsOptions
{
    public const string Section = "FirmwareManager:Metrics";

    /// <summary>Serve Prometheus metrics at <c>/metrics</c>.</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>Serve <c>/metrics</c> only on this port (on every interface) instead of the API's own.</summary>
    [System.ComponentModel.DataAnnotations.Range(1, 65535)]
    public int? Port { get; set; }
}

public static class ObservabilityExtensions
{
    private const string TextTemplate = "[{Timestamp:HH:mm:ss} {Level:u3}] {Message:lj}{TraceSuffix}{NewLine}{Exception}";

    public static WebApplicationBuilder AddObservability(this WebApplicationBuilder builder)
    {
        // Read now, as the host is configured: the logger is set up before it is built.
        var json = Settings.Read<FirmwareManagerOptions>(builder.Configuration, FirmwareManagerOptions.Section).LogFormat == "json";
        builder.Services.AddSerilog((services, logger) =>
        {
            logger
                .ReadFrom.Configuration(builder.Configuration)
                .ReadFrom.Services(services)
                .Enrich.FromLogContext()
                .Enrich.With<TraceSuffixEnricher>();
            if (json)
            {
                logger.WriteTo.Console(new RenderedCompactJsonFormatter());
            }
            else
            {
                logger.WriteTo.Console(outputTemplate: TextTemplate, formatProvider: CultureInfo.InvariantCulture);
            }
        }, preserveStaticLogger: true);
        LoggersByCategory.Decorate(builder.Services);

        var metrics = Settings.Read<MetricsOptions>(builder.Configuration, MetricsOptions.Section);
        builder.Services.AddSingleton(metrics);
        builder.Services.AddSingleton<FirmwareMetrics>();
        if (metrics.Enabled)
        {
            builder.Services.AddOpenTelemetry().WithMetrics(meters => meters
                // ASP.NET Core's own meters, by name: requests (hosting), connections (Kestrel), unhandled exceptions.
                // Not the meters of routing, authentication, authorization, rate limiting and the memory pool, which
                // OpenTelemetry's AddAspNetCoreInstrumentation adds too: seven more updates on every request and one
                // for each buffer the pool rents, each answered as well by http_server_request_duration_seconds's route
                // and status (a 401, 403 or 429 is a status there) or not read by anyone (the README lists what
                // /metrics serves). Measured in docs/performance.md, "Metrics a request pays for".
                .AddMeter("Microsoft.AspNetCore.Hosting", "Microsoft.AspNetCore.Server.Kestrel", "Microsoft.AspNetCore.Diagnostics")
                .AddRuntimeInstrumentation()
                .AddNpgsqlInstrumentation()
                // Npgsql counts every command five times (in flight up and down, bytes written, bytes read, its
                // duration): on a history read, four of its eight metric updates, and the metrics were the largest
                // managed share of the API's samples after Npgsql itself (perf during bench/history-baselines.sh). The
                // duration and the pool's gauges stay; the three per-command counters, which the pool's gauges and
                // PostgreSQL's own statistics answer better, are not collected.
                .AddView("db.client.operation.npgsql.executing", MetricStreamConfiguration.Drop)
                .AddView("db.client.operation.npgsql.bytes_read", MetricStreamConfiguration.Drop)
                .AddView("db.client.operation.npgsql.bytes_written", MetricStreamConfiguration.Drop)
                .AddMeter(FirmwareMetrics.MeterName)
                .AddPrometheusExporter());
            if (metrics.Port is { } port)
            {
                builder.WebHost.UseUrls([.. ApiUrls(builder.Configuration), $"http://+:{port}"]);
            }
        }

        return builder;
    }

    public static WebApplication MapMetrics(this WebApplication app)
    {
        var metrics = app.Services.GetRequiredService<MetricsOptions>();
        if (metrics.Enabled)
        {
            var endpoint = app.MapPrometheusScrapingEndpoint("/metrics").ExcludeFromDescription();
            if (metrics.Port is { } port)
            {
                endpoint.RequireHost($"*:{port}");
            }
        }

        return app;
    }

    /// <summary>The API's own listen addresses, as configured or by default, before the metrics port is added.</summary>
    private static IEnumerable<string> ApiUrls(ConfigurationManager configuration)
    {
        var urls = configuration[WebHostDefaults.ServerUrlsKey];
        if (!string.IsNullOrEmpty(urls))
        {
            return urls.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        }

        var ports = configuration[WebHostDefaults.HttpPortsKey];
        return string.IsNullOrEmpty(ports)
            ? [SettingsExtensions.DefaultUrl]
            : ports.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(p => $"http://+:{p}");
    }

    /// <summary>" trace=&lt;id&gt;" on events logged inside a request, so a problem response's trace_id finds its log lines.</summary>
    private sealed class TraceSuffixEnricher : Serilog.Core.ILogEventEnricher
    {
        public void Enrich(Serilog.Events.LogEvent logEvent, Serilog.Core.ILogEventPropertyFactory propertyFactory) =>
            logEvent.AddPropertyIfAbsent(propertyFactory.CreateProperty(
                "TraceSuffix", logEvent.TraceId is { } trace ? $" trace={trace.ToHexString()}" : ""));
    }

    /// <summary>The id a problem response carries as <c>trace_id</c>: the W3C trace id of the request.</summary>
    public static string TraceId(HttpContext http) => Activity.Current?.TraceId.ToHexString() ?? http.TraceIdentifier;
}
