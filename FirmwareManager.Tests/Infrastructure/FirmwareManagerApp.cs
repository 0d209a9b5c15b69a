using System.Collections.Concurrent;
using Dapper;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Database;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;
using Respawn;
using Respawn.Graph;
using Serilog.Core;
using Serilog.Events;

namespace FirmwareManager.Tests.Infrastructure;

/// <summary>
/// The real service, in memory, on a database of its own with the demo data set, running as the least-privileged
/// API role with the migrations run as the owner, as a production deployment does. Shared by the test classes of the <see cref="ApiTestGroup"/>; <see cref="ResetAsync"/> puts the
/// data back to the demo set before each test.
/// </summary>
public sealed class FirmwareManagerApp : WebApplicationFactory<Program>, IAsyncLifetime
{
    public const string DeviceKey1 = "super_secret_key_1";
    public const string DeviceKey2 = "super_secret_key_2";
    public const string DeviceKey3 = "super_secret_key_3";
    public const string MemberKey1 = "super_secret_member_key_1";
    public const string MemberKey2 = "super_secret_member_key_2";
    public const string MemberKey3 = "super_secret_member_key_3";

    // Every table of the schema emptied and its identities restarted, whatever a migration adds: all but the
    // migration journal, the keys of migrations 0005 and 0029 and Data Protection's key ring, which the running service
    // needs as they are (what it protected stays readable only with the keys it protected it with).
    private static readonly RespawnerOptions EmptyAllTables = new()
    {
        DbAdapter = DbAdapter.Postgres,
        SchemasToInclude = ["public"],
        TablesToIgnore = [new Table("public", "schemaversions"), new Table("public", "service_secrets"), new Table("public", "data_protection_keys")],
        // Sequences are reset below with setval: Citus refuses ALTER SEQUENCE ... RESTART on a distributed table's.
        WithReseed = false,
    };

    private const string RestartSequencesSql = """
        SELECT setval(format('%I.%I', schemaname, sequencename)::regclass, 1, false)
        FROM pg_sequences
        WHERE schemaname = 'public'
        """;

    private Respawner? _respawner;
    private readonly IReadOnlyDictionary<string, string> _settings;
    private readonly bool _answerBeforeProjected;

    public FirmwareManagerApp()
        : this(realServer: false, new Dictionary<string, string>())
    {
    }

    /// <param name="realServer">Kestrel on a loopback port (<see cref="BaseAddress"/>) instead of the in-memory test
    /// server: for a browser, which cannot reach the in-memory one.</param>
    /// <param name="settings">Settings applied after the tests' own, such as the rate limits put back.</param>
    /// <remarks>Internal: xunit builds a collection fixture through its one public constructor.</remarks>
    /// <param name="answerBeforeProjected">Reports answered as soon as they are stored, as in production; otherwise
    /// once projected (<see cref="ProjectedBeforeAnswered"/>).</param>
    internal FirmwareManagerApp(bool realServer, IReadOnlyDictionary<string, string> settings, bool answerBeforeProjected = false)
    {
        _settings = settings;
        _answerBeforeProjected = answerBeforeProjected;
        if (realServer)
        {
            UseKestrel(options => options.Listen(System.Net.IPAddress.Loopback, 0));
        }
    }

    /// <summary>Where the service listens (the in-memory server's is <c>http://localhost</c>).</summary>
    public Uri BaseAddress => new(
        Services.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>()
            .Features.Get<Microsoft.AspNetCore.Hosting.Server.Features.IServerAddressesFeature>()?.Addresses.FirstOrDefault()
        ?? "http://localhost");

    /// <summary>The database's owner (no CREATEROLE, no superuser): what migrations run as, and what tests use to prepare and check data.</summary>
    public string ConnectionString { get; private set; } = "";

    /// <summary>What the service runs as: the least-privileged API role of migration 0008, as in production.</summary>
    public string ApiConnectionString { get; private set; } = "";

    public CapturedLogs Logs { get; } = new();

    /// <summary>The service's clock: the machine's, moved by <see cref="MovableClock.Offset"/> (back to zero at every reset).</summary>
    public MovableClock Clock { get; } = new();

