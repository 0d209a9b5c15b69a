using Microsoft.Extensions.Diagnostics.HealthChecks;
using Npgsql;

namespace FirmwareManager.Api.Database;

public static class DatabaseExtensions
{
    /// <summary>One <see cref="NpgsqlDataSource"/> (and so one connection pool) for the whole process.</summary>
    public static IServiceCollection AddDatabase(this IServiceCollection services, IConfiguration configuration)
    {
        var connectionString = configuration.GetFirmwareManagerConnectionString();
        var hosts = new NpgsqlConnectionStringBuilder(connectionString).Host ?? "";
        if (hosts.Contains(',', StringComparison.Ordinal))
        {
            // Several hosts: a primary and hot standbys (README, "Read replicas"). One multi-host data source, and two
            // views of it: the service's own data source always reaches the primary (writes, key lookups, reads that
            // must see their own writes), and ReadRouting's prefers a standby.
            services.AddSingleton(sp => ConfigureDataSource(connectionString, sp).BuildMultiHost());
            services.AddSingleton<NpgsqlDataSource>(sp =>
                sp.GetRequiredService<NpgsqlMultiHostDataSource>().WithTargetSession(TargetSessionAttributes.Primary));
            services.AddSingleton(sp => new StandbyDataSource(
                sp.GetRequiredService<NpgsqlMultiHostDataSource>().WithTargetSession(TargetSessionAttributes.PreferStandby)));
        }
        else
        {
            services.AddSingleton(sp => ConfigureDataSource(connectionString, sp).Build());
            services.AddSingleton(new StandbyDataSource(null));
        }

        services.AddSingleton<ReadRouting>();
        services.AddSingleton(sp => DatabaseEngine.Detect(sp.GetRequiredService<NpgsqlDataSource>()));
        // One instance: it shares its answer between the requests of a second (see the class).
        services.AddSingleton<DatabaseHealthCheck>();
        services.AddHealthChecks().AddCheck<DatabaseHealthCheck>("database");
        return services;
    }

    private static NpgsqlDataSourceBuilder ConfigureDataSource(string connectionString, IServiceProvider services)
    {
        var builder = new NpgsqlDataSourceBuilder(connectionString)
        {
            // The pool's name labels its metrics: a fixed word, never the connection string.
            Name = "firmware_manager",
        };

        // Every request runs the same few statements: prepare them once per connection rather than have
        // PostgreSQL parse and plan each again (the recording statement's plan is the costliest part of a
        // report). The connection string can still set its own values.
        if (builder.ConnectionStringBuilder.MaxAutoPrepare == 0)
        {
            builder.ConnectionStringBuilder.MaxAutoPrepare = 64;
            builder.ConnectionStringBuilder.AutoPrepareMinUsages = 2;
        }

        // Npgsql resets a pooled connection's session before handing it out again: with prepared statements,
        // seven statements (RESET ALL, UNLISTEN *, pg_advisory_unlock_all(), ...) ahead of the next command,
        // on every request. The service leaves no session state behind (no SET, LISTEN or temporary table;
        // its one advisory lock is released in a finally), so it has nothing to reset.
        // (NpgsqlConnectionStringBuilder.ContainsKey answers whether a keyword exists, not whether it was set.)
        if (!SetsKeyword(connectionString, "No Reset On Close"))
        {
            builder.ConnectionStringBuilder.NoResetOnClose = true;
        }

        return builder.UseLoggerFactory(services.GetRequiredService<ILoggerFactory>());
    }

    /// <summary>
    /// <paramref name="connectionString"/> for a single connection that writes (migrations, commands): with several
    /// hosts, bound to the primary unless it says otherwise, since Npgsql would otherwise take the first that answers.
    /// </summary>
    public static string ForPrimary(string connectionString)
    {
        var builder = new NpgsqlConnectionStringBuilder(connectionString);
        return builder.Host?.Contains(',', StringComparison.Ordinal) == true && !SetsKeyword(connectionString, "Target Session Attributes")
            ? new NpgsqlConnectionStringBuilder(connectionString) { TargetSessionAttributes = "primary" }.ConnectionString
            : connectionString;
    }

    /// <summary>Whether the connection string itself sets <paramref name="keyword"/>, in any spacing or case.</summary>
    internal static bool SetsKeyword(string connectionString, string keyword)
    {
        static string Normalized(string word) => word.Replace(" ", "", StringComparison.Ordinal).ToLowerInvariant();
        var wanted = Normalized(keyword);
        var parsed = new System.Data.Common.DbConnectionStringBuilder { ConnectionString = connectionString };
        return parsed.Keys.Cast<string>().Any(key => Normalized(key) == wanted);
    }
}

public static class HealthEndpoint
{
    /// <summary><c>GET /health</c>: 200 <c>Healthy</c> while the database answers, 503 <c>Unhealthy</c> when not. No key needed.</summary>
    public static RouteHandlerBuilder MapHealth(this IEndpointRouteBuilder app) =>
        app.MapGet("/health", async (HealthCheckService health, CancellationToken cancellationToken) =>
            {
                var report = await health.CheckHealthAsync(cancellationToken);
                return report.Status == HealthStatus.Healthy
                    ? Results.Text("Healthy")
                    : Results.Text("Unhealthy", statusCode: StatusCodes.Status503ServiceUnavailable);
            })
            .AllowAnonymous()
            .WithTags("Service")
            .WithSummary("200 Healthy while the database answers, 503 Unhealthy when not. No key needed.")
            .Produces<string>(StatusCodes.Status200OK, "text/plain")
            .Produces<string>(StatusCodes.Status503ServiceUnavailable, "text/plain");
}

/// <summary>
/// Healthy while PostgreSQL answers a trivial query within the check's time. One check at a time, its answer
/// reused for <see cref="Reuse"/>: a flood of <c>/health</c> (it needs no key) costs the database one query a
/// second, not one a request.
/// </summary>
internal sealed class DatabaseHealthCheck(NpgsqlDataSource dataSource) : IHealthCheck
{
    private const string Ping = "SELECT 1";
    public static readonly TimeSpan Reuse = TimeSpan.FromSeconds(1);

    private readonly Lock _lock = new();
    private Task<HealthCheckResult>? _current;
    private long _checkedAt;
    private int _queries;

    /// <summary>Queries sent so far (for tests of the flood).</summary>
    public int Queries => Volatile.Read(ref _queries);

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        lock (_lock)
        {
            if (_current is null || (_current.IsCompleted && Environment.TickCount64 - _checkedAt >= Reuse.TotalMilliseconds))
            {
                _checkedAt = Environment.TickCount64;
                _current = PingAsync();
            }

            return _current.WaitAsync(cancellationToken);
        }
    }

    private async Task<HealthCheckResult> PingAsync()
    {
        Interlocked.Increment(ref _queries);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(3));
        try
        {
            await using var command = dataSource.CreateCommand(Ping);
            await command.ExecuteScalarAsync(timeout.Token);
            return HealthCheckResult.Healthy();
        }
        catch (Exception e) when (e is NpgsqlException or OperationCanceledException or TimeoutException)
        {
            return HealthCheckResult.Unhealthy("The database does not answer.", e);
        }
    }
}
