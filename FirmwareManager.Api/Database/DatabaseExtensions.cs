using Microsoft.Extensions.Diagnostics.HealthChecks;
using Npgsql;

namespace FirmwareManager.Api.Database;

public static class DatabaseExtensions
{
    /// <summary>One <see cref="NpgsqlDataSource"/> (and so one connection pool) for the whole process.</summary>
    public static IServiceCollection AddDatabase(this IServiceCollection services, IConfiguration configuration)
    {
        var connectionString = configuration.GetFirmwareManagerConnectionString();
        services.AddSingleton(sp =>
        {
            var builder = new NpgsqlDataSourceBuilder(connectionString)
            {
                // The pool's name labels its metrics: a fixed word, never the connection string.
                Name = "firmware_manager",
            };
            return builder.UseLoggerFactory(sp.GetRequiredService<ILoggerFactory>()).Build();
        });
        services.AddHealthChecks().AddCheck<DatabaseHealthCheck>("database");
        return services;
    }
}

/// <summary>Healthy while PostgreSQL answers a trivial query within the check's time.</summary>
internal sealed class DatabaseHealthCheck(NpgsqlDataSource dataSource) : IHealthCheck
{
    private const string Ping = "SELECT 1";

    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(3));
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