    public async Task InitializeAsync()
    {
        var server = await PostgresServer.SharedAsync();
        // Owned by a login that may not create roles, as a managed PostgreSQL gives: the migrations must run as it.
        ConnectionString = await server.CreateOwnedDatabaseAsync();
        await DatabaseMigrator.MigrateAsync(ConnectionString, applyDemoData: true, NullLogger.Instance);
        // The DBA step (grant-api-role) then makes the service's login a member of the API role; the service's own
        // startup applies the migrations again (a no-op) and the grants again, as the owner.
        ApiConnectionString = await server.ApiRoleConnectionStringAsync(ConnectionString);
        StartServer();
    }

    async Task IAsyncLifetime.DisposeAsync() => await DisposeAsync();

    protected override void ConfigureWebHost(IWebHostBuilder builder)
    {
        builder.UseSetting("ConnectionStrings:FirmwareManager", ApiConnectionString);
        builder.UseSetting("ConnectionStrings:FirmwareManagerMigrations", ConnectionString);
        builder.UseSetting("FirmwareManager:DemoData", "true");
        // Tests send hundreds of requests with one key in a moment; RateLimitTests check the limits on a service of their own.
        builder.UseSetting("FirmwareManager:RateLimits:Device:PermitsPerSecond", "0");
        builder.UseSetting("FirmwareManager:RateLimits:Member:PermitsPerSecond", "0");
        // Webhook tests start senders of their own (WebhookDeliveryTests); the receiver they start is on loopback.
        builder.UseSetting("FirmwareManager:Webhooks:SendDeliveries", "false");
        builder.UseSetting("FirmwareManager:Webhooks:AllowPrivateTargets", "true");
        // Tests read right after each write (the shared service answers a report once it is projected): each step
        // starts as soon as events wait. ProjectionTests' service paces its steps as by default.
        if (!_answerBeforeProjected)
        {
            builder.UseSetting("FirmwareManager:Projections:StepIntervalMs", "0");
        }

        foreach (var (key, value) in _settings)
        {
            builder.UseSetting(key, value);
        }

        builder.ConfigureServices(services =>
        {
            services.AddSingleton<ILogEventSink>(Logs);
            services.AddSingleton<TimeProvider>(Clock);
            if (!_answerBeforeProjected)
            {
                services.AddSingleton<IStartupFilter>(new ProjectedBeforeAnswered(ConnectionString));
            }
        });
    }

