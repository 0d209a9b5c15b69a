using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Dapper;
using FirmwareManager.Tests.Infrastructure;
using static FirmwareManager.Tests.Firmware.PagingHistoryTests;

namespace FirmwareManager.Tests.FleetHealth;

/// <summary>
/// Transitions, silence after an update and unexplained downgrades: answered from the state ingest keeps, through
/// the API, and equal to a recount after concurrent reports.
/// </summary>
public sealed class FleetHealthTests(FirmwareManagerApp app) : ApiTest(app)
{
    private static readonly DateTime Start = new(2024, 6, 1, 0, 0, 0, DateTimeKind.Utc);

    [Fact]
    public async Task Transitions_count_each_device_once_per_target_by_its_newest_report_with_the_top_error_codes()
    {
        var succeeded = await App.DeviceRunningAsync("1.0.0", Start);
        await succeeded.ReportAsync(Event("2.0.0", "installing", Start.AddHours(1)), Event("2.0.0", "updated", Start.AddHours(2)));
        var failedTwice = await App.DeviceRunningAsync("1.0.0", Start);
        await failedTwice.ReportAsync(Failed("2.0.0", Start.AddHours(1), "E_NO_SPACE"), Failed("2.0.0", Start.AddHours(2), "E_SIG_VERIFY"));
        var failed = await App.DeviceRunningAsync("1.0.0", Start);
        await failed.ReportAsync(Failed("2.0.0", Start.AddHours(1), "E_SIG_VERIFY"));
        // Installed, then rolled back to 1.0.0 in a later report: the rollback names the version gone back to.
        var rolledBack = await App.DeviceRunningAsync("1.0.0", Start);
        await rolledBack.ReportAsync(Event("2.0.0", "installed", Start.AddHours(1)));
        await rolledBack.ReportAsync(new { firmware = "1.0.0", status = "rolled_back", timestamp = At(Start.AddHours(2)), error_code = "E_BOOT_LOOP" });
        var inProgress = await App.DeviceRunningAsync("1.5.0", Start);
        await inProgress.ReportAsync(new { firmware = "2.0.0", status = "downloading", timestamp = At(Start.AddHours(1)), from_firmware = "1.5.0" });
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);

        var all = await (await member.GetAsync("/firmware-transitions?to=2.0.0")).JsonAsync();

        all.EnumerateArray().Select(t => (t.GetProperty("from_firmware").GetString(), t.GetProperty("to_firmware").GetString()))
            .Should().Equal(("1.0.0", "2.0.0"), ("1.5.0", "2.0.0"));
        var fromOne = all[0];
        Counts(fromOne).Should().Be((4, 1, 2, 1, 0));
        fromOne.GetProperty("top_error_codes").EnumerateArray()
            .Select(e => (e.GetProperty("error_code").GetString(), e.GetProperty("devices").GetInt64()))
            .Should().Equal(("E_SIG_VERIFY", 2L), ("E_BOOT_LOOP", 1L));
        Counts(all[1]).Should().Be((1, 0, 0, 0, 1));
        (await (await member.GetAsync("/firmware-transitions?from=1.5.0")).JsonAsync()).GetArrayLength().Should().Be(1);
        var installs = await (await member.GetAsync("/firmware-transitions?to=1.0.0")).JsonAsync();
        installs.EnumerateArray().Select(t => t.GetProperty("from_firmware").ValueKind).Should().Equal(JsonValueKind.Null);
        Counts(installs[0]).Should().Be((7, 7, 0, 0, 0), "four devices here and the three of the demo data installed it");

