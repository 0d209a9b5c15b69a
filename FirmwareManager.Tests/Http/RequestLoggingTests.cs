using System.Net.Http.Headers;
using FirmwareManager.Tests.Infrastructure;

namespace FirmwareManager.Tests.Http;

public sealed class RequestLoggingTests(FirmwareManagerApp app) : ApiTest(app)
{
    [Fact]
    public async Task Requests_are_logged_with_route_status_and_caller_and_never_with_a_key()
    {
        var (deviceId, deviceKey) = await App.AddDeviceAsync(projectId: 1);
        using var device = App.ClientWithKey(deviceKey);
        using var member = App.CreateClient();
        member.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", FirmwareManagerApp.MemberKey1);
        using var stranger = App.ClientWithKey("wrong_key_that_must_not_be_logged");

        await device.PostEventAsync(deviceId, new { firmware = "1.2.3", status = "installed" });
        await device.PostRawAsync($"/firmware/{deviceId}", "{not json");
        await member.GetAsync($"/firmware/{deviceId}");
        await stranger.GetAsync($"/firmware/{deviceId}");

        var requestLogs = App.Logs.Events
            .Where(e => e.MessageTemplate.Text.StartsWith("HTTP ", StringComparison.Ordinal))
            .Select(e => e.RenderMessage(System.Globalization.CultureInfo.InvariantCulture))
            .ToList();
        requestLogs.Should().Contain(l => l.StartsWith("HTTP \"POST\" \"/firmware/{device_id}\" responded 201", StringComparison.Ordinal) && l.EndsWith($"for \"device {deviceId}\"", StringComparison.Ordinal));
        requestLogs.Should().Contain(l => l.StartsWith("HTTP \"POST\" \"/firmware/{device_id}\" responded 400", StringComparison.Ordinal));
        requestLogs.Should().Contain(l => l.StartsWith("HTTP \"GET\" \"/firmware/{device_id}\" responded 200", StringComparison.Ordinal) && l.EndsWith("for \"member 1\"", StringComparison.Ordinal));
        requestLogs.Should().Contain(l => l.StartsWith("HTTP \"GET\" \"/firmware/{device_id}\" responded 401", StringComparison.Ordinal) && l.EndsWith("for \"anonymous\"", StringComparison.Ordinal));

        var everything = string.Join('\n', App.Logs.Rendered());
        foreach (var key in new[] { deviceKey, FirmwareManagerApp.MemberKey1, "wrong_key_that_must_not_be_logged" })
        {
            everything.Should().NotContain(key);
        }
    }
}
