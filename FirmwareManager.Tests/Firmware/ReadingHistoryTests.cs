using System.Net;
using System.Text.Json;
using FirmwareManager.Tests.Infrastructure;

namespace FirmwareManager.Tests.Firmware;

public sealed class ReadingHistoryTests(FirmwareManagerApp app) : ApiTest(app)
{
    [Fact]
    public async Task The_demo_history_of_device_2_reads_as_the_reference_data_newest_first()
    {
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);

        var response = await member.GetAsync("/firmware/2");

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        response.Content.Headers.ContentType!.MediaType.Should().Be("application/json");
        var events = (await response.JsonAsync()).EnumerateArray().ToList();
        events.Select(e => e.GetProperty("firmware").GetString()).Should().Equal("1.0.1", "1.0.0");
        events.Select(e => e.GetProperty("status").GetString()).Should().Equal("updated", "installed");
        events[0].EnumerateObject().Select(p => p.Name).Should().Equal(
            "id", "device_id", "project_id", "firmware", "status", "timestamp", "received_at");
        events[0].GetProperty("id").GetInt64().Should().Be(3);
        events[0].GetProperty("device_id").GetInt64().Should().Be(2);
        events[0].GetProperty("project_id").GetInt64().Should().Be(1);
        events[0].GetProperty("timestamp").GetString().Should().Be("2023-01-01T00:00:00.000000Z");
    }

    [Fact]
    public async Task History_is_newest_first_by_the_devices_clock_not_by_arrival()
    {
        var (deviceId, key) = await App.AddDeviceAsync(projectId: 1);
        using var device = App.ClientWithKey(key);
        foreach (var (firmware, timestamp) in new[] { ("1.1.0", "2024-02-01T00:00:00Z"), ("1.3.0", "2024-04-01T00:00:00Z"), ("1.0.0", "2024-01-01T00:00:00Z"), ("1.2.0", "2024-03-01T00:00:00.000001Z") })
        {
            (await device.PostEventAsync(deviceId, new { firmware, status = "updated", timestamp })).StatusCode.Should().Be(HttpStatusCode.Created);
        }

        var events = await (await device.GetAsync($"/firmware/{deviceId}")).JsonAsync();

        events.EnumerateArray().Select(e => e.GetProperty("firmware").GetString()).Should().Equal("1.3.0", "1.2.0", "1.1.0", "1.0.0");
    }

    [Fact]
    public async Task A_device_with_no_events_has_an_empty_history_not_a_404()
    {
        var (deviceId, _) = await App.AddDeviceAsync(projectId: 1);
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey2);

        var response = await member.GetAsync($"/firmware/{deviceId}");

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        (await response.JsonAsync()).ValueKind.Should().Be(JsonValueKind.Array);
        (await response.JsonAsync()).GetArrayLength().Should().Be(0);
    }

    [Fact]
    public async Task A_moved_device_shows_its_new_project_only_what_it_reported_there()
    {
        using var member3 = App.ClientWithKey(FirmwareManagerApp.MemberKey3);
        using var device3 = App.ClientWithKey(FirmwareManagerApp.DeviceKey3);

        var seenByProject2 = await (await member3.GetAsync("/firmware/3")).JsonAsync();
        var seenByDevice = await (await device3.GetAsync("/firmware/3")).JsonAsync();

        foreach (var history in new[] { seenByProject2, seenByDevice })
        {
            history.EnumerateArray().Select(e => e.GetProperty("firmware").GetString()).Should().Equal("1.0.2", "1.0.1");
            history.EnumerateArray().Should().OnlyContain(e => e.GetProperty("project_id").GetInt64() == 2);
        }

        await (await member3.GetAsync("/firmware/3/events/4")).ShouldBeProblemAsync(HttpStatusCode.NotFound);
    }

    [Fact]
    public async Task The_project_a_device_left_reads_what_it_reported_there_the_same_on_every_endpoint_and_nothing_after()
    {
        using var member1 = App.ClientWithKey(FirmwareManagerApp.MemberKey1);

        var history = await (await member1.GetAsync("/firmware/3")).JsonAsync();
        var feed = await (await member1.GetAsync("/events?device_id=3")).JsonAsync();
        var one = await member1.GetAsync("/firmware/3/events/4");

        history.EnumerateArray().Select(e => e.GetProperty("id").GetInt64()).Should().Equal(4);
        feed.EnumerateArray().Select(e => e.GetProperty("id").GetInt64()).Should().Equal(4);
        one.StatusCode.Should().Be(HttpStatusCode.OK);
        (await one.JsonAsync()).GetProperty("project_id").GetInt64().Should().Be(1);
        // The device itself (what it runs now, its keys) is its new project's.
        await (await member1.GetAsync("/devices/3")).ShouldBeProblemAsync(HttpStatusCode.NotFound);
        await (await member1.GetAsync("/firmware/3/events/5")).ShouldBeProblemAsync(HttpStatusCode.NotFound);
        using var member3 = App.ClientWithKey(FirmwareManagerApp.MemberKey3);
        await (await member3.GetAsync("/firmware/1")).ShouldBeProblemAsync(HttpStatusCode.NotFound);
    }

    [Fact]
    public async Task One_event_is_read_by_its_location_and_only_under_its_own_device()
    {
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);

        var found = await member.GetAsync("/firmware/2/events/3");
        var underAnotherDevice = await member.GetAsync("/firmware/1/events/3");
        var badId = await member.GetAsync("/firmware/2/events/three");

        found.StatusCode.Should().Be(HttpStatusCode.OK);
        (await found.JsonAsync()).GetProperty("firmware").GetString().Should().Be("1.0.1");
        await underAnotherDevice.ShouldBeProblemAsync(HttpStatusCode.NotFound);
        (await badId.ShouldBeValidationProblemAsync()).Should().ContainKey("event_id");
    }
}
