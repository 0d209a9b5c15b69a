using Microsoft.Extensions.Options;

namespace FirmwareManager.Api;

/// <summary>The <c>FirmwareManager</c> configuration section (env <c>FirmwareManager__*</c>).</summary>
public sealed class FirmwareManagerOptions
{
    public const string Section = "FirmwareManager";

    /// <summary>Applies the demo data set (migrations/demo) at startup. Off unless set, in every environment.</summary>
    public bool DemoData { get; set; }
}

public static class SettingsExtensions
{
    public const string ConnectionStringName = "FirmwareManager";
    public const string MigrationsConnectionStringName = "FirmwareManagerMigrations";

    /// <summary>Where the service listens unless ASPNETCORE_URLS, ASPNETCORE_HTTP_PORTS or --urls say otherwise.</summary>
    public const string DefaultUrl = "http://localhost:8880";

    /// <summary>The connection string, or a startup failure that names the setting and its environment variable.</summary>
    public static string GetFirmwareManagerConnectionString(this IConfiguration configuration)
    {
        var connectionString = configuration.GetConnectionString(ConnectionStringName);
        if (string.IsNullOrWhiteSpace(connectionString))
        {
            throw new OptionsValidationException(
                $"ConnectionStrings:{ConnectionStringName}",
                typeof(string),
                [$"No database configured: set ConnectionStrings:{ConnectionStringName} " +
                 $"(environment variable ConnectionStrings__{ConnectionStringName}), " +
                 "or start the service with ./run.sh, which starts a local PostgreSQL."]);
        }

        return connectionString;
    }

    /// <summary>
    /// The connection string migrations (and the demo data, and create-project) run with: the schema owner's, when
    /// <c>ConnectionStrings:FirmwareManagerMigrations</c> is set, so that the service itself can run as a role
    /// without DDL rights (migration 0008); otherwise the service's own.
    /// </summary>
    public static string GetMigrationsConnectionString(this IConfiguration configuration)
    {
        var migrations = configuration.GetConnectionString(MigrationsConnectionStringName);
        return string.IsNullOrWhiteSpace(migrations) ? configuration.GetFirmwareManagerConnectionString() : migrations;
    }

    public static WebApplicationBuilder AddFirmwareManagerSettings(this WebApplicationBuilder builder)
    {
        builder.Services.AddOptions<FirmwareManagerOptions>()
            .Bind(builder.Configuration.GetSection(FirmwareManagerOptions.Section))
            .ValidateOnStart();

        if (string.IsNullOrEmpty(builder.Configuration[WebHostDefaults.ServerUrlsKey]) &&
            string.IsNullOrEmpty(builder.Configuration[WebHostDefaults.HttpPortsKey]) &&
            string.IsNullOrEmpty(builder.Configuration[WebHostDefaults.HttpsPortsKey]))
        {
            builder.WebHost.UseUrls(DefaultUrl);
        }
        return builder;
    }
}

public static class RequestLimits
{
    /// <summary>The largest request body accepted (64 KiB); larger bodies get 413.</summary>
    public const int MaxBodyBytes = 64 * 1024;

    /// <summary>The largest batch of events accepted (1 MiB: 1,000 events of about 1 KiB).</summary>
    public const int MaxBatchBodyBytes = 1024 * 1024;
}
