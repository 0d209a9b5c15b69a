using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Dapper;
using FirmwareManager.Tests.Infrastructure;
using static FirmwareManager.Tests.Firmware.PagingHistoryTests;

namespace FirmwareManager.Tests.FleetHealth;

/// <summary>Devices' hardware and tags: set at enrollment, on one device and in bulk; every fleet view filters by them.</summary>
public sealed class DeviceAttributesTests(FirmwareManagerApp app) : ApiTest(app)
{
    private static readonly DateTime Start = new(2024, 6, 1, 0, 0, 0, DateTimeKind.Utc);

    [Fact]
    public async Task Hardware_and_tags_are_set_at_enrollment_and_changed_on_one_device()
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);

        var created = await admin.PostAsJsonAsync("/devices", new { name = "boiler", hardware = "rev-B", tags = new[] { "site:berlin", "pilot", "pilot" } });

        created.StatusCode.Should().Be(HttpStatusCode.Created);
        var device = (await created.JsonAsync()).GetProperty("device");
        var id = device.GetProperty("id").GetInt64();
        device.GetProperty("hardware").GetString().Should().Be("rev-B");
        Tags(device).Should().Equal("pilot", "site:berlin");

        var changed = await admin.PatchAsJsonAsync($"/devices/{id}", new { add_tags = new[] { "eu" }, remove_tags = new[] { "pilot" } });
        changed.StatusCode.Should().Be(HttpStatusCode.OK);
        Tags(await changed.JsonAsync()).Should().Equal("eu", "site:berlin");
        var cleared = await (await admin.PatchAsJsonAsync($"/devices/{id}", new { clear_hardware = true, tags = Array.Empty<string>() })).JsonAsync();
        cleared.GetProperty("hardware").ValueKind.Should().Be(JsonValueKind.Null);
        Tags(cleared).Should().BeEmpty();
        (await (await admin.GetAsync("/audit")).Content.ReadAsStringAsync()).Should().Contain("device.attributes_changed");
        await (await admin.PatchAsJsonAsync("/devices/999999", new { hardware = "rev-C" })).ShouldBeProblemAsync(HttpStatusCode.NotFound);
        using var viewer = App.ClientWithKey(FirmwareManagerApp.MemberKey2);
        await (await viewer.PatchAsJsonAsync($"/devices/{id}", new { hardware = "rev-C" })).ShouldBeProblemAsync(HttpStatusCode.Forbidden);
    }

    [Fact]
    public async Task A_bulk_change_is_all_or_nothing()
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var ids = new List<long>();
        for (var i = 0; i < 3; i++)
        {
            ids.Add((await App.AddDeviceAsync(projectId: 1)).DeviceId);
        }

        var changed = await admin.PatchAsJsonAsync("/devices", new { device_ids = ids, hardware = "rev-C", add_tags = new[] { "wave-1" } });
        changed.StatusCode.Should().Be(HttpStatusCode.OK);
        (await changed.JsonAsync()).GetProperty("changed").GetInt32().Should().Be(3);

        // Device 3 is project 2's: nothing changes.
        var refused = await admin.PatchAsJsonAsync("/devices", new { device_ids = ids.Append(3), hardware = "rev-D" });
        (await refused.ShouldBeValidationProblemAsync())["device_ids"].Single().Should().Contain("3");
        var tooMany = await admin.PatchAsJsonAsync("/devices", new { device_ids = ids, add_tags = Enumerable.Range(0, 16).Select(i => $"t{i}") });
        (await tooMany.ShouldBeValidationProblemAsync()).Should().ContainKey("add_tags");
        foreach (var id in ids)
        {
            var device = await (await admin.GetAsync($"/devices/{id}")).JsonAsync();
            device.GetProperty("hardware").GetString().Should().Be("rev-C");
            Tags(device).Should().Equal("wave-1");
        }
    }

    [Theory]
    [InlineData("/devices", """{"hardware":"rev B"}""", "hardware")]
    [InlineData("/devices", """{"hardware":""}""", "hardware")]
    [InlineData("/devices", """{"tags":["a,b"]}""", "tags")]
    [InlineData("/devices", """{"tags":"pilot"}""", "tags")]
    [InlineData("/devices", """{"tags":["t0","t1","t2","t3","t4","t5","t6","t7","t8","t9","t10","t11","t12","t13","t14","t15","t16"]}""", "tags")]
    [InlineData("/devices/bulk", """{"count":2,"hardware":"rev/B\u00e9"}""", "hardware")]
    [InlineData("/devices/1", """{"hardware":"rev-B","clear_hardware":true}""", "clear_hardware")]
    [InlineData("/devices/1", """{"clear_hardware":"yes"}""", "clear_hardware")]
    [InlineData("/devices/1", """{"tags":["a"],"add_tags":["b"]}""", "tags")]
    [InlineData("/devices/1", """{}""", "body")]
    [InlineData("/devices", """{"device_ids":[1,-2],"hardware":"rev-B"}""", "device_ids[1]")]
    [InlineData("/devices", """{"device_ids":[],"hardware":"rev-B"}""", "device_ids")]
    [InlineData("/devices", """{"device_ids":"1","hardware":"rev-B"}""", "device_ids")]
    public async Task A_bad_attribute_is_400_naming_it_and_changes_nothing(string path, string body, string field)
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var method = path == "/devices/bulk" || (path == "/devices" && !body.Contains("device_ids", StringComparison.Ordinal)) ? HttpMethod.Post : HttpMethod.Patch;

        var response = await admin.SendAsync(new HttpRequestMessage(method, path) { Content = new StringContent(body, System.Text.Encoding.UTF8, "application/json") });

        (await response.ShouldBeValidationProblemAsync()).Should().ContainKey(field);
        await using var connection = App.OpenConnection();
        (await connection.ExecuteScalarAsync<long>("SELECT count(*) FROM devices WHERE hardware IS NOT NULL OR tags <> '{}' OR id > 3")).Should().Be(0);
    }

    [Fact]
    public async Task Devices_and_versions_filter_by_hardware_and_tags_and_versions_break_down_by_hardware()
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var revB = new List<(long Id, HttpClient Client)>();
        for (var i = 0; i < 3; i++)
        {
            revB.Add(await App.DeviceRunningAsync("1.0.0", Start));
        }

        var revC = await App.DeviceRunningAsync("1.0.0", Start);
        (await admin.PatchAsJsonAsync("/devices", new { device_ids = revB.Select(d => d.Id), hardware = "rev-B", tags = new[] { "pilot" } })).EnsureSuccessStatusCode();
        (await admin.PatchAsJsonAsync($"/devices/{revC.Id}", new { hardware = "rev-C", tags = new[] { "pilot", "eu" } })).EnsureSuccessStatusCode();
        await revB[0].ReportAsync(Event("2.0.0", "updated", Start.AddHours(1)));
        await revB[1].ReportAsync(new { firmware = "2.0.0", status = "failed", timestamp = "2024-06-01T01:00:00Z", error_code = "E_SIG" });
        await revC.ReportAsync(Event("2.0.0", "updated", Start.AddHours(1)));

        async Task<List<long>> IdsAsync(string query) => (await (await admin.GetAsync("/devices?" + query)).JsonAsync())
            .EnumerateArray().Select(d => d.GetProperty("id").GetInt64()).ToList();
        async Task<Dictionary<string, (long Devices, long Failed)>> VersionsAsync(string query) => (await (await admin.GetAsync("/firmware-versions?" + query)).JsonAsync())
            .EnumerateArray().ToDictionary(v => v.GetProperty("firmware").GetString()!, v => (v.GetProperty("devices").GetInt64(), v.GetProperty("failed").GetInt64()));

        (await IdsAsync("hardware=rev-B")).Should().Equal(revB.Select(d => d.Id));
        (await IdsAsync("tag=pilot")).Should().Equal(revB.Select(d => d.Id).Append(revC.Id));
        (await IdsAsync("tag=pilot&tag=eu")).Should().Equal(revC.Id);
        (await IdsAsync("hardware=rev-B&firmware=2.0.0")).Should().Equal(revB[0].Id);
        (await VersionsAsync("hardware=rev-B")).Should().BeEquivalentTo(new Dictionary<string, (long, long)> { ["1.0.0"] = (2, 0), ["2.0.0"] = (1, 1) });
        (await VersionsAsync("tag=pilot")).Should().BeEquivalentTo(new Dictionary<string, (long, long)> { ["1.0.0"] = (2, 0), ["2.0.0"] = (2, 1) });
        (await VersionsAsync("tag=eu&hardware=rev-C")).Should().BeEquivalentTo(new Dictionary<string, (long, long)> { ["2.0.0"] = (1, 0) });
        var version = (await (await admin.GetAsync("/firmware-versions?by=hardware")).JsonAsync()).EnumerateArray()
            .Single(v => v.GetProperty("firmware").GetString() == "2.0.0");
        var broken = version.GetProperty("by_hardware").EnumerateArray()
            .Select(h => (h.GetProperty("hardware").GetString(), h.GetProperty("devices").GetInt64(), h.GetProperty("failed").GetInt64(),
                h.GetProperty("silent_after_update").GetInt64())).ToList();
        // Silent after update per hardware, as the version counts it: two days on, the two that updated (not the failed one).
        App.Clock.Offset = TimeSpan.FromDays(2);
        var silentByHardware = (await (await admin.GetAsync("/firmware-versions?by=hardware")).JsonAsync()).EnumerateArray()
            .Single(v => v.GetProperty("firmware").GetString() == "2.0.0").GetProperty("by_hardware").EnumerateArray()
            .Select(h => h.GetProperty("silent_after_update").GetInt64()).ToList();
        broken.Select(h => (h.Item1, h.Item2, h.Item3)).Should().Equal(("rev-B", 1L, 1L), ("rev-C", 1L, 0L));
        broken.Sum(h => h.Item4).Should().Be(version.GetProperty("silent_after_update").GetInt64());
        silentByHardware.Should().Equal(1L, 1L);

        async Task<List<(string?, long, long, long)>> TransitionsAsync(string query) => (await (await admin.GetAsync("/firmware-transitions?to=2.0.0&" + query)).JsonAsync())
            .EnumerateArray().Select(t => (t.GetProperty("from_firmware").GetString(), t.GetProperty("attempted").GetInt64(),
                t.GetProperty("succeeded").GetInt64(), t.GetProperty("failed").GetInt64())).ToList();
        (await TransitionsAsync("hardware=rev-B")).Should().Equal(("1.0.0", 2L, 1L, 1L));
        (await (await admin.GetAsync("/firmware-transitions?to=2.0.0&tag=pilot")).JsonAsync())[0].GetProperty("top_error_codes")
            .EnumerateArray().Select(e => (e.GetProperty("error_code").GetString(), e.GetProperty("devices").GetInt64())).Should().Equal(("E_SIG", 1L));
        (await TransitionsAsync("tag=pilot")).Should().Equal(("1.0.0", 3L, 2L, 1L));
        (await TransitionsAsync("tag=eu")).Should().Equal(("1.0.0", 1L, 1L, 0L));
        (await TransitionsAsync("tag=pilot")).Should().Equal(await TransitionsAsync(""), "every device that tried 2.0.0 is a pilot");

        // Moving a device to other hardware moves its counts.
        (await admin.PatchAsJsonAsync($"/devices/{revB[1].Id}", new { hardware = "rev-C" })).EnsureSuccessStatusCode();
        (await VersionsAsync("hardware=rev-C")).Should().BeEquivalentTo(new Dictionary<string, (long, long)> { ["1.0.0"] = (1, 0), ["2.0.0"] = (1, 1) });
        (await (await admin.GetAsync("/firmware-versions?by=cpu")).ShouldBeValidationProblemAsync()).Should().ContainKey("by");
        (await (await admin.GetAsync("/devices?tag=a,b")).ShouldBeValidationProblemAsync()).Should().ContainKey("tag");
    }

    [Fact]
    public async Task Counts_by_hardware_stay_equal_to_a_recount_while_devices_report_and_change_hardware()
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var devices = new List<(long Id, HttpClient Client)>();
        for (var i = 0; i < 16; i++)
        {
            var (id, key) = await App.AddDeviceAsync(projectId: 1);
            devices.Add((id, App.ClientWithKey(key)));
        }

        var versions = new[] { "1.0.0", "1.1.0", "2.0.0" };
        var statuses = new[] { "installed", "updated", "failed", "rolled_back", "downloading" };
        var random = new Random(5);
        var reports = devices.Select(d => (d, Events: Enumerable.Range(0, 10)
            .Select(_ => Event(versions[random.Next(versions.Length)], statuses[random.Next(statuses.Length)], Start.AddMinutes(random.Next(600)))).ToList())).ToList();
        var changes = Enumerable.Range(0, 12).Select(i => (Ids: devices.OrderBy(_ => random.Next()).Take(5).Select(d => d.Id).ToArray(),
            Hardware: new[] { "rev-A", "rev-B", null }[i % 3])).ToList();

        await Task.WhenAll(reports.Select(async p =>
        {
            foreach (var e in p.Events)
            {
                (await p.d.Client.PostEventAsync(p.d.Id, e)).EnsureSuccessStatusCode();
            }
        }).Append(Task.Run(async () =>
        {
            foreach (var (ids, hardware) in changes)
            {
                var body = hardware is null ? (object)new { device_ids = ids, clear_hardware = true } : new { device_ids = ids, hardware };
                (await admin.PatchAsJsonAsync("/devices", body)).EnsureSuccessStatusCode();
            }
        })));

        await using var connection = App.OpenConnection();
        (await connection.QueryAsync<(string, string, long, long, long)>("""
            SELECT firmware, hardware, sum(devices)::bigint, sum(failed)::bigint, sum(rolled_back)::bigint
            FROM firmware_version_counts WHERE project_id = 1
            GROUP BY 1, 2 HAVING sum(devices) <> 0 OR sum(failed) <> 0 OR sum(rolled_back) <> 0 ORDER BY 1, 2
            """)).Should().Equal(await connection.QueryAsync<(string, string, long, long, long)>("""
            SELECT firmware, hardware, sum(devices)::bigint, sum(failed)::bigint, sum(rolled_back)::bigint FROM (
                SELECT current_firmware AS firmware, COALESCE(hardware, '') AS hardware, 1 AS devices, 0 AS failed, 0 AS rolled_back
                FROM devices WHERE project_id = 1 AND current_firmware IS NOT NULL
                UNION ALL
                SELECT s.firmware, COALESCE(d.hardware, ''), 0, (s.status = 'failed')::int, (s.status = 'rolled_back')::int
                FROM device_firmware_status AS s JOIN devices AS d ON d.project_id = s.project_id AND d.id = s.device_id
                WHERE s.project_id = 1
            ) AS x
            GROUP BY 1, 2 HAVING sum(devices) <> 0 OR sum(failed) <> 0 OR sum(rolled_back) <> 0 ORDER BY 1, 2
            """));
        (await connection.QueryAsync<(string, string, DateTime, long)>("""
            SELECT firmware, hardware, reported_hour, devices FROM firmware_silence_counts WHERE project_id = 1 AND devices <> 0 ORDER BY 1, 2, 3
            """)).Should().Equal(await connection.QueryAsync<(string, string, DateTime, long)>("""
            SELECT current_firmware, COALESCE(hardware, ''), date_trunc('hour', last_reported_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', count(*)
            FROM devices WHERE project_id = 1 AND last_event_status IN ('installed', 'updated') AND current_firmware IS NOT NULL
            GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
            """));
        (await connection.ExecuteScalarAsync<long>("SELECT count(DISTINCT hardware) FROM firmware_version_counts WHERE project_id = 1 AND devices <> 0"))
            .Should().BeGreaterThan(1, "the changes spread the devices over several hardware revisions");
        foreach (var (_, client) in devices)
        {
            client.Dispose();
        }
    }

    private static List<string> Tags(JsonElement device) => device.GetProperty("tags").EnumerateArray().Select(t => t.GetString()!).ToList();
}
