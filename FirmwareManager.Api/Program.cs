using FirmwareManager.Api;
using FirmwareManager.Api.Audit;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Commands;
using FirmwareManager.Api.Dashboard;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Devices;
using FirmwareManager.Api.Events;
using FirmwareManager.Api.Firmware;
using FirmwareManager.Api.FleetHealth;
using FirmwareManager.Api.Http;
using FirmwareManager.Api.Keys;
using FirmwareManager.Api.Members;
using FirmwareManager.Api.Observability;
using FirmwareManager.Api.Projections;
using FirmwareManager.Api.Rollouts;
using FirmwareManager.Api.Upkeep;
using FirmwareManager.Api.Versions;
using FirmwareManager.Api.Webhooks;
using Microsoft.Extensions.Options;
using Serilog;

if (CommandLine.IsCommand(args))
{
    return await CommandLine.RunAsync(args);
}

Log.Logger = new LoggerConfiguration().WriteTo.Console().CreateLogger();

try
{
    var builder = WebApplication.CreateBuilder(args);

    // Settings, logs and metrics, JSON
    builder.AddFirmwareManagerSettings();
    builder.AddObservability();
    builder.AddRequestLimits();
    builder.Services.ConfigureHttpJsonOptions(options =>
    {
        options.SerializerOptions.PropertyNamingPolicy = System.Text.Json.JsonNamingPolicy.SnakeCaseLower;
        options.SerializerOptions.TypeInfoResolverChain.Insert(0, AppJsonContext.Default);
    });

    // Database, errors, API keys
    builder.Services.AddDatabase(builder.Configuration);
    builder.Services.AddErrorHandling();
    builder.Services.AddApiKeyAuthentication(builder.Configuration);
    builder.Services.AddKeyRateLimits(builder.Configuration);
    builder.Services.AddApiDocs();

    // Repositories
    // The time "silent for longer than" is measured against (a test moves it).
    builder.Services.AddSingleton(TimeProvider.System);
    builder.Services.AddSingleton<FirmwareEvents>();
    builder.Services.AddSingleton<EventPartitionSpan>();
    builder.Services.AddSingleton<DeviceHistory>();
    builder.Services.AddSingleton<EventFeed>();
    builder.Services.AddDataProtectionInDatabase();
    builder.Services.AddSingleton<Cursors>();
    builder.Services.AddExports(builder.Configuration);
    builder.Services.AddSingleton<DeviceSummaries>();
    builder.Services.AddSingleton<FirmwareVersions>();
    builder.Services.AddSingleton<ProjectKeys>();
    builder.Services.AddSingleton<DeviceProvisioning>();
    builder.Services.AddSingleton<DeviceAttributes>();
    builder.Services.AddSingleton<Memberships>();
    builder.Services.AddSingleton<AuditLog>();
    builder.Services.AddSingleton<ProjectRetention>();
    builder.Services.AddSingleton<FleetHealthSettings>();
    builder.Services.AddSingleton<FirmwareTransitions>();
    builder.Services.AddSingleton<DeclaredRollouts>();

    // Reports of many devices committed together
    builder.Services.AddReportGroupCommit(builder.Configuration);

    // Everything derived from the events, projected from each project's feed, each feature its own part
    builder.Services.AddProjections(builder.Configuration);
    builder.Services.AddSingleton<IProjection, VersionsProjection>();
    builder.Services.AddSingleton<IProjection, TransitionsProjection>();
    builder.Services.AddSingleton<IProjection, RolloutsProjection>();
    builder.Services.AddSingleton<IProjection, DeviceStateProjection>();
    builder.Services.AddSingleton<IProjection, DeliveriesProjection>();

    // Upkeep as the schema's owner (partitions, retention), each feature its own step, run in this order
    builder.Services.AddSettings<RetentionOptions>(builder.Configuration, RetentionOptions.Section);
    builder.Services.AddSingleton(_ => new MaintenanceConnection(builder.Configuration.GetMigrationsConnectionString()));
    builder.Services.AddSingleton<IUpkeepStep, EventUpkeep>();
    builder.Services.AddSingleton<IUpkeepStep, AuditRetention>();
    builder.Services.AddSingleton<IUpkeepStep, DeliveryRetention>();
    builder.Services.AddSingleton<UpkeepService>();
    builder.Services.AddHostedService(sp => sp.GetRequiredService<UpkeepService>());

    // Background work
    builder.Services.AddWebhooks(builder.Configuration);

    var app = builder.Build();

    app.UseSecurityHeaders();
    // Outside the exception handler, so that the log line has the status the client got, not the exception's 500.
    app.UseRequestLogging();
    app.UseResponseCompression();
    app.UseExceptionHandler();
    app.UseStatusCodePages();
    // The dashboard's files, before any key is asked for: they hold no data.
    app.UseDashboard();
    app.UseAuthentication();
    app.UseAuthorization();
    app.UseReadYourWrites();
    app.UseRequestLimits();
    app.UseKeyRateLimits();

    // Endpoints
    app.MapHealth();
    app.MapMetrics();
    app.MapApiDocs();
    app.MapFirmwareApi();
    app.MapEventFeedApi();
    app.MapDevicesApi();
    app.MapFirmwareVersionsApi();
    app.MapFirmwareTransitionsApi();
    app.MapFleetHealthSettingsApi();
    app.MapRolloutsApi();
    app.MapWebhooksApi();
    app.MapKeysApi();
    app.MapMembersApi();
    app.MapAuditApi();
    app.MapRetentionApi();

    // Settings first (every ValidateOnStart), so that a bad one is named before anything touches the database.
    app.Services.GetRequiredService<Microsoft.Extensions.Options.IStartupValidator>().Validate();

    // Schema (and demo data when switched on) before the first request; a failed script stops the start. Each
    // step is named in a failure, and tried again when it meets another instance's startup (StartupSteps).
    // The events' monthly partitions are made ahead before the first request (DDL takes locks ingest would wait
    // for), under the migrations' lock: DDL on every node on Citus, it must not run beside another instance's grants.
    // Data Protection's first key is made there too, so that instances starting together share it.
    await StartupSteps.RunAsync("Migrations", () => DatabaseMigrator.MigrateAsync(
        builder.Configuration.GetMigrationsConnectionString(),
        app.Services.GetRequiredService<IOptions<FirmwareManagerOptions>>().Value.DemoData,
        app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("FirmwareManager.Migrations"),
        throughScript: null,
        thenUnderTheLock: () => StartupSteps.RunAsync("Making the events' partitions ahead and the first protection key", async () =>
        {
            // The engine (PostgreSQL or Citus), read once now that the database answers and has its schema.
            _ = app.Services.GetRequiredService<DatabaseEngine>();
            await app.Services.GetRequiredService<UpkeepService>().AtStartupAsync(CancellationToken.None);
            DataProtectionExtensions.EnsureKey(app.Services);
        })));

    await StartupSteps.RunAsync("Checking the login's privileges", () => LoginPrivileges.WarnWhenPrivilegedAsync(
        app.Services.GetRequiredService<Npgsql.NpgsqlDataSource>(), app.Environment,
        app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("FirmwareManager.Database")));

    await app.RunAsync();
    return 0;
}
catch (Exception e) when (StartupFailure.Explain(e) is { } reason)
{
    // Expected (no database, a bad setting, a failing migration): one line with the cause, no stack trace.
    Log.Fatal("FirmwareManager could not start: {Reason}", reason);
    return 1;
}
catch (Exception e) when (e is not HostAbortedException)
{
    Log.Fatal(e, "FirmwareManager could not start: {Reason}", e.Message);
    return 1;
}
finally
{
    await Log.CloseAndFlushAsync();
}

public partial class Program;
