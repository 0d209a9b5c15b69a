using System.Net;
using System.Net.Http.Json;
using Dapper;
using FirmwareManager.Api.Firmware;
using FirmwareManager.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;

namespace FirmwareManager.Tests.Firmware;

public sealed class RecordingEventsTests(FirmwareManagerApp app) : ApiTest(app)
{
    [Fact]
    public async Task A_device_reports_an_event_and_gets_201_with_the_event_and_its_location()
    {
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);

        var response = await device.PostEventAsync(1, new { firmware = "1.0.3", timestamp = "2023-01-02T03:04:05.123456Z", status = "updated" });

        response.StatusCode.Should().Be(HttpStatusCode.Created);
        var body = await response.JsonAsync();
        var id = body.GetProperty("id").GetInt64();
        id.Should().BeGreaterThan(6, "the demo data's identities continue after its ids");
        body.GetProperty("device_id").GetInt64().Should().Be(1);
        body.GetProperty("project_id").GetInt64().Should().Be(1);
        body.GetProperty("firmware").GetString().Should().Be("1.0.3");
        body.GetProperty("status").GetString().Should().Be("updated");
        body.GetProperty("timestamp").GetString().Should().Be("2023-01-02T03:04:05.123456Z");
        DateTime.Parse(body.GetProperty("received_at").GetString()!, System.Globalization.CultureInfo.InvariantCulture)
            .ToUniversalTime().Should().BeCloseTo(DateTime.UtcNow, TimeSpan.FromMinutes(1));
        response.Headers.Location!.ToString().Should().Be($"/firmware/1/events/{id}");

