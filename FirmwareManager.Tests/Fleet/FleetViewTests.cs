using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Dapper;
using FirmwareManager.Tests.Infrastructure;
using static FirmwareManager.Tests.Firmware.PagingHistoryTests;

namespace FirmwareManager.Tests.Fleet;

public sealed class FleetViewTests(FirmwareManagerApp app) : ApiTest(app)
{
    private static readonly DateTime Start = new(2024, 6, 1, 0, 0, 0, DateTimeKind.Utc);

    [Fact]
    public async Task Versions_are_listed_by_SemVer_precedence_with_devices_failures_and_rollbacks()
    {
        foreach (var version in new[] { "1.10.0", "2.0.0", "1.9.0", "2.0.0-rc.1", "1.10.0-alpha", "2.0.0-rc.1+build.7", "10.0.0" })
        {
            await App.DeviceRunningAsync(version, Start);
        }

        var failing = await App.DeviceRunningAsync("1.9.0", Start);
        await failing.ReportAsync(Event("2.0.0", "failed", Start.AddDays(1)));
        var rolledBack = await App.DeviceRunningAsync("1.9.0", Start);
        await rolledBack.ReportAsync(Event("2.0.0", "updated", Start.AddDays(1)), Event("1.9.0", "rolled_back", Start.AddDays(2)));
        var recovered = await App.DeviceRunningAsync("1.9.0", Start);
        await recovered.ReportAsync(Event("2.0.0", "failed", Start.AddDays(1)), Event("2.0.0", "updated", Start.AddDays(2)));

        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey2);
        var rows = (await (await member.GetAsync("/firmware-versions")).JsonAsync()).EnumerateArray()
            .ToDictionary(r => r.GetProperty("firmware").GetString()!, r => (
                Devices: r.GetProperty("devices").GetInt64(), Failed: r.GetProperty("failed").GetInt64(), RolledBack: r.GetProperty("rolled_back").GetInt64()));
        var order = (await (await member.GetAsync("/firmware-versions")).JsonAsync()).EnumerateArray().Select(r => r.GetProperty("firmware").GetString()).ToList();