        var first = await member.GetAsync("/firmware-transitions?limit=3");
        var second = await member.GetAsync(NextLink(first));
        var pairs = (await first.JsonAsync()).EnumerateArray().Concat((await second.JsonAsync()).EnumerateArray())
            .Select(t => t.GetProperty("to_firmware").GetString() + "<" + t.GetProperty("from_firmware").GetString()).ToList();
        pairs.Should().Equal("1.0.0<", "1.0.1<1.0.0", "1.5.0<", "2.0.0<1.0.0", "2.0.0<1.5.0");
        NextLink(second).Should().BeNull();
        (await (await member.GetAsync("/firmware-transitions?to=two")).ShouldBeValidationProblemAsync()).Should().ContainKey("to");
    }

    [Fact]
    public async Task A_backlog_batch_counts_each_report_from_the_version_the_device_ran_before_it_in_that_batch()
    {
        // Offline for a while, the device uploads it all at once: installed 3.0.0, failed on 4.0.0, then installed
        // 4.0.0 and rolled back from it. Its version when the batch arrived (1.0.0) preceded all of them.
        var device = await App.DeviceRunningAsync("1.0.0", Start);
        await device.ReportAsync(
            Event("3.0.0", "installed", Start.AddHours(1)),
            Failed("4.0.0", Start.AddHours(2), "E_SIG_VERIFY"),
            Event("4.0.0", "installed", Start.AddHours(3)),
            new { firmware = "3.0.0", status = "rolled_back", timestamp = At(Start.AddHours(4)), error_code = "E_BOOT_LOOP" });
        // Reports of one device in one transaction are ordered by their time, not by their place in the batch.
        var shuffled = await App.DeviceRunningAsync("1.0.0", Start);
        await shuffled.ReportAsync(Failed("6.0.0", Start.AddHours(2), "E_NO_SPACE"), Event("5.0.0", "updated", Start.AddHours(1)));
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);

        var pairs = (await (await member.GetAsync("/firmware-transitions?limit=1000")).JsonAsync()).EnumerateArray()
            .Select(t => (t.GetProperty("from_firmware").GetString(), t.GetProperty("to_firmware").GetString(), Counts(t)))
            .Where(t => t.Item2 is "3.0.0" or "4.0.0" or "5.0.0" or "6.0.0").ToList();

        pairs.Should().Equal(
            ("1.0.0", "3.0.0", (1L, 1L, 0L, 0L, 0L)),
            ("3.0.0", "4.0.0", (1L, 0L, 0L, 1L, 0L)),
            ("1.0.0", "5.0.0", (1L, 1L, 0L, 0L, 0L)),
            ("5.0.0", "6.0.0", (1L, 0L, 1L, 0L, 0L)));
    }

    [Fact]
    public async Task A_device_that_comes_down_to_an_older_version_without_a_rollback_is_an_unexplained_downgrade_until_it_moves_again()
    {
        var downgraded = await App.DeviceRunningAsync("2.0.0", Start);
        await downgraded.ReportAsync(Event("1.9.0", "updated", Start.AddHours(1)));
        var rolledBack = await App.DeviceRunningAsync("2.0.0", Start);
        await rolledBack.ReportAsync(Event("1.9.0", "rolled_back", Start.AddHours(1)));
        var upgraded = await App.DeviceRunningAsync("1.0.0", Start);
        await upgraded.ReportAsync(Event("1.9.0", "updated", Start.AddHours(1)));
        var rebuilt = await App.DeviceRunningAsync("1.9.0+build.2", Start);
        await rebuilt.ReportAsync(Event("1.9.0+build.1", "updated", Start.AddHours(1)));
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);

        (await VersionAsync(member, "1.9.0")).GetProperty("unexplained_downgrades").GetInt64().Should().Be(1);
        (await IdsAsync(member, "unexplained_downgrade=true")).Should().Equal(downgraded.Id);
        (await (await member.GetAsync($"/devices/{downgraded.Id}")).JsonAsync()).GetProperty("unexplained_downgrade_from").GetString().Should().Be("2.0.0");
        (await (await member.GetAsync($"/devices/{rolledBack.Id}")).JsonAsync()).TryGetProperty("unexplained_downgrade_from", out _).Should().BeFalse();

        await downgraded.ReportAsync(Event("2.1.0", "updated", Start.AddHours(2)));

        (await VersionAsync(member, "1.9.0")).GetProperty("unexplained_downgrades").GetInt64().Should().Be(0);
        (await VersionAsync(member, "2.1.0")).GetProperty("unexplained_downgrades").GetInt64().Should().Be(0);
        (await IdsAsync(member, "unexplained_downgrade=true")).Should().BeEmpty();
        (await (await member.GetAsync("/devices?unexplained_downgrade=yes")).ShouldBeValidationProblemAsync()).Should().ContainKey("unexplained_downgrade");
    }

    [Fact]
    public async Task A_device_silent_after_an_update_counts_once_its_projects_threshold_has_passed()
    {
        var silent = await App.DeviceRunningAsync("1.0.0", Start);
        await silent.ReportAsync(Event("2.0.0", "updated", Start.AddHours(1)));
        var busy = await App.DeviceRunningAsync("1.0.0", Start);
        await busy.ReportAsync(Event("2.0.0", "updated", Start.AddHours(1)), Event("2.1.0", "downloading", Start.AddHours(2)));
        var failing = await App.DeviceRunningAsync("1.0.0", Start);
        await failing.ReportAsync(Event("2.0.0", "failed", Start.AddHours(1)));
        // Every device reported (received) about now; the service's clock is moved instead of the reports'.
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);

        async Task<(long Silent, List<long> Devices)> SilentAtAsync(TimeSpan later)
        {
            App.Clock.Offset = later;
            var version = (await (await member.GetAsync("/firmware-versions")).JsonAsync()).EnumerateArray().Single(v => v.GetProperty("firmware").GetString() == "2.0.0");
            return (version.GetProperty("silent_after_update").GetInt64(), await IdsAsync(member, "silent_after_update=true&firmware=2.0.0"));
        }

        var before = await SilentAtAsync(TimeSpan.FromHours(23));
        before.Silent.Should().Be(0);
        before.Devices.Should().BeEmpty();
        var justAfter = await SilentAtAsync(TimeSpan.FromHours(24) + TimeSpan.FromMinutes(1));
        justAfter.Silent.Should().Be(1);
        justAfter.Devices.Should().Equal(silent.Id);
        (await SilentAtAsync(TimeSpan.FromHours(30))).Silent.Should().Be(1, "counted by the hour of its last report, before the cutoff's hour");

        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        (await admin.PutAsJsonAsync("/project/fleet-health", new { silent_after_hours = 48 })).StatusCode.Should().Be(HttpStatusCode.OK);
        (await SilentAtAsync(TimeSpan.FromHours(30))).Silent.Should().Be(0);
        (await SilentAtAsync(TimeSpan.FromHours(49))).Silent.Should().Be(1);
        (await (await admin.GetAsync("/project/fleet-health")).JsonAsync()).GetProperty("effective_silent_after_hours").GetInt32().Should().Be(48);
        (await admin.DeleteAsync("/project/fleet-health")).StatusCode.Should().Be(HttpStatusCode.OK);
        (await (await admin.GetAsync("/project/fleet-health")).JsonAsync()).GetProperty("effective_silent_after_hours").GetInt32().Should().Be(24);
    }

    [Theory]
    [InlineData("{\"silent_after_hours\":0}")]
    [InlineData("{\"silent_after_hours\":8761}")]
    [InlineData("{\"silent_after_hours\":1.5}")]
    [InlineData("{\"silent_after_hours\":\"24\"}")]
    [InlineData("{\"silent_after_hours\":null}")]
    [InlineData("{}")]
    [InlineData("[]")]
    public async Task A_bad_fleet_health_setting_is_400_and_changes_nothing(string body)
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);

        var response = await admin.SendAsync(new HttpRequestMessage(HttpMethod.Put, "/project/fleet-health")
        {
            Content = new StringContent(body, System.Text.Encoding.UTF8, "application/json"),
        });

        response.StatusCode.Should().Be(HttpStatusCode.BadRequest);
        (await (await admin.GetAsync("/project/fleet-health")).JsonAsync()).GetProperty("silent_after_hours").ValueKind.Should().Be(JsonValueKind.Null);
    }

    [Fact]
    public async Task Fleet_health_counts_stay_equal_to_a_recount_under_concurrent_reports()
    {
        var devices = new List<(long Id, HttpClient Client)>();
        for (var i = 0; i < 24; i++)
        {
            var (id, key) = await App.AddDeviceAsync(projectId: 1);
            devices.Add((id, App.ClientWithKey(key)));
        }

        var versions = new[] { "1.0.0", "1.1.0", "2.0.0", "2.0.0-rc.1" };
        var statuses = new[] { "installed", "updated", "failed", "rolled_back", "downloading" };
        var codes = new[] { null, "E_SIG", "E_NO_SPACE" };
        var random = new Random(11);
        var plans = devices.Select(d => (d, Reports: Enumerable.Range(0, 12).Select(_ => (object)new
        {
            firmware = versions[random.Next(versions.Length)],
            status = statuses[random.Next(statuses.Length)],
            timestamp = At(Start.AddMinutes(random.Next(600))),
            from_firmware = versions[random.Next(versions.Length)],
            error_code = codes[random.Next(codes.Length)],
        }).ToList())).ToList();

        await Task.WhenAll(plans.Select(async p =>
        {
            foreach (var report in p.Reports.Take(6))
            {
                await p.d.Client.PostEventAsync(p.d.Id, report);
            }

            await p.d.Client.PostAsJsonAsync($"/firmware/{p.d.Id}/batch", p.Reports.Skip(6));
        }));

        await using var connection = App.OpenConnection();
        var ids = devices.Select(d => d.Id).ToArray();
        // Every report named its from_firmware, so each device's state per target follows from its events alone.
        var state = await connection.QueryAsync<(long, string, string, string, string)>("""
            SELECT device_id, to_firmware, from_firmware, status, COALESCE(error_code, '')
            FROM device_transition_status WHERE project_id = 1 AND device_id = ANY(@Ids) ORDER BY 1, 2
            """, new { Ids = ids });
        var fromEvents = await connection.QueryAsync<(long, string, string, string, string)>("""
            SELECT DISTINCT ON (device_id, to_firmware) device_id, to_firmware, from_firmware, status, COALESCE(error_code, '')
            FROM (
                SELECT device_id, id, status, error_code, LEAST(occurred_at, received_at) AS reported_at,
                       CASE WHEN status = 'rolled_back' THEN from_firmware ELSE firmware END AS to_firmware,
                       CASE WHEN status = 'rolled_back' THEN firmware ELSE from_firmware END AS from_firmware
                FROM firmware_events WHERE project_id = 1 AND device_id = ANY(@Ids)
            ) AS e
            ORDER BY device_id, to_firmware, reported_at DESC, id DESC
            """, new { Ids = ids });
        state.Should().Equal(fromEvents);
        (await connection.QueryAsync<(string, string, long, long, long, long)>("""
            SELECT to_firmware, from_firmware, attempted, succeeded, failed, rolled_back
            FROM firmware_transition_counts WHERE project_id = 1 AND attempted <> 0 ORDER BY 1, 2
            """)).Should().Equal(await connection.QueryAsync<(string, string, long, long, long, long)>("""
            SELECT to_firmware, COALESCE(from_firmware, ''), count(*), count(*) FILTER (WHERE status IN ('installed', 'updated')),
                   count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'rolled_back')
            FROM device_transition_status WHERE project_id = 1 GROUP BY 1, 2 ORDER BY 1, 2
            """));
        (await connection.QueryAsync<(string, string, string, long)>("""
            SELECT to_firmware, from_firmware, error_code, devices
            FROM firmware_transition_errors WHERE project_id = 1 AND devices <> 0 ORDER BY 1, 2, 3
            """)).Should().Equal(await connection.QueryAsync<(string, string, string, long)>("""
            SELECT to_firmware, COALESCE(from_firmware, ''), error_code, count(*)
            FROM device_transition_status
            WHERE project_id = 1 AND status IN ('failed', 'rolled_back') AND error_code IS NOT NULL
            GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
            """));
        (await connection.QueryAsync<(string, DateTime, long)>("""
            SELECT firmware, reported_hour, devices FROM firmware_silence_counts WHERE project_id = 1 AND devices <> 0 ORDER BY 1, 2
            """)).Should().Equal(await connection.QueryAsync<(string, DateTime, long)>("""
            SELECT current_firmware, date_trunc('hour', last_reported_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', count(*)
            FROM devices WHERE project_id = 1 AND last_event_status IN ('installed', 'updated') AND current_firmware IS NOT NULL
            GROUP BY 1, 2 ORDER BY 1, 2
            """));
        (await connection.QueryAsync<(string, long)>("""
            SELECT firmware, sum(unexplained_downgrades)::bigint FROM firmware_version_counts WHERE project_id = 1
            GROUP BY 1 HAVING sum(unexplained_downgrades) <> 0 ORDER BY 1
            """)).Should().Equal(await connection.QueryAsync<(string, long)>("""
            SELECT current_firmware, count(*) FROM devices WHERE project_id = 1 AND downgraded_from IS NOT NULL GROUP BY 1 ORDER BY 1
            """));
        state.Should().NotBeEmpty();
        foreach (var (_, client) in devices)
        {
            client.Dispose();
        }
    }

    private static object Failed(string firmware, DateTime at, string code) =>
        new { firmware, status = "failed", timestamp = At(at), error_code = code };

    private static string At(DateTime time) => time.ToString("yyyy-MM-dd'T'HH:mm:ss.ffffff'Z'", System.Globalization.CultureInfo.InvariantCulture);

    private static (long, long, long, long, long) Counts(JsonElement t) => (
        t.GetProperty("attempted").GetInt64(), t.GetProperty("succeeded").GetInt64(), t.GetProperty("failed").GetInt64(),
        t.GetProperty("rolled_back").GetInt64(), t.GetProperty("in_progress").GetInt64());

    private static async Task<JsonElement> VersionAsync(HttpClient member, string firmware) =>
        (await (await member.GetAsync("/firmware-versions")).JsonAsync()).EnumerateArray().Single(v => v.GetProperty("firmware").GetString() == firmware);

    private static async Task<List<long>> IdsAsync(HttpClient member, string query) => (await (await member.GetAsync("/devices?" + query)).JsonAsync())
        .EnumerateArray().Select(d => d.GetProperty("id").GetInt64()).ToList();
}