        var fetched = await device.GetAsync(response.Headers.Location);
        fetched.StatusCode.Should().Be(HttpStatusCode.OK);
        (await fetched.JsonAsync()).GetProperty("id").GetInt64().Should().Be(id);
    }

    [Fact]
    public async Task An_offset_timestamp_is_stored_as_the_same_instant_and_returned_in_UTC()
    {
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);

        var response = await device.PostEventAsync(1, new { firmware = "1.0.3", timestamp = "2023-06-30T23:30:00.5+02:00", status = "installed" });

        (await response.JsonAsync()).GetProperty("timestamp").GetString().Should().Be("2023-06-30T21:30:00.500000Z");
        await using var connection = App.OpenConnection();
        var stored = await connection.ExecuteScalarAsync<string>(
            "SELECT to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM firmware_events WHERE firmware = '1.0.3'");
        stored.Should().Be("2023-06-30 21:30:00.500000");
    }

    [Fact]
    public async Task An_identical_repeat_creates_nothing_and_answers_200_with_the_stored_event()
    {
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        var report = new { firmware = "1.0.3", timestamp = "2023-01-02T00:00:00Z", status = "updated" };

        var first = await device.PostEventAsync(1, report);
        var again = await device.PostEventAsync(1, report);
        var sameInstantOtherNotation = await device.PostEventAsync(1, report with { timestamp = "2023-01-02T01:00:00.000+01:00" });

        first.StatusCode.Should().Be(HttpStatusCode.Created);
        again.StatusCode.Should().Be(HttpStatusCode.OK);
        sameInstantOtherNotation.StatusCode.Should().Be(HttpStatusCode.OK);
        var id = (await first.JsonAsync()).GetProperty("id").GetInt64();
        (await again.JsonAsync()).GetProperty("id").GetInt64().Should().Be(id);
        (await sameInstantOtherNotation.JsonAsync()).GetProperty("id").GetInt64().Should().Be(id);
        (await EventCountAsync(deviceId: 1)).Should().Be(2);
    }

    [Fact]
    public async Task Concurrent_identical_repeats_store_one_event()
    {
        var (deviceId, key) = await App.AddDeviceAsync(projectId: 1);
        using var device = App.ClientWithKey(key);
        var report = new { firmware = "3.1.4", timestamp = "2024-03-01T12:00:00Z", status = "installed" };

        var responses = await Task.WhenAll(Enumerable.Range(0, 16).Select(_ => device.PostEventAsync(deviceId, report)));

        responses.Select(r => r.StatusCode).Should().OnlyContain(s => s == HttpStatusCode.Created || s == HttpStatusCode.OK);
        responses.Count(r => r.StatusCode == HttpStatusCode.Created).Should().Be(1);
        var ids = await Task.WhenAll(responses.Select(async r => (await r.JsonAsync()).GetProperty("id").GetInt64()));
        ids.Distinct().Should().ContainSingle();
        (await EventCountAsync(deviceId)).Should().Be(1);
    }

    [Fact]
    public async Task A_device_without_a_clock_leaves_out_the_timestamp_and_gets_the_receive_time()
    {
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);

        var withoutTimestamp = await device.PostEventAsync(1, new { firmware = "1.0.4", status = "installed" });
        var withNullTimestamp = await device.PostEventAsync(1, new { firmware = "1.0.5", status = "installed", timestamp = (string?)null });

        foreach (var response in new[] { withoutTimestamp, withNullTimestamp })
        {
            response.StatusCode.Should().Be(HttpStatusCode.Created);
            var body = await response.JsonAsync();
            body.GetProperty("timestamp").GetString().Should().Be(body.GetProperty("received_at").GetString());
        }
    }

    [Fact]
    public async Task Current_firmware_follows_the_newest_report_and_a_late_older_report_never_moves_it_back()
    {
        var (deviceId, key) = await App.AddDeviceAsync(projectId: 1);
        using var device = App.ClientWithKey(key);

        await device.PostEventAsync(deviceId, new { firmware = "2.0.0", status = "installed", timestamp = "2024-05-01T00:00:00Z" });
        (await CurrentFirmwareAsync(deviceId)).Should().Be("2.0.0");

        await device.PostEventAsync(deviceId, new { firmware = "1.5.0", status = "updated", timestamp = "2024-04-01T00:00:00Z" });
        (await CurrentFirmwareAsync(deviceId)).Should().Be("2.0.0", "the 1.5.0 report is older than the 2.0.0 one");

        await device.PostEventAsync(deviceId, new { firmware = "2.1.0", status = "failed", timestamp = "2024-06-01T00:00:00Z" });
        (await CurrentFirmwareAsync(deviceId)).Should().Be("2.0.0", "a failed update leaves the running firmware as it was");

        await device.PostEventAsync(deviceId, new { firmware = "2.1.0", status = "downloading", timestamp = "2024-06-02T00:00:00Z" });
        (await CurrentFirmwareAsync(deviceId)).Should().Be("2.0.0");

        await device.PostEventAsync(deviceId, new { firmware = "2.1.0", status = "updated", timestamp = "2024-07-01T00:00:00Z" });
        (await CurrentFirmwareAsync(deviceId)).Should().Be("2.1.0");

        await device.PostEventAsync(deviceId, new { firmware = "2.0.0", status = "rolled_back", timestamp = "2024-07-02T00:00:00Z" });
        (await CurrentFirmwareAsync(deviceId)).Should().Be("2.0.0", "the device rolled back to 2.0.0");
    }

    [Fact]
    public async Task A_clock_far_in_the_future_does_not_pin_the_current_firmware()
    {
        var (deviceId, key) = await App.AddDeviceAsync(projectId: 1);
        using var device = App.ClientWithKey(key);

        var future = await device.PostEventAsync(deviceId, new { firmware = "9.9.9", status = "installed", timestamp = "2099-01-01T00:00:00Z" });
        var now = await device.PostEventAsync(deviceId, new { firmware = "1.0.0", status = "installed" });

        future.StatusCode.Should().Be(HttpStatusCode.Created);
        (await future.JsonAsync()).GetProperty("timestamp").GetString().Should().Be("2099-01-01T00:00:00.000000Z");
        now.StatusCode.Should().Be(HttpStatusCode.Created);
        (await CurrentFirmwareAsync(deviceId)).Should().Be("1.0.0");
    }

    [Fact]
    public async Task A_clock_running_ahead_orders_its_own_reports_by_its_clock_so_a_late_older_one_never_moves_it_back()
    {
        var (deviceId, key) = await App.AddDeviceAsync(projectId: 1);
        using var device = App.ClientWithKey(key);
        var clock = DateTime.UtcNow.AddHours(1);
        static string At(DateTime t) => t.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture);

        // The device runs an hour ahead. It updated to 2.0.0 five minutes after installing 1.9.0 by its own clock,
        // but the older report arrives second (a retry after a dropped link).
        (await device.PostEventAsync(deviceId, new { firmware = "2.0.0", status = "updated", timestamp = At(clock.AddMinutes(5)) })).StatusCode.Should().Be(HttpStatusCode.Created);
        (await device.PostEventAsync(deviceId, new { firmware = "1.9.0", status = "installed", timestamp = At(clock) })).StatusCode.Should().Be(HttpStatusCode.Created);
        (await CurrentFirmwareAsync(deviceId)).Should().Be("2.0.0", "both times run ahead: the device's clock orders them");

        // In one batch, the same.
        var batch = await device.PostAsJsonAsync($"/firmware/{deviceId}/batch", new[]
        {
            new { firmware = "3.0.0", status = "updated", timestamp = At(clock.AddMinutes(20)) },
            new { firmware = "2.5.0", status = "updated", timestamp = At(clock.AddMinutes(10)) },
        });
        batch.StatusCode.Should().Be(HttpStatusCode.OK);
        (await CurrentFirmwareAsync(deviceId)).Should().Be("3.0.0");

        // A report with a correct clock, after all of them, still wins: times ahead never pin the state.
        (await device.PostEventAsync(deviceId, new { firmware = "3.0.1", status = "updated" })).StatusCode.Should().Be(HttpStatusCode.Created);
        (await CurrentFirmwareAsync(deviceId)).Should().Be("3.0.1");
    }

    [Fact]
    public async Task A_device_decommissioned_or_its_key_revoked_on_another_instance_stores_nothing_though_its_key_is_cached()
    {
        var (deviceId, key) = await App.AddDeviceAsync(projectId: 1);
        var (otherId, otherKey) = await App.AddDeviceAsync(projectId: 1);
        using var device = App.ClientWithKey(key);
        using var other = App.ClientWithKey(otherKey);
        (await device.GetAsync($"/firmware/{deviceId}")).StatusCode.Should().Be(HttpStatusCode.OK, "the key is now cached here");
        (await other.GetAsync($"/firmware/{otherId}")).StatusCode.Should().Be(HttpStatusCode.OK);
        await using (var connection = App.OpenConnection())
        {
            // As another instance commits them: this one's cache still holds both keys as valid.
            await connection.ExecuteAsync("UPDATE devices SET decommissioned_at = now() WHERE id = @deviceId", new { deviceId });
            await connection.ExecuteAsync("UPDATE device_api_keys SET revoked_at = now() WHERE device_id = @otherId", new { otherId });
        }

        await (await device.PostEventAsync(deviceId, new { firmware = "5.0.0", status = "installed" })).ShouldBeProblemAsync(HttpStatusCode.Unauthorized);
        await (await other.PostEventAsync(otherId, new { firmware = "5.0.0", status = "installed" })).ShouldBeProblemAsync(HttpStatusCode.Unauthorized);
        await (await other.PostAsJsonAsync($"/firmware/{otherId}/batch", new[] { new { firmware = "5.0.1", status = "installed" } }))
            .ShouldBeProblemAsync(HttpStatusCode.Unauthorized);

        (await EventCountAsync(deviceId)).Should().Be(0);
        (await EventCountAsync(otherId)).Should().Be(0);
        (await CurrentFirmwareAsync(deviceId)).Should().BeNull();
    }

    [Fact]
    public async Task One_transaction_stores_the_reports_of_each_device_sent_with_its_own_valid_key_and_nothing_for_the_others()
    {
        var (valid, _) = await App.AddDeviceAsync(projectId: 1);
        var (revoked, _) = await App.AddDeviceAsync(projectId: 1);
        var (borrower, _) = await App.AddDeviceAsync(projectId: 1);
        long validKey, revokedKey;
        await using (var connection = App.OpenConnection())
        {
            validKey = await connection.ExecuteScalarAsync<long>("SELECT id FROM device_api_keys WHERE device_id = @valid", new { valid });
            revokedKey = await connection.ExecuteScalarAsync<long>(
                "UPDATE device_api_keys SET revoked_at = now() WHERE device_id = @revoked RETURNING id", new { revoked });
        }

        static NewFirmwareEvent[] Events(string firmware) =>
            [new(firmware, "downloading", new DateTime(2026, 3, 1, 0, 0, 0, DateTimeKind.Utc)), new(firmware, "installed", null)];

        // One group, as the group commit makes it: the three devices' reports in one statement. The third device's
        // reports come with the first device's key, which is valid, but not its own.
        var outcomes = await App.Services.GetRequiredService<FirmwareEvents>().RecordAsync(
            [new DeviceReports(1, valid, Events("7.0.0"), validKey), new DeviceReports(1, revoked, Events("7.0.1"), revokedKey),
             new DeviceReports(1, borrower, Events("7.0.2"), validKey)],
            CancellationToken.None);

        outcomes.Select(o => o.Outcome).Should().Equal(ReportOutcome.Recorded, ReportOutcome.KeyRevoked, ReportOutcome.KeyRevoked);
        outcomes[0].Created.Select(e => (e.DeviceId, e.Firmware, e.Status)).Should().Equal((valid, "7.0.0", "downloading"), (valid, "7.0.0", "installed"));
        outcomes[0].Created.Select(e => e.Arrival).Should().BeInAscendingOrder().And.OnlyHaveUniqueItems();
        (await EventCountAsync(valid)).Should().Be(2);
        (await EventCountAsync(revoked)).Should().Be(0);
        (await EventCountAsync(borrower)).Should().Be(0);
    }

    [Fact]
    public async Task One_transaction_of_two_projects_numbers_each_projects_events_in_its_own_feed_and_stores_nothing_for_a_device_named_in_another_project()
    {
        var (first, _) = await App.AddDeviceAsync(projectId: 1);
        var (second, _) = await App.AddDeviceAsync(projectId: 2);
        var (elsewhere, _) = await App.AddDeviceAsync(projectId: 2);
        long firstKey, secondKey, elsewhereKey;
        await using (var connection = App.OpenConnection())
        {
            const string KeyOf = "SELECT id FROM device_api_keys WHERE device_id = @device";
            firstKey = await connection.ExecuteScalarAsync<long>(KeyOf, new { device = first });
            secondKey = await connection.ExecuteScalarAsync<long>(KeyOf, new { device = second });
            elsewhereKey = await connection.ExecuteScalarAsync<long>(KeyOf, new { device = elsewhere });
        }

        static NewFirmwareEvent[] Events(string firmware) =>
            [new(firmware, "downloading", new DateTime(2026, 3, 1, 0, 0, 0, DateTimeKind.Utc)), new(firmware, "installed", null)];

        // The third device is project 2's, with its own key, but named as project 1's.
        DeviceReports[] group =
        [
            new(1, first, Events("7.1.0"), firstKey), new(2, second, Events("7.1.1"), secondKey), new(1, elsewhere, Events("7.1.2"), elsewhereKey),
        ];
        var events = App.Services.GetRequiredService<FirmwareEvents>();
        if (PostgresServer.IsCitus)
        {
            // There a transaction runs on one project's node: the group commit makes a group per project.
            await events.Invoking(e => e.RecordAsync(group, CancellationToken.None)).Should().ThrowAsync<ArgumentException>();
            return;
        }

        var outcomes = await events.RecordAsync(group, CancellationToken.None);

        outcomes.Select(o => o.Outcome).Should().Equal(ReportOutcome.Recorded, ReportOutcome.Recorded, ReportOutcome.NoDevice);
        outcomes[0].Created.Select(e => (e.ProjectId, e.Firmware)).Should().Equal((1L, "7.1.0"), (1L, "7.1.0"));
        outcomes[1].Created.Select(e => (e.ProjectId, e.Firmware)).Should().Equal((2L, "7.1.1"), (2L, "7.1.1"));
        (await EventCountAsync(elsewhere)).Should().Be(0);
        await using var check = App.OpenConnection();
        foreach (var (projectId, created, numbersTaken) in new[] { (1L, outcomes[0].Created, 4), (2L, outcomes[1].Created, 2) })
        {
            // Each project took one number per report named in it, the stored ones first, in the group's order.
            var last = await check.ExecuteScalarAsync<long>("SELECT last_arrival FROM project_event_arrivals WHERE project_id = @projectId", new { projectId });
            created.Select(e => e.Arrival).Should().Equal(last - numbersTaken + 1, last - numbersTaken + 2);
        }
    }

    [Fact]
    public async Task Events_of_a_device_that_moved_go_to_its_new_project()
    {
        using var device3 = App.ClientWithKey(FirmwareManagerApp.DeviceKey3);

        var response = await device3.PostEventAsync(3, new { firmware = "1.0.3", status = "updated", timestamp = "2023-02-01T00:00:00Z" });

        (await response.JsonAsync()).GetProperty("project_id").GetInt64().Should().Be(2);
    }

    private async Task<string?> CurrentFirmwareAsync(long deviceId)
    {
        await using var connection = App.OpenConnection();
        return await connection.ExecuteScalarAsync<string?>("SELECT current_firmware FROM devices WHERE id = @deviceId", new { deviceId });
    }

    private async Task<long> EventCountAsync(long deviceId)
    {
        await using var connection = App.OpenConnection();
        return await connection.ExecuteScalarAsync<long>("SELECT count(*) FROM firmware_events WHERE device_id = @deviceId", new { deviceId });
    }
}
