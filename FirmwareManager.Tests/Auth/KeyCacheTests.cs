using System.Diagnostics;
using System.Net;
using Dapper;
using FirmwareManager.Api.Auth;
using FirmwareManager.Tests.Infrastructure;

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
    public async Task A_key_revoked_through_this_instance_fails_at_once()
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey2);
        (await device.GetAsync("/firmware/2")).StatusCode.Should().Be(HttpStatusCode.OK);

        (await admin.DeleteAsync("/devices/2/keys/2")).StatusCode.Should().Be(HttpStatusCode.NoContent);

        await (await device.GetAsync("/firmware/2")).ShouldBeProblemAsync(HttpStatusCode.Unauthorized);
    }
}
