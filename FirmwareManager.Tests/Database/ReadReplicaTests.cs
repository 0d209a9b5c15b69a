using System.Net;
using System.Net.Http.Json;
using Dapper;
using FirmwareManager.Api.Database;
using FirmwareManager.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;
using static FirmwareManager.Tests.Firmware.PagingHistoryTests;

namespace FirmwareManager.Tests.Database;

/// <summary>
/// The service with a connection string naming a primary and a hot standby, both real (<c>pg_basebackup -R</c> on
/// loopback): reads go to the standby, but never at the cost of a client's own writes, a cursor's pages, or a
/// standby that lags or goes away.
/// </summary>
public sealed class ReadReplicaTests : IClassFixture<ReadReplicaTests.Replicas>
{
    private readonly Replicas _replicas;

    public ReadReplicaTests(Replicas replicas) => _replicas = replicas;

    private static readonly DateTime Start = new(2025, 3, 1, 0, 0, 0, DateTimeKind.Utc);

    [SingleServerFact]
    public async Task Reads_come_from_the_standby_yet_a_device_and_a_member_see_their_own_writes_at_once()
    {
        var service = _replicas.Service;
        using var device = ClientWithKey(service, FirmwareManagerApp.DeviceKey1);
        using var admin = ClientWithKey(service, FirmwareManagerApp.MemberKey1);
        using var viewer = ClientWithKey(service, FirmwareManagerApp.MemberKey2);
        await _replicas.Cluster.HoldBackStandbyAsync();
        try
        {
            var created = await device.PostEventAsync(1, Event("7.0.0", "installed", Start));
            created.StatusCode.Should().Be(HttpStatusCode.Created);
            var eventId = (await created.JsonAsync()).GetProperty("id").GetInt64();

            // The viewer wrote nothing: its read is served by the standby, which has not applied the report yet.
            var viewersHistory = await viewer.GetAsync("/firmware/1");
            (await FirmwaresAsync(viewersHistory)).Should().NotContain("7.0.0", "the held-back standby served the read");

            // The device reads where it wrote; anyone following the Location finds the event.
            (await FirmwaresAsync(await device.GetAsync("/firmware/1"))).Should().Contain("7.0.0");
            (await viewer.GetAsync(created.Headers.Location)).StatusCode.Should().Be(HttpStatusCode.OK);
            (await device.GetAsync(created.Headers.Location)).StatusCode.Should().Be(HttpStatusCode.OK);

            // A member who provisions a device lists it at once, through the same instance.
            var provisioned = await admin.PostAsJsonAsync("/devices", new { name = "replica test device" });
            provisioned.StatusCode.Should().Be(HttpStatusCode.Created);
            var newDeviceId = (await provisioned.JsonAsync()).GetProperty("device").GetProperty("id").GetInt64();
            (await admin.GetAsync($"/devices/{newDeviceId}")).StatusCode.Should().Be(HttpStatusCode.OK);
            var listed = await (await admin.GetAsync("/devices?limit=1000")).JsonAsync();
            listed.EnumerateArray().Select(d => d.GetProperty("id").GetInt64()).Should().Contain(newDeviceId);
            // ... while the viewer, who wrote nothing, still reads the standby's older state.
            (await viewer.GetAsync($"/devices/{newDeviceId}")).StatusCode.Should().Be(HttpStatusCode.NotFound);
        }
        finally
        {
            await _replicas.Cluster.ReleaseStandbyAsync();
        }

        (await FirmwaresAsync(await viewer.GetAsync("/firmware/1"))).Should().Contain("7.0.0", "the standby caught up");
    }

    [SingleServerFact]
    public async Task Pages_served_by_nodes_at_different_replay_points_neither_skip_nor_repeat_an_event()
    {
        var service = _replicas.Service;
        using var device = ClientWithKey(service, FirmwareManagerApp.DeviceKey2);
        using var admin = ClientWithKey(service, FirmwareManagerApp.MemberKey1);
        using var viewer = ClientWithKey(service, FirmwareManagerApp.MemberKey2);
        await _replicas.Cluster.HoldBackStandbyAsync();
        try
        {
            // Six reports the standby does not have, newer than every event it has.
            await UploadAsync(device, 2, Enumerable.Range(1, 6).Select(i => Event("8.0.0", "downloading", Start.AddDays(30).AddMinutes(i))));
            // The admin's write sets its floor past them: its first pages come from the primary.
            (await admin.PostAsJsonAsync("/devices", new { name = "floor" })).StatusCode.Should().Be(HttpStatusCode.Created);

            var historyFirst = await admin.GetAsync("/firmware/2?limit=3");
            var feedFirst = await admin.GetAsync("/events?limit=3");
            var pollFirst = await admin.GetAsync("/events?after=beginning&limit=1000");

            // The viewer, who wrote nothing and would otherwise read the held-back standby, follows those cursors.
            var historySecond = await viewer.GetAsync(NextLink(historyFirst));
            var feedSecond = await viewer.GetAsync(NextLink(feedFirst));
            var pollSecond = await viewer.GetAsync(NextLink(pollFirst));

            var history = (await IdsAsync(historyFirst)).Concat(await IdsAsync(historySecond)).ToList();
            var feed = (await IdsAsync(feedFirst)).Concat(await IdsAsync(feedSecond)).ToList();
            await using var primary = new NpgsqlConnection(_replicas.PrimaryDatabase);
            var expectedHistory = (await primary.QueryAsync<long>(
                "SELECT id FROM firmware_events WHERE device_id = 2 AND project_id = 1 ORDER BY occurred_at DESC, firmware DESC, status DESC LIMIT 6")).ToList();
            var expectedFeed = (await primary.QueryAsync<long>(
                "SELECT id FROM firmware_events WHERE project_id = 1 ORDER BY arrival DESC, id DESC LIMIT 6")).ToList();
            history.Should().Equal(expectedHistory, "the second page continues where the first, read on the primary, ended");
            feed.Should().Equal(expectedFeed);
            (await IdsAsync(pollSecond)).Should().BeEmpty("the poller has every event already: nothing is served twice");
        }
        finally
        {
            await _replicas.Cluster.ReleaseStandbyAsync();
        }
    }

