using System.Diagnostics;
using System.Net;
using Dapper;
using FirmwareManager.Api.Auth;
using FirmwareManager.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;

namespace FirmwareManager.Tests.Auth;

public sealed class KeyCacheTests(FirmwareManagerApp app) : ApiTest(app)
{
    [Fact]
    public async Task A_key_revoked_by_another_instance_stops_working_within_5_seconds_even_when_cached()
    {
        var (deviceId, key) = await App.AddDeviceAsync(projectId: 1);
        using var device = App.ClientWithKey(key);
        (await device.GetAsync($"/firmware/{deviceId}")).StatusCode.Should().Be(HttpStatusCode.OK);
        (await device.GetAsync($"/firmware/{deviceId}")).StatusCode.Should().Be(HttpStatusCode.OK, "now answered from the cache");

        // As another instance would: straight in the database, which this instance's cache does not see.
        await using (var connection = App.OpenConnection())
        {
            await connection.ExecuteAsync("UPDATE device_api_keys SET revoked_at = now() WHERE key_hash = @Hash", new { Hash = ApiKeyHasher.Hash(key) });
        }

        var clock = Stopwatch.StartNew();
        while ((await device.GetAsync($"/firmware/{deviceId}")).StatusCode != HttpStatusCode.Unauthorized)
        {
            clock.Elapsed.Should().BeLessThan(TimeSpan.FromSeconds(5), "a revoked key must fail on every instance within 5 seconds");
            await Task.Delay(100);
        }
    }

    [Fact]
    public async Task A_key_lookup_leaves_no_setting_on_the_pooled_connections()
    {
        var (deviceId, key) = await App.AddDeviceAsync(projectId: 1);
        using var device = App.ClientWithKey(key);
        (await device.GetAsync($"/firmware/{deviceId}")).StatusCode.Should().Be(HttpStatusCode.OK, "looked up in the database");

        // Every idle connection of the pool at once: the one the lookup used is among them.
        var dataSource = App.Services.GetRequiredService<Npgsql.NpgsqlDataSource>();
        var connections = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => dataSource.OpenConnectionAsync().AsTask()));
        try
        {
            foreach (var connection in connections)
            {
                (await connection.ExecuteScalarAsync<string>("SHOW plan_cache_mode")).Should().Be("auto");
            }
        }
        finally
        {
            foreach (var connection in connections)
            {
                await connection.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task A_key_revoked_through_this_instance_fails_at_once()
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey2);
        (await device.GetAsync("/firmware/2")).StatusCode.Should().Be(HttpStatusCode.OK);

        (await admin.DeleteAsync("/devices/2/keys/2")).StatusCode.Should().Be(HttpStatusCode.NoContent);

        await (await device.GetAsync("/firmware/2")).ShouldBeProblemAsync(HttpStatusCode.Unauthorized);
    }

    [Fact]
    public async Task Concurrent_first_lookups_of_many_keys_are_answered_each_with_its_own_caller()
    {
        var devices = new List<(long DeviceId, string Key)>();
        for (var i = 0; i < 40; i++)
        {
            devices.Add(await App.AddDeviceAsync(projectId: i % 2 + 1));
        }
        var revoked = devices[7];
        await using (var connection = App.OpenConnection())
        {
            await connection.ExecuteAsync("UPDATE device_api_keys SET revoked_at = now() WHERE key_hash = @Hash", new { Hash = ApiKeyHasher.Hash(revoked.Key) });
        }
        App.Services.GetRequiredService<ApiKeys>().ForgetAll();

        // Every key unseen, all at once: the misses are looked up in groups, and each answer must reach its own request.
        // A device may read only its own history: a 200 shows that the key was taken for its own device.
        List<(string Key, string Path, HttpStatusCode Expected)> asks =
        [
            .. devices.Select(d => (d.Key, $"/firmware/{d.DeviceId}", d == revoked ? HttpStatusCode.Unauthorized : HttpStatusCode.OK)),
            .. Enumerable.Range(0, 20).Select(i => ($"fmd_unknown_{i}", "/firmware/1", HttpStatusCode.Unauthorized)),
            (FirmwareManagerApp.MemberKey1, "/me", HttpStatusCode.OK),
        ];
        var answers = await Task.WhenAll(asks.Select(async a =>
        {
            using var client = App.ClientWithKey(a.Key);
            return (await client.GetAsync(a.Path)).StatusCode;
        }));

        answers.Should().Equal(asks.Select(a => a.Expected));
    }
}