        order.Should().Equal("1.0.0", "1.0.1", "1.9.0", "1.10.0-alpha", "1.10.0", "2.0.0-rc.1", "2.0.0-rc.1+build.7", "2.0.0", "10.0.0");
        rows["1.9.0"].Should().Be((3L, 0L, 1L), "two still run it, one rolled back to it; the failing device still runs it too");
        rows["2.0.0"].Should().Be((2L, 1L, 0L), "one runs it since the start, the recovered one updated after failing; one device's newest 2.0.0 event is a failure");
        rows["1.0.0"].Should().Be((1L, 0L, 0L));
        rows.Should().NotContainKey("1.0.2", "device 3 is in project 2");
    }

    [Fact]
    public async Task Version_counts_stay_equal_to_a_recount_under_concurrent_reports()
    {
        var devices = new List<(long Id, HttpClient Client)>();
        for (var i = 0; i < 24; i++)
        {
            var (id, key) = await App.AddDeviceAsync(projectId: 1);
            devices.Add((id, App.ClientWithKey(key)));
        }

        var versions = new[] { "1.0.0", "1.1.0", "2.0.0", "2.0.0-rc.1" };
        var statuses = new[] { "installed", "updated", "failed", "rolled_back", "downloading" };
        var random = new Random(7);
        var plans = devices.Select(d => (d, Reports: Enumerable.Range(0, 12)
            .Select(_ => Event(versions[random.Next(versions.Length)], statuses[random.Next(statuses.Length)], Start.AddMinutes(random.Next(600))))
            .ToList())).ToList();

        await Task.WhenAll(plans.Select(async p =>
        {
            foreach (var report in p.Reports.Take(6))
            {
                await p.d.Client.PostEventAsync(p.d.Id, report);
            }

            await p.d.Client.PostAsJsonAsync($"/firmware/{p.d.Id}/batch", p.Reports.Skip(6));
        }));

        await using var connection = App.OpenConnection();
        var counted = await connection.QueryAsync<(string, long, long, long)>("""
            SELECT firmware, sum(devices)::bigint, sum(failed)::bigint, sum(rolled_back)::bigint
            FROM firmware_version_counts WHERE project_id = 1 GROUP BY firmware
            HAVING sum(devices) <> 0 OR sum(failed) <> 0 OR sum(rolled_back) <> 0 ORDER BY firmware
            """);
        var recounted = await connection.QueryAsync<(string, long, long, long)>("""
            WITH newest AS (
                SELECT DISTINCT ON (device_id, firmware) device_id, firmware, status
                FROM firmware_events WHERE project_id = 1
                ORDER BY device_id, firmware, LEAST(occurred_at, received_at) DESC, id DESC
            ),
            current AS (
                SELECT DISTINCT ON (e.device_id) e.device_id, e.firmware
                FROM firmware_events AS e
                JOIN devices AS d ON d.project_id = e.project_id AND d.id = e.device_id
                WHERE d.project_id = 1 AND e.status IN ('installed', 'updated', 'rolled_back')
                ORDER BY e.device_id, LEAST(e.occurred_at, e.received_at) DESC, e.id DESC
            )
            SELECT firmware, sum(devices)::bigint, sum(failed)::bigint, sum(rolled_back)::bigint FROM (
                SELECT firmware, 1 AS devices, 0 AS failed, 0 AS rolled_back FROM current
                UNION ALL
                SELECT firmware, 0, (status = 'failed')::int, (status = 'rolled_back')::int FROM newest
            ) AS x
            GROUP BY firmware
            HAVING sum(devices) <> 0 OR sum(failed) <> 0 OR sum(rolled_back) <> 0 ORDER BY firmware
            """);

        counted.Should().Equal(recounted);
        foreach (var (_, client) in devices)
        {
            client.Dispose();
        }
    }

    [Fact]
    public async Task Devices_are_listed_with_filters_and_pages()
    {
        var onOld = (await App.DeviceRunningAsync("1.9.0", Start)).Id;
        var failedOnNewDevice = await App.DeviceRunningAsync("1.9.0", Start);
        await failedOnNewDevice.ReportAsync(Event("2.0.0", "failed", Start.AddDays(1)));
        var updatedDevice = await App.DeviceRunningAsync("1.9.0", Start);
        await updatedDevice.ReportAsync(Event("2.0.0", "updated", Start.AddDays(1)));
        var (failedOnNew, updated) = (failedOnNewDevice.Id, updatedDevice.Id);
        var (silent, _) = await App.AddDeviceAsync(projectId: 1);
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);

        async Task<List<long>> IdsAsync(string query) => (await (await member.GetAsync("/devices?" + query)).JsonAsync())
            .EnumerateArray().Select(d => d.GetProperty("id").GetInt64()).ToList();

        (await IdsAsync("firmware=1.9.0")).Should().Equal(onOld, failedOnNew);
        (await IdsAsync("firmware=1.9.0&status_of_last_event=failed")).Should().Equal(failedOnNew);
        (await IdsAsync("status_of_last_event=updated")).Should().Contain(updated).And.Contain(2).And.NotContain(onOld);
        (await IdsAsync("silent_since=2020-01-01T00:00:00Z")).Should().Equal(silent);
        (await IdsAsync("")).Should().Equal(1, 2, onOld, failedOnNew, updated, silent);
        (await IdsAsync("firmware=2.0.0")).Should().Equal(updated);
        (await IdsAsync("firmware=1.9.0&silent_since=2020-01-01T00:00:00Z")).Should().BeEmpty();
        (await IdsAsync("status_of_last_event=failed&silent_since=2999-01-01T00:00:00Z")).Should().Equal(failedOnNew);
        (await IdsAsync("firmware=1.9.0&status_of_last_event=failed&silent_since=2999-01-01T00:00:00Z")).Should().Equal(failedOnNew);
        (await IdsAsync("firmware=1.9.0&status_of_last_event=updated&silent_since=2999-01-01T00:00:00Z")).Should().BeEmpty();

        var first = await member.GetAsync("/devices?limit=4");
        var second = await member.GetAsync(NextLink(first));
        (await first.JsonAsync()).EnumerateArray().Select(d => d.GetProperty("id").GetInt64()).Should().Equal(1, 2, onOld, failedOnNew);
        (await second.JsonAsync()).EnumerateArray().Select(d => d.GetProperty("id").GetInt64()).Should().Equal(updated, silent);
        second.Headers.Contains("Link").Should().BeFalse();
        (await (await member.GetAsync("/devices?silent_since=soon")).ShouldBeValidationProblemAsync()).Should().ContainKey("silent_since");
        (await (await member.GetAsync("/devices?status_of_last_event=x")).ShouldBeValidationProblemAsync()).Should().ContainKey("status_of_last_event");
    }

    [Fact]
    public async Task A_device_summary_answers_what_it_runs_and_what_happened_last()
    {
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey3);

        var summary = await (await member.GetAsync("/devices/3")).JsonAsync();

        summary.EnumerateObject().Select(p => p.Name).Should().Equal(
            "id", "project_id", "name", "serial", "current_firmware", "current_firmware_reported_at", "last_reported_at", "last_event_status",
            "last_event_at", "created_at", "decommissioned_at", "hardware", "tags");
        summary.GetProperty("current_firmware").GetString().Should().Be("1.0.2");
        summary.GetProperty("current_firmware_reported_at").GetString().Should().Be("2023-01-01T00:00:00.000000Z");
        summary.GetProperty("last_event_status").GetString().Should().Be("updated");
        await (await member.GetAsync("/devices/1")).ShouldBeProblemAsync(HttpStatusCode.NotFound);
        await (await member.GetAsync("/devices/x")).ShouldBeProblemAsync(HttpStatusCode.BadRequest);
    }

    [Fact]
    public async Task Concurrent_version_reads_of_two_projects_each_get_their_own_and_a_read_after_a_report_sees_it()
    {
        using var member1 = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        using var member2 = App.ClientWithKey(FirmwareManagerApp.MemberKey3);
        static async Task<string[]> VersionsAsync(HttpClient client) =>
            (await (await client.GetAsync("/firmware-versions")).JsonAsync()).EnumerateArray().Select(v => v.GetProperty("firmware").GetString()!).ToArray();
        var alone1 = await VersionsAsync(member1);
        var alone2 = await VersionsAsync(member2);
        alone1.Should().NotEqual(alone2, "the demo projects run different versions");

        // Reads running at once share one query per project: never the other project's answer.
        var reads = await Task.WhenAll(Enumerable.Range(0, 60).Select(async i => (Project: i % 2, Versions: await VersionsAsync(i % 2 == 0 ? member1 : member2))));
        reads.Where(r => r.Project == 0).Should().OnlyContain(r => r.Versions.SequenceEqual(alone1));
        reads.Where(r => r.Project == 1).Should().OnlyContain(r => r.Versions.SequenceEqual(alone2));

        // Nothing is kept once given: a report acknowledged before the next read is in it.
        var (_, device) = await App.DeviceRunningAsync("7.7.7", Start);
        device.Dispose();
        (await VersionsAsync(member1)).Should().Contain("7.7.7");
    }

    [Fact]
    public async Task A_project_never_sees_another_projects_events_devices_or_versions()
    {
        using var device3 = App.ClientWithKey(FirmwareManagerApp.DeviceKey3);
        await ((long)3, device3).ReportAsync(Event("9.9.9", "failed", Start));
        using var member1 = App.ClientWithKey(FirmwareManagerApp.MemberKey1);

        var events = await (await member1.GetAsync("/events?limit=1000")).JsonAsync();
        var polled = await (await member1.GetAsync("/events?after=beginning&limit=1000")).JsonAsync();
        var devices = await (await member1.GetAsync("/devices?limit=1000")).JsonAsync();
        var versions = await (await member1.GetAsync("/firmware-versions")).JsonAsync();
        var byDevice = await (await member1.GetAsync("/events?device_id=3")).JsonAsync();

        events.EnumerateArray().Should().OnlyContain(e => e.GetProperty("project_id").GetInt64() == 1);
        events.EnumerateArray().Select(e => e.GetProperty("id").GetInt64()).Should().Contain(4, "device 3 reported it while in project 1");
        polled.EnumerateArray().Should().OnlyContain(e => e.GetProperty("project_id").GetInt64() == 1);
        devices.EnumerateArray().Select(d => d.GetProperty("id").GetInt64()).Should().Equal(1, 2);
        versions.EnumerateArray().Select(v => v.GetProperty("firmware").GetString()).Should().NotContain(["9.9.9", "1.0.2"]);
        byDevice.EnumerateArray().Select(e => e.GetProperty("firmware").GetString()).Should().Equal("1.0.0");
    }

    [Theory]
    [InlineData("/events")]
    [InlineData("/devices")]
    [InlineData("/devices/1")]
    [InlineData("/firmware-versions")]
    [InlineData("/me")]
    [InlineData("/me/keys")]
    public async Task Fleet_views_are_for_members_and_a_device_key_gets_403(string path)
    {
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        using var anonymous = App.ClientWithKey(null);

        await (await device.GetAsync(path)).ShouldBeProblemAsync(HttpStatusCode.Forbidden);
        await (await anonymous.GetAsync(path)).ShouldBeProblemAsync(HttpStatusCode.Unauthorized);
    }
}
