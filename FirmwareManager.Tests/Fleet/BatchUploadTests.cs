using System.Net;
using System.Net.Http.Json;
using Dapper;
using FirmwareManager.Tests.Infrastructure;
using static FirmwareManager.Tests.Firmware.PagingHistoryTests;

namespace FirmwareManager.Tests.Fleet;

public sealed class BatchUploadTests(FirmwareManagerApp app) : ApiTest(app)
{
    private static readonly DateTime Start = new(2024, 3, 1, 0, 0, 0, DateTimeKind.Utc);

    [Fact]
    public async Task A_backlog_is_stored_at_once_counting_what_was_new_and_what_was_known()
    {
        var (deviceId, key) = await App.AddDeviceAsync(projectId: 1);
        using var device = App.ClientWithKey(key);
        var known = Event("1.0.0", "installed", Start);
        (await device.PostEventAsync(deviceId, known)).StatusCode.Should().Be(HttpStatusCode.Created);

        var response = await device.PostAsJsonAsync($"/firmware/{deviceId}/batch", new[]
        {
            known,
            Event("2.0.0", "downloading", Start.AddHours(1)),
            Event("2.0.0", "updated", Start.AddHours(2)),
            Event("2.0.0", "updated", Start.AddHours(2)),
            Event("2.1.0", "failed", Start.AddHours(3)),
        });

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        var body = await response.JsonAsync();
        body.GetProperty("created").GetInt32().Should().Be(3);
        body.GetProperty("already_known").GetInt32().Should().Be(2);
        (await StoredAsync(deviceId)).Should().Be(4);
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var summary = await (await member.GetAsync($"/devices/{deviceId}")).JsonAsync();
        summary.GetProperty("current_firmware").GetString().Should().Be("2.0.0", "the newest update in the batch, not the later failure");
        summary.GetProperty("last_event_status").GetString().Should().Be("failed");
        summary.GetProperty("last_event_at").GetString().Should().Be("2024-03-01T03:00:00.000000Z");
    }

    [Fact]
    public async Task One_invalid_event_rejects_the_whole_batch_naming_each_bad_index_and_nothing_is_stored()
    {
        var (deviceId, key) = await App.AddDeviceAsync(projectId: 1);
        using var device = App.ClientWithKey(key);

        var response = await device.PostAsJsonAsync($"/firmware/{deviceId}/batch", new object[]
        {
            Event("1.0.0", "installed", Start),
            new { firmware = "v2", status = "updated" },
            Event("2.0.0", "updated", Start.AddHours(1)),
            new { firmware = "2.0.0", status = "exploded", timestamp = "noon" },
        });

        var errors = await response.ShouldBeValidationProblemAsync();
        errors.Keys.Should().BeEquivalentTo("[1].firmware", "[3].status", "[3].timestamp");
        (await StoredAsync(deviceId)).Should().Be(0);
    }

    [Theory]
    [InlineData("[]")]
    [InlineData("{\"firmware\": \"1.0.0\", \"status\": \"installed\"}")]
    public async Task A_batch_must_be_a_non_empty_array(string body)
    {
        var (deviceId, key) = await App.AddDeviceAsync(projectId: 1);
        using var device = App.ClientWithKey(key);

        (await (await device.PostRawAsync($"/firmware/{deviceId}/batch", body)).ShouldBeValidationProblemAsync()).Should().ContainKey("body");
    }

    [Fact]
    public async Task More_than_1000_events_are_400()
    {
        var (deviceId, key) = await App.AddDeviceAsync(projectId: 1);
        using var device = App.ClientWithKey(key);

        var response = await device.PostAsJsonAsync($"/firmware/{deviceId}/batch",
            Enumerable.Range(0, 1001).Select(i => Event("1.0.0", "downloading", Start.AddSeconds(i))));

        (await response.ShouldBeValidationProblemAsync()).Should().ContainKey("body");
        (await StoredAsync(deviceId)).Should().Be(0);
    }

    [Fact]
    public async Task Only_the_device_itself_uploads_its_backlog()
    {
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        using var otherDevice = App.ClientWithKey(FirmwareManagerApp.DeviceKey2);
        var batch = new[] { Event("1.0.0", "installed", Start) };

        await (await member.PostAsJsonAsync("/firmware/1/batch", batch)).ShouldBeProblemAsync(HttpStatusCode.Forbidden);
        await (await otherDevice.PostAsJsonAsync("/firmware/1/batch", batch)).ShouldBeProblemAsync(HttpStatusCode.Forbidden);
        (await StoredAsync(1)).Should().Be(1);
    }

    private async Task<long> StoredAsync(long deviceId)
    {
        await using var connection = App.OpenConnection();
        return await connection.ExecuteScalarAsync<long>("SELECT count(*) FROM firmware_events WHERE device_id = @deviceId", new { deviceId });
    }
}
