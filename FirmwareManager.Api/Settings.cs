using System.ComponentModel.DataAnnotations;
using System.Reflection;
using Microsoft.Extensions.Options;

namespace FirmwareManager.Api;

/// <summary>The <c>FirmwareManager</c> configuration section (env <c>FirmwareManager__*</c>).</summary>
public sealed class FirmwareManagerOptions
{
    public const string Section = "FirmwareManager";

    /// <summary>Applies the demo data set (migrations/demo) at startup. Off unless set, in every environment.</summary>
    public bool DemoData { get; set; }

    /// <summary>Console logs for people (<c>text</c>) or compact JSON, one object a line, for log shippers (<c>json</c>).</summary>
    [AllowedValues("text", "json")]
    public string LogFormat { get; set; } = "text";

    /// <summary>How often the keys' <c>last_used_at</c> is written (in the background, at most about hourly per key).</summary>
    [Range(1, 3600)]
    public int KeyUsageFlushSeconds { get; set; } = 30;
}

/// <summary>
/// Every settings class is bound and checked one way: its DataAnnotations (nested objects too), at startup, with a
/// message that names each bad setting by its configuration key and environment variable.
/// </summary>
public static class Settings
{
    /// <summary>Binds <typeparamref name="T"/> to <paramref name="section"/> and checks it at startup (<c>ValidateOnStart</c>).</summary>
    public static OptionsBuilder<T> AddSettings<T>(this IServiceCollection services, IConfiguration configuration, string section)
        where T : class
    {
        services.AddSingleton<IValidateOptions<T>>(new SettingsValidator<T>(section));
        return services.AddOptions<T>().Bind(configuration.GetSection(section)).ValidateOnStart();
    }

    /// <summary>
    /// The section's values now, checked the same way: for the few that configure the host before it is built
    /// (Kestrel's limits, where logs go, the metrics port). Throws <see cref="OptionsValidationException"/>.
    /// </summary>
    public static T Read<T>(IConfiguration configuration, string section)
        where T : class, new()
    {
        var value = configuration.GetSection(section).Get<T>() ?? new T();
        var result = new SettingsValidator<T>(section).Validate(null, value);
        return result.Failed ? throw new OptionsValidationException(section, typeof(T), result.Failures) : value;
    }

    private sealed class SettingsValidator<T>(string section) : IValidateOptions<T>
        where T : class
    {
        public ValidateOptionsResult Validate(string? name, T options)
        {
            var failures = new List<string>();
            Check(options, section, failures);
            return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
        }

        private static void Check(object value, string path, List<string> failures)
        {
            var results = new List<ValidationResult>();
            Validator.TryValidateObject(value, new ValidationContext(value), results, validateAllProperties: true);
            foreach (var result in results)
            {
                foreach (var member in result.MemberNames.DefaultIfEmpty(""))
                {
                    var key = member.Length == 0 ? path : $"{path}:{member}";
                    failures.Add($"{key} (environment variable {key.Replace(":", "__", StringComparison.Ordinal)}): {result.ErrorMessage}");
                }
            }

            // Nested settings objects (RateLimits:Device, ...) are checked as their own sections.
            foreach (var property in value.GetType().GetProperties(BindingFlags.Public | BindingFlags.Instance))
            {
                if (property.PropertyType.IsClass && property.PropertyType != typeof(string) &&
                    property.PropertyType.Namespace?.StartsWith("FirmwareManager", StringComparison.Ordinal) == true &&
                    property.GetValue(value) is { } nested)
                {
                    Check(nested, $"{path}:{property.Name}", failures);
                }
            }
        }
    }
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
    /// without DDL rights (migration 0008); otherwise the service's own. With several hosts, the primary's.
    /// </summary>
    public static string GetMigrationsConnectionString(this IConfiguration configuration)
    {
        var migrations = configuration.GetConnectionString(MigrationsConnectionStringName);
        return Database.DatabaseExtensions.ForPrimary(
            string.IsNullOrWhiteSpace(migrations) ? configuration.GetFirmwareManagerConnectionString() : migrations);
    }

    public static WebApplicationBuilder AddFirmwareManagerSettings(this WebApplicationBuilder builder)
    {
        AddDefaultsBesideTheAssembly(builder.Configuration);
        builder.Services.AddSettings<FirmwareManagerOptions>(builder.Configuration, FirmwareManagerOptions.Section);

        if (string.IsNullOrEmpty(builder.Configuration[WebHostDefaults.ServerUrlsKey]) &&
            string.IsNullOrEmpty(builder.Configuration[WebHostDefaults.HttpPortsKey]) &&
            string.IsNullOrEmpty(builder.Configuration[WebHostDefaults.HttpsPortsKey]))
        {
            builder.WebHost.UseUrls(DefaultUrl);
        }
        return builder;
    }

    /// <summary>
    /// appsettings.json is read from the content root, which is the working directory: started as
    /// <c>dotnet /srv/fm/FirmwareManager.Api.dll</c> from elsewhere (as a process manager may), the service found no
    /// settings file and logged every SQL statement at Information. The file beside the assembly is read as well, below
    /// the content root's (which overrides it when there is one) and everything else (environment, command line).
    /// </summary>
    private static void AddDefaultsBesideTheAssembly(ConfigurationManager configuration)
    {
        var beside = Path.Combine(AppContext.BaseDirectory, "appsettings.json");
        var sources = ((IConfigurationBuilder)configuration).Sources;
        var contentRoots = sources.OfType<Microsoft.Extensions.Configuration.Json.JsonConfigurationSource>()
            .FirstOrDefault(s => s.Path == "appsettings.json");
        if (!File.Exists(beside) || contentRoots is null)
        {
            return;
        }

        var defaults = new Microsoft.Extensions.Configuration.Json.JsonConfigurationSource { Path = beside, Optional = true, ReloadOnChange = false };
        defaults.ResolveFileProvider();
        sources.Insert(sources.IndexOf(contentRoots), defaults);
    }
}

public static class RequestLimits
{
    /// <summary>The largest request body accepted (64 KiB); larger bodies get 413.</summary>
    public const int MaxBodyBytes = 64 * 1024;

    /// <summary>The largest batch of events accepted (1 MiB: 1,000 events of about 1 KiB).</summary>
    public const int MaxBatchBodyBytes = 1024 * 1024;
}
