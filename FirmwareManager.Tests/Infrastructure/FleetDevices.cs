using System.Net;
using System.Net.Http.Json;

namespace FirmwareManager.Tests.Infrastructure;

/// <summary>Devices of project 1 made for a test, with a client holding each one's key.</summary>
public static class FleetDevices
{
    /// <summary>A new device of project 1 that reported <paramref name="version"/> installed at <paramref name="at"/>.</summary>
    public static async Task<(long Id, HttpClient Client)> DeviceRunningAsync(this FirmwareManagerApp app, string version, DateTime at)
    {
        var (id, key) = await app.AddDeviceAsync(projectId: 1);
        var client = app.ClientWithKey(key);
        await ReportAsync((id, client), Firmware.PagingHistoryTests.Event(version, "installed", at));
        return (id, client);
    }

    /// <summary>The device reports <paramref name="events"/> as one batch, which must be stored.</summary>
    public static async Task ReportAsync(this (long Id, HttpClient Client) device, params object[] events)
    {
        var response = await device.Client.PostAsJsonAsync($"/firmware/{device.Id}/batch", events);
        response.StatusCode.Should().Be(HttpStatusCode.OK, await response.Content.ReadAsStringAsync());
    }
}