    /// <summary>Back to exactly the demo data set.</summary>
    public async Task ResetAsync()
    {
        Clock.Offset = TimeSpan.Zero;
        // The service's projection step may be running meanwhile (a test's last reports), taking the same rows in
        // another order: a deadlock (on Citus, a distributed one) rolls the emptying back, and it is done again.
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await using var connection = new NpgsqlConnection(ConnectionString);
                await connection.OpenAsync();
                _respawner ??= await Respawner.CreateAsync(connection, EmptyAllTables);
                await _respawner.ResetAsync(connection);
                await connection.ExecuteAsync(RestartSequencesSql);
                break;
            }
            catch (PostgresException e) when (e.SqlState is PostgresErrorCodes.DeadlockDetected && attempt < 5)
            {
                await Task.Delay(100 * attempt);
            }
        }

        await DatabaseMigrator.MigrateAsync(ConnectionString, applyDemoData: true, NullLogger.Instance);

        // The data changed underneath the service, as another instance would change it.
        Services.GetRequiredService<KeyCache>().ForgetAll();
        Services.GetRequiredService<ProjectedPositions>().ForgetAll();
    }

    /// <summary>A client that sends <paramref name="apiKey"/> in the reference API's <c>api_key</c> header.</summary>
    public HttpClient ClientWithKey(string? apiKey)
    {
        var client = CreateClient();
        if (apiKey is not null)
        {
            client.DefaultRequestHeaders.Add(ApiKeyAuthenticationHandler.KeyHeader, apiKey);
        }

        return client;
    }

    public NpgsqlConnection OpenConnection()
    {
        var connection = new NpgsqlConnection(ConnectionString);
        connection.Open();
        return connection;
    }

    /// <summary>
    /// Holds the project's projection position locked, as an instance projecting the project holds it, so that every
    /// background step passes the project by until the hold is disposed. The project has had a step (its row exists).
    /// </summary>
    public async Task<IAsyncDisposable> HoldProjectionAsync(long projectId)
    {
        var connection = OpenConnection();
        var transaction = await connection.BeginTransactionAsync();
        var position = await connection.ExecuteScalarAsync<long?>(
            "SELECT position FROM project_projections WHERE project_id = @ProjectId FOR UPDATE", new { ProjectId = projectId }, transaction);
        if (position is null)
        {
            await connection.DisposeAsync();
            throw new InvalidOperationException($"Project {projectId} has no projection position to hold before its first step.");
        }

        return new ProjectionHold(connection, transaction);
    }

    private sealed class ProjectionHold(NpgsqlConnection connection, NpgsqlTransaction transaction) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            await transaction.RollbackAsync();
            await connection.DisposeAsync();
        }
    }

    private const string InsertDeviceSql = """
        INSERT INTO devices (project_id, name)
        VALUES (@ProjectId, 'test device')
        RETURNING id
        """;

    private const string InsertDeviceKeySql = """
        WITH k AS (
            INSERT INTO device_api_keys (project_id, device_id, key_prefix, key_hash)
            SELECT project_id, id, 'test', @KeyHash
            FROM devices
            WHERE id = @DeviceId
            RETURNING project_id, key_hash
        )
        INSERT INTO api_key_digests (key_hash, project_id)
        SELECT key_hash, project_id
        FROM k
        """;

    /// <summary>A new device in the project with a key of its own, as provisioning will create them.</summary>
    public async Task<(long DeviceId, string Key)> AddDeviceAsync(long projectId)
    {
        await using var connection = OpenConnection();
        var deviceId = await connection.ExecuteScalarAsync<long>(InsertDeviceSql, new { ProjectId = projectId });
        var key = await AddDeviceKeyAsync(deviceId);
        return (deviceId, key);
    }

    /// <summary>Returns once a session of this database waits for a lock (another session holds it), or fails after 10 s.</summary>
    public async Task WaitUntilASessionWaitsForALockAsync() =>
        await (await PostgresServer.SharedAsync()).WaitUntilASessionWaitsForALockAsync(ConnectionString);

    public async Task<string> AddDeviceKeyAsync(long deviceId)
    {
        var key = "test_" + Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(24));
        await using var connection = OpenConnection();
        await connection.ExecuteAsync(InsertDeviceKeySql, new { DeviceId = deviceId, KeyHash = ApiKeyHasher.Hash(key) });
        return key;
    }
}

[CollectionDefinition(Name)]
public sealed class ApiTestGroup : ICollectionFixture<FirmwareManagerApp>
{
    public const string Name = "api";
}

/// <summary>Every log event the service writes, rendered with its properties, for tests that read the logs.</summary>
/// <summary>The machine's clock, moved by <see cref="Offset"/>: for what the service measures against "now".</summary>
public sealed class MovableClock : TimeProvider
{
    public TimeSpan Offset { get; set; }

    public override DateTimeOffset GetUtcNow() => base.GetUtcNow() + Offset;
}

public sealed class CapturedLogs : ILogEventSink
{
    private readonly ConcurrentQueue<LogEvent> _events = new();

    public void Emit(LogEvent logEvent) => _events.Enqueue(logEvent);

    public IReadOnlyList<LogEvent> Events => [.. _events];

    /// <summary>Each event as text: the rendered message, its properties and its exception.</summary>
    public IEnumerable<string> Rendered() => _events.Select(e =>
        $"{e.RenderMessage(System.Globalization.CultureInfo.InvariantCulture)} " +
        string.Join(' ', e.Properties.Select(p => $"{p.Key}={p.Value}")) + $" {e.Exception}");
}

/// <summary>Base for tests on the shared service: the demo data set, fresh for each test.</summary>
[Collection(ApiTestGroup.Name)]
public abstract class ApiTest(FirmwareManagerApp app) : IAsyncLifetime
{
    protected FirmwareManagerApp App { get; } = app;

    public Task InitializeAsync() => App.ResetAsync();

    public Task DisposeAsync() => Task.CompletedTask;
}