    [SingleServerFact]
    public async Task When_the_standby_stops_reads_go_to_the_primary_and_none_fails()
    {
        var service = _replicas.Service;
        using var device = ClientWithKey(service, FirmwareManagerApp.DeviceKey1);
        using var viewer = ClientWithKey(service, FirmwareManagerApp.MemberKey2);
        using var admin = ClientWithKey(service, FirmwareManagerApp.MemberKey1);
        // Connections to the standby in the pool, which its stop will cut.
        (await viewer.GetAsync("/devices")).StatusCode.Should().Be(HttpStatusCode.OK);
        _replicas.Cluster.StopStandby();
        try
        {
            (await device.PostEventAsync(1, Event("9.0.0", "updated", Start.AddDays(60)))).StatusCode.Should().Be(HttpStatusCode.Created);
            foreach (var path in new[] { "/firmware/1", "/events", "/devices", "/firmware-versions", "/devices/1" })
            {
                var response = await viewer.GetAsync(path);
                response.StatusCode.Should().Be(HttpStatusCode.OK, $"{path} is read on the primary: {await response.Content.ReadAsStringAsync()}");
            }

            (await FirmwaresAsync(await viewer.GetAsync("/firmware/1"))).Should().Contain("9.0.0");
            (await admin.GetAsync("/audit")).StatusCode.Should().Be(HttpStatusCode.OK);
        }
        finally
        {
            _replicas.Cluster.StartStandby();
            await _replicas.Cluster.CatchUpAsync();
        }

        // And back on the standby once it returns (Npgsql rechecks a host's state every second here).
        await Task.Delay(1500);
        (await viewer.GetAsync("/firmware/1")).StatusCode.Should().Be(HttpStatusCode.OK);
    }

    [SingleServerFact]
    public async Task A_read_the_standby_cancels_for_a_conflict_with_recovery_is_read_again_on_the_primary()
    {
        var routing = _replicas.Service.Services.GetRequiredService<ReadRouting>();
        var servedBy = new List<bool>();

        // The read fails as a recovery conflict does (SQLSTATE 40001, raised by the standby itself) wherever it runs
        // on a standby, and answers on the primary.
        var answer = await routing.RunAsync(ReadContext.Anywhere(), async connection =>
        {
            var onStandby = await connection.ExecuteScalarAsync<bool>("SELECT pg_is_in_recovery()");
            servedBy.Add(onStandby);
            if (onStandby)
            {
                await connection.ExecuteAsync(
                    "DO $$ BEGIN RAISE EXCEPTION 'canceling statement due to conflict with recovery' USING ERRCODE = 'serialization_failure'; END $$");
            }

            return await connection.ExecuteScalarAsync<long>("SELECT count(*) FROM firmware_events");
        }, CancellationToken.None);

        servedBy.Should().Equal([true, false], "tried on the standby, then on the primary");
        answer.Should().BeGreaterThan(0);
    }

    private static HttpClient ClientWithKey(ServiceOnDatabase service, string key)
    {
        var client = service.CreateClient();
        client.DefaultRequestHeaders.Add("X-Api-Key", key);
        return client;
    }

    private static async Task<List<string>> FirmwaresAsync(HttpResponseMessage response)
    {
        response.StatusCode.Should().Be(HttpStatusCode.OK);
        return (await response.JsonAsync()).EnumerateArray().Select(e => e.GetProperty("firmware").GetString()!).ToList();
    }

    private static async Task<List<long>> IdsAsync(HttpResponseMessage response)
    {
        response.StatusCode.Should().Be(HttpStatusCode.OK, await response.Content.ReadAsStringAsync());
        return (await response.JsonAsync()).EnumerateArray().Select(e => e.GetProperty("id").GetInt64()).ToList();
    }

    /// <summary>A primary and a standby of its own, a database with the demo data, and the service on both hosts.</summary>
    public sealed class Replicas : IAsyncLifetime, IDisposable
    {
        private ServiceOnDatabase? _service;
        private PrimaryAndStandby? _cluster;

        public PrimaryAndStandby Cluster => _cluster!;

        public ServiceOnDatabase Service => _service!;

        public string PrimaryDatabase { get; private set; } = "";

        public async Task InitializeAsync()
        {
            if (PostgresServer.IsCitus)
            {
                return;
            }

            _cluster = await PostgresServer.StartPrimaryAndStandbyAsync();
            await using (var connection = new NpgsqlConnection(_cluster.PrimaryConnectionString))
            {
                await connection.OpenAsync();
                await connection.ExecuteAsync("CREATE DATABASE fm_replicas");
            }

            PrimaryDatabase = new NpgsqlConnectionStringBuilder(_cluster.PrimaryConnectionString) { Database = "fm_replicas" }.ConnectionString;
            await DatabaseMigrator.MigrateAsync(PrimaryDatabase, applyDemoData: true, NullLogger.Instance);
            await _cluster.CatchUpAsync();
            _service = new ServiceOnDatabase(_cluster.MultiHostConnectionString("fm_replicas"));
            _ = _service.Server;
        }

        public Task DisposeAsync() => Task.CompletedTask;

        public void Dispose() => _service?.Dispose();
    }
}
