using System.Net;
using System.Net.Http.Json;
using Dapper;
using FirmwareManager.Tests.Infrastructure;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Npgsql;
using static FirmwareManager.Tests.Firmware.PagingHistoryTests;

namespace FirmwareManager.Tests.ScaleOut;

/// <summary>
/// On Citus, every statement of a hot path runs as one task on one shard (docs/scale-out.md "The hot paths, one
/// node each"). The service's connections here carry <c>citus.multi_task_query_log_level = error</c>: Citus then
/// refuses to run any statement it would split over several shards, so a hot path that stopped naming its project
/// (or a key lookup that fanned out) would fail its request here with a 500.
/// Requests go one at a time: a group of lookups or reports then holds one request, as on a quiet service. A group
/// of lookups for keys of N projects reads N shards by design, never every shard.
/// </summary>
public sealed class HotPathsOnOneShardTests(HotPathsOnOneShardTests.OneTaskService service)
    : IClassFixture<HotPathsOnOneShardTests.OneTaskService>
{
    private readonly OneTaskService _service = service;

    [CitusFact]
    public async Task The_guard_refuses_a_statement_that_reads_every_shard()
    {
        await using var dataSource = NpgsqlDataSource.Create(_service.ConnectionString);
        await using var everyShard = dataSource.CreateCommand("SELECT count(*) FROM firmware_events");
        await using var oneShard = dataSource.CreateCommand("SELECT count(*) FROM firmware_events WHERE project_id = 1");

        var refused = async () => await everyShard.ExecuteScalarAsync();

        (await refused.Should().ThrowAsync<PostgresException>()).Which.MessageText.Should().Contain("multi-task query");
        (await oneShard.ExecuteScalarAsync()).Should().Be(4L, "project 1's demo events, read from its one shard");
    }

    [CitusFact]
    public async Task Reports_and_batches_from_devices_of_two_projects_each_run_on_their_projects_shard()
    {
        var at = new DateTime(2026, 11, 1, 0, 0, 0, DateTimeKind.Utc);
        // Project 1 with a webhook and an open rollout, so that its reports also record deliveries and count for the
        // rollout (and halt it: a failure rate of 1 over at least one device).
        using var admin = _service.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var webhook = await admin.PostAsJsonAsync("/webhooks", new { url = "http://127.0.0.1:1024/hook", events = new[] { "event.installed", "rollout.halted" } });
        webhook.StatusCode.Should().Be(HttpStatusCode.Created, await webhook.Content.ReadAsStringAsync());
        var rollout = await admin.PostAsJsonAsync("/rollouts", new { firmware = "2.0.1", max_failure_rate = 0, min_devices = 1 });
        rollout.StatusCode.Should().Be(HttpStatusCode.Created, await rollout.Content.ReadAsStringAsync());
        var hardware = await admin.PatchAsJsonAsync("/devices", new { device_ids = new[] { 1, 2 }, hardware = "rev-B", add_tags = new[] { "pilot" } });
        hardware.StatusCode.Should().Be(HttpStatusCode.OK, await hardware.Content.ReadAsStringAsync());
        foreach (var (key, deviceId) in new[] { (FirmwareManagerApp.DeviceKey1, 1L), (FirmwareManagerApp.DeviceKey3, 3L) })
        {
            using var device = _service.ClientWithKey(key);

            var report = await device.PostEventAsync(deviceId, Event("2.0.0", "installed", at));
            var repeat = await device.PostEventAsync(deviceId, Event("2.0.0", "installed", at));
            var batch = await device.PostAsJsonAsync($"/firmware/{deviceId}/batch",
                new[] { Event("2.0.1", "downloading", at.AddMinutes(1)), Event("2.0.1", "failed", at.AddMinutes(2)) });

            report.StatusCode.Should().Be(HttpStatusCode.Created, await report.Content.ReadAsStringAsync());
            repeat.StatusCode.Should().Be(HttpStatusCode.OK, "an identical repeat is acknowledged, not stored twice");
            batch.StatusCode.Should().Be(HttpStatusCode.OK, await batch.Content.ReadAsStringAsync());
        }

        // The projection steps ran on the same one-task connections: a statement that spanned shards would have failed
        // its step, and the position would not have reached the feed. Project 1 has an open rollout and a webhook, so
        // its steps ran the rollouts' and the deliveries' statements too.
        await using var owner = new NpgsqlConnection(_service.OwnerConnectionString);
        await owner.OpenAsync();
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (await owner.ExecuteScalarAsync<long>(BehindSql) > 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }

        (await owner.ExecuteScalarAsync<long>(BehindSql)).Should().Be(0, "every project's projection reaches its feed, one shard a statement");
        (await owner.ExecuteScalarAsync<long>("SELECT count(*) FROM webhook_deliveries WHERE project_id = 1 AND event_type = 'event.installed'"))
            .Should().Be(1, "device 1's install, recorded for the webhook by the step");
    }

    // Projects whose feed is ahead of their projected position.
    private const string BehindSql = """
        SELECT count(*)
        FROM project_event_arrivals AS a
        LEFT JOIN project_projections AS p ON p.project_id = a.project_id
        WHERE a.last_arrival > COALESCE(p.position, 0)
        """;

    [CitusFact]
    public async Task A_members_reads_each_run_on_its_projects_shard()
    {
        using var device = _service.ClientWithKey(FirmwareManagerApp.DeviceKey2);
        var created = await device.PostEventAsync(2, Event("1.1.0", "failed", new DateTime(2026, 11, 2, 0, 0, 0, DateTimeKind.Utc)));
        created.StatusCode.Should().Be(HttpStatusCode.Created, await created.Content.ReadAsStringAsync());
        using var member = _service.ClientWithKey(FirmwareManagerApp.MemberKey2);

        string[] reads =
        [
            "/firmware/2", "/firmware/2?limit=1&status=failed", created.Headers.Location!.OriginalString,
            "/events?limit=10", "/events?after=beginning&limit=10", "/events?after=latest&limit=10",
            "/devices?limit=10", "/devices?firmware=1.1.0", "/devices?status_of_last_event=failed",
            "/devices?silent_since=2026-01-01T00:00:00Z", "/devices/2",
            "/firmware-versions", "/firmware-versions?limit=1", "/me",
            "/events?error_code=E_NONE", "/firmware/2?error_code=E_NONE", "/firmware-transitions", "/firmware-transitions?to=1.1.0&limit=1",
            "/firmware-transitions?hardware=rev-B", "/firmware-transitions?tag=pilot", "/devices?hardware=rev-B", "/devices?tag=pilot",
            "/devices?silent_after_update=true", "/devices?unexplained_downgrade=true", "/firmware-versions?hardware=rev-B",
            "/firmware-versions?tag=pilot", "/firmware-versions?by=hardware", "/rollouts", "/project/fleet-health",
        ];
        foreach (var read in reads)
        {
            var response = await member.GetAsync(read);
            response.StatusCode.Should().Be(HttpStatusCode.OK, $"{read}: {await response.Content.ReadAsStringAsync()}");
            if (NextLink(response) is { } next)
            {
                var page = await member.GetAsync(next);
                page.StatusCode.Should().Be(HttpStatusCode.OK, $"{next}: {await page.Content.ReadAsStringAsync()}");
            }
        }
    }

    /// <summary>
    /// The service on a database of its own with the demo data, as the API role, its connections limited to
    /// one-task statements; migrations as the owner. Its key cache starts empty, so the first request with each
    /// key looks it up. Nothing is started on plain PostgreSQL, where the tests are skipped.
    /// </summary>
    public sealed class OneTaskService : WebApplicationFactory<Program>, IAsyncLifetime
    {
        private string _owner = "";

        /// <summary>The owner's connection string, without the guard: for the tests' own checks.</summary>
        public string OwnerConnectionString => _owner;

        /// <summary>The API role's connection string, with <c>citus.multi_task_query_log_level = error</c>.</summary>
        public string ConnectionString { get; private set; } = "";

        public async Task InitializeAsync()
        {
            if (!PostgresServer.IsCitus)
            {
                return;
            }

            var server = await PostgresServer.SharedAsync();
            _owner = await server.CreateOwnedDatabaseAsync();
            await FirmwareManager.Api.Database.DatabaseMigrator.MigrateAsync(
                _owner, applyDemoData: true, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
            var api = await server.ApiRoleConnectionStringAsync(_owner);
            ConnectionString = new NpgsqlConnectionStringBuilder(api) { Options = "-c citus.multi_task_query_log_level=error" }.ConnectionString;
        }

        async Task IAsyncLifetime.DisposeAsync() => await DisposeAsync();

        public HttpClient ClientWithKey(string key)
        {
            var client = CreateClient();
            client.DefaultRequestHeaders.Add(FirmwareManager.Api.Auth.ApiKeyAuthenticationHandler.KeyHeader, key);
            return client;
        }

        // Webhook targets on loopback may be made; nothing is sent (the sender's look for due deliveries spans shards).
        protected override void ConfigureWebHost(IWebHostBuilder builder) => builder
            .UseSetting("ConnectionStrings:FirmwareManager", ConnectionString)
            .UseSetting("ConnectionStrings:FirmwareManagerMigrations", _owner)
            .UseSetting("FirmwareManager:Webhooks:AllowPrivateTargets", "true")
            .UseSetting("FirmwareManager:Webhooks:SendDeliveries", "false");
    }
}
