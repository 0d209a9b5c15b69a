using System.Net;
using System.Net.Http.Json;
using Dapper;
using FirmwareManager.Tests.Infrastructure;
using static FirmwareManager.Tests.Firmware.PagingHistoryTests;

namespace FirmwareManager.Tests.Firmware;

/// <summary>A report's answer says where it stands in its project's feed (<c>X-Feed-Position</c>), a repeat's too.</summary>
public sealed class FeedPositionTests(FirmwareManagerApp app) : ApiTest(app)
{
    private static readonly DateTime At = new(2025, 5, 1, 0, 0, 0, DateTimeKind.Utc);

    [Fact]
    public async Task A_report_a_repeat_and_a_batch_are_answered_with_their_position_in_the_projects_feed()
    {
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        await using var connection = App.OpenConnection();

        var first = await device.PostEventAsync(1, Event("3.0.0", "downloading", At));
        first.StatusCode.Should().Be(HttpStatusCode.Created);
        var firstId = (await first.JsonAsync()).GetProperty("id").GetInt64();
        var position = Position(first);
        position.Should().Be(await connection.ExecuteScalarAsync<long>("SELECT arrival FROM firmware_events WHERE project_id = 1 AND id = @Id", new { Id = firstId }));

        var second = await device.PostEventAsync(1, Event("3.0.0", "installed", At.AddMinutes(1)));
        Position(second).Should().Be(position + 1, "positions follow the project's commits");
        // (A repeat is numbered too and leaves its number unused: positions only ever grow, with gaps.)

        var repeat = await device.PostEventAsync(1, Event("3.0.0", "downloading", At));
        repeat.StatusCode.Should().Be(HttpStatusCode.OK);
        Position(repeat).Should().Be(position, "a repeat is answered with the stored event's position");

        var batch = await device.PostAsJsonAsync("/firmware/1/batch", new[]
        {
            Event("3.1.0", "downloading", At.AddMinutes(2)), Event("3.1.0", "installing", At.AddMinutes(3)), Event("3.1.0", "updated", At.AddMinutes(4)),
        });
        batch.StatusCode.Should().Be(HttpStatusCode.OK);
        var highest = await connection.ExecuteScalarAsync<long>("SELECT max(arrival) FROM firmware_events WHERE project_id = 1 AND firmware = '3.1.0'");
        Position(batch).Should().Be(highest, "a batch's answer carries its highest position").And.BeGreaterThan(position + 1);

        using (var other = App.ClientWithKey(FirmwareManagerApp.DeviceKey3))
        {
            // Another project's feed is numbered on its own.
            var elsewhere = await other.PostEventAsync(3, Event("3.0.0", "downloading", At));
            Position(elsewhere).Should().Be(await connection.ExecuteScalarAsync<long>("SELECT max(arrival) FROM firmware_events WHERE project_id = 2"));
        }

        var repeatedBatch = await device.PostAsJsonAsync("/firmware/1/batch", new[] { Event("3.1.0", "downloading", At.AddMinutes(2)) });
        Position(repeatedBatch).Should().BeGreaterThanOrEqualTo(highest, "all repeats: the project's newest position, at or past each of them");
    }

    private static long Position(HttpResponseMessage response) =>
        long.Parse(response.Headers.GetValues("X-Feed-Position").Single(), System.Globalization.CultureInfo.InvariantCulture);
}
