using System.Net;
using System.Net.Http.Json;
using Dapper;
using FirmwareManager.Tests.Infrastructure;

namespace FirmwareManager.Tests.Hardening;

/// <summary>
/// Every fan-out a project controls has a limit (README, "Limits"): keys per owner, members and open rollouts per
/// project and per version, and the lists that would otherwise grow for ever show a bounded number of rows.
/// </summary>
public sealed class FanOutLimitsTests(FirmwareManagerApp app) : ApiTest(app)
{
    [Fact]
    public async Task A_device_holds_at_most_ten_active_keys_and_its_key_list_shows_them_and_the_twenty_last_revoked()
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var issued = new List<long>();
        for (var i = 0; i < 9; i++)
        {
            var key = await admin.PostAsync("/devices/1/keys", null);
            key.StatusCode.Should().Be(HttpStatusCode.Created);
            issued.Add((await key.JsonAsync()).GetProperty("id").GetInt64());
        }

        var refused = await admin.PostAsync("/devices/1/keys", null);
        (await refused.ShouldBeProblemAsync(HttpStatusCode.Conflict)).GetProperty("detail").GetString().Should().Contain("10 active keys");

        // Rotating for ever: revoke one, issue one, 25 times; the list keeps the 10 active and the 20 last revoked.
        for (var i = 0; i < 25; i++)
        {
            (await admin.DeleteAsync($"/devices/1/keys/{issued[^1]}")).StatusCode.Should().Be(HttpStatusCode.NoContent);
            issued.RemoveAt(issued.Count - 1);
            var key = await admin.PostAsync("/devices/1/keys", null);
            key.StatusCode.Should().Be(HttpStatusCode.Created);
            issued.Add((await key.JsonAsync()).GetProperty("id").GetInt64());
        }

        var list = (await (await admin.GetAsync("/devices/1/keys")).JsonAsync()).EnumerateArray().ToList();
        list.Count(k => k.GetProperty("revoked_at").ValueKind == System.Text.Json.JsonValueKind.Null).Should().Be(10);
        list.Count(k => k.GetProperty("revoked_at").ValueKind != System.Text.Json.JsonValueKind.Null).Should().Be(20);
        list.Select(k => k.GetProperty("id").GetInt64()).Should().BeInAscendingOrder();
    }

    [Fact]
    public async Task A_project_has_at_most_a_thousand_active_members()
    {
        await using (var connection = App.OpenConnection())
        {
            // Project 1 has two members: 997 more make 999.
            await connection.ExecuteAsync("""
                INSERT INTO project_memberships (project_id, email, role)
                SELECT 1, 'member-' || g || '@limits.example', 'viewer'
                FROM generate_series(1, 997) AS g
                """);
        }

        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        (await admin.PostAsJsonAsync("/members", new { email = "the-thousandth@limits.example", role = "viewer" })).StatusCode.Should().Be(HttpStatusCode.Created);
        var refused = await admin.PostAsJsonAsync("/members", new { email = "one-too-many@limits.example", role = "viewer" });
        (await refused.ShouldBeProblemAsync(HttpStatusCode.Conflict)).GetProperty("detail").GetString().Should().Contain("1000 active members");
        (await (await admin.GetAsync("/members")).JsonAsync()).GetArrayLength().Should().Be(1000);
    }

    [Fact]
    public async Task Open_rollouts_are_limited_per_version_and_per_project_and_ended_ones_do_not_count()
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var ids = new List<long>();
        for (var i = 0; i < 10; i++)
        {
            var created = await admin.PostAsJsonAsync("/rollouts", new { firmware = "3.0.0", tags = new[] { $"wave-{i}" }, max_failure_rate = 0.1, min_devices = 1 });
            created.StatusCode.Should().Be(HttpStatusCode.Created);
            ids.Add((await created.JsonAsync()).GetProperty("id").GetInt64());
        }

        var refused = await admin.PostAsJsonAsync("/rollouts", new { firmware = "3.0.0", max_failure_rate = 0.1, min_devices = 1 });
        (await refused.ShouldBeProblemAsync(HttpStatusCode.Conflict)).GetProperty("detail").GetString().Should().Contain("10 open rollouts");
        (await admin.PostAsync($"/rollouts/{ids[0]}/end", null)).StatusCode.Should().Be(HttpStatusCode.OK);
        (await admin.PostAsJsonAsync("/rollouts", new { firmware = "3.0.0", max_failure_rate = 0.1, min_devices = 1 })).StatusCode.Should().Be(HttpStatusCode.Created);

        await using (var connection = App.OpenConnection())
        {
            // 100 open in all: 10 of 3.0.0 and 90 of other versions.
            await connection.ExecuteAsync("""
                INSERT INTO rollouts (project_id, firmware, max_failure_rate, min_devices, created_at)
                SELECT 1, '4.' || g || '.0', 0.1, 1, now()
                FROM generate_series(1, 90) AS g
                """);
        }

        var tooMany = await admin.PostAsJsonAsync("/rollouts", new { firmware = "5.0.0", max_failure_rate = 0.1, min_devices = 1 });
        (await tooMany.ShouldBeProblemAsync(HttpStatusCode.Conflict)).GetProperty("detail").GetString().Should().Contain("100 open rollouts");
    }

    [Fact]
    public async Task A_page_of_many_rollouts_gives_each_the_figures_it_has_on_its_own()
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        (await admin.PatchAsJsonAsync("/devices", new { device_ids = new[] { 1, 2 }, hardware = "rev-B", add_tags = new[] { "pilot" } })).EnsureSuccessStatusCode();
        var audiences = new object[]
        {
            new { firmware = "2.0.0", max_failure_rate = 0.5, min_devices = 1 },
            new { firmware = "2.0.0", hardware = "rev-B", max_failure_rate = 0.5, min_devices = 1 },
            new { firmware = "2.0.0", tags = new[] { "pilot" }, max_failure_rate = 0.5, min_devices = 1 },
            new { firmware = "2.1.0", from_firmware = "1.0.1", max_failure_rate = 0.5, min_devices = 1 },
            new { firmware = "2.1.0", hardware = "rev-C", max_failure_rate = 0.5, min_devices = 1 },
            new { firmware = "2.2.0", tags = new[] { "pilot", "eu" }, max_failure_rate = 0.5, min_devices = 1 },
        };
        foreach (var audience in audiences)
        {
            (await admin.PostAsJsonAsync("/rollouts", audience)).StatusCode.Should().Be(HttpStatusCode.Created);
        }

        using (var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey2))
        {
            (await device.PostAsJsonAsync("/firmware/2", new { firmware = "2.1.0", status = "updated" })).EnsureSuccessStatusCode();
        }

        var page = (await (await admin.GetAsync("/rollouts?limit=1000")).JsonAsync()).EnumerateArray().ToList();
        page.Should().HaveCount(audiences.Length);
        foreach (var rollout in page)
        {
            var alone = await (await admin.GetAsync($"/rollouts/{rollout.GetProperty("id").GetInt64()}")).JsonAsync();
            rollout.GetRawText().Should().Be(alone.GetRawText());
        }

        page.Select(r => r.GetProperty("eligible").GetInt64()).Reverse().Should().Equal(new[] { 2L, 2L, 2L, 1L, 0L, 0L },
            "devices 1 and 2 of project 1; rev-B and pilot are both; one came from 1.0.1 (and has moved on); none is rev-C or in eu");
    }
}
