using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Dapper;
using FirmwareManager.Tests.Infrastructure;
using static FirmwareManager.Tests.Firmware.PagingHistoryTests;

namespace FirmwareManager.Tests.Rollouts;

/// <summary>Rollouts: declared by admins, counted by ingest, halted once over their threshold, pushed to webhooks.</summary>
public sealed class RolloutTests(FirmwareManagerApp app) : ApiTest(app)
{
    // Device clocks after the rollouts below are declared (now), so their reports count.
    private static readonly DateTime Later = DateTime.UtcNow.AddMinutes(1);

    [Fact]
    public async Task A_rollout_counts_its_audiences_reports_and_halts_once_over_its_threshold()
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var audience = await DevicesAsync(6, "1.0.0", "rev-B");
        var otherHardware = await DevicesAsync(2, "1.0.0", "rev-C");
        var otherVersion = await DevicesAsync(1, "1.5.0", "rev-B");
        // Reported before the rollout was declared (by the device's clock): not the rollout's.
        await audience[5].ReportAsync(Event("2.0.0", "failed", DateTime.UtcNow.AddDays(-1)));

        var id = await DeclareAsync(new { firmware = "2.0.0", hardware = "rev-B", from_firmware = "1.0.0", max_failure_rate = 0.25, min_devices = 4 });

        for (var i = 0; i < 3; i++)
        {
            await audience[i].ReportAsync(Event("2.0.0", "installing", Later), Event("2.0.0", "updated", Later.AddMinutes(1)));
        }

        await audience[3].ReportAsync(new { firmware = "2.0.0", status = "failed", timestamp = At(Later), error_code = "E_SIG" });
        foreach (var device in otherHardware.Concat(otherVersion))
        {
            await device.ReportAsync(Event("2.0.0", "failed", Later));
        }

        var active = await RolloutAsync(id);
        Figures(active).Should().Be((6, 4, 3, 1, 0, 0, 2, 0));
        active.GetProperty("state").GetString().Should().Be("active", "1 of 4 is a rate of 0.25, not above it");
        active.GetProperty("failure_rate").GetDouble().Should().Be(0.25);

        await audience[4].ReportAsync(Event("2.0.0", "downloading", Later), Event("2.0.0", "failed", Later.AddMinutes(1)));

        var halted = await RolloutAsync(id);
        halted.GetProperty("state").GetString().Should().Be("halted");
        halted.GetProperty("halted_at").GetString().Should().NotBeNull();
        Figures(halted).Should().Be((6, 5, 3, 2, 0, 0, 1, 0));

        // A rollback is the update's outcome too: it names the version gone back to.
        await audience[0].ReportAsync(new { firmware = "1.0.0", status = "rolled_back", timestamp = At(Later.AddMinutes(5)), from_firmware = "2.0.0" });
        Figures(await RolloutAsync(id)).Should().Be((6, 5, 2, 2, 1, 0, 1, 0));

        var ended = await admin.PostAsync($"/rollouts/{id}/end", null);
        (await ended.JsonAsync()).GetProperty("state").GetString().Should().Be("completed");
        await audience[5].ReportAsync(Event("2.0.0", "updated", Later.AddMinutes(10)));
        (await RolloutAsync(id)).GetProperty("updated").GetInt64().Should().Be(2, "an ended rollout counts nothing more");
        await (await admin.PostAsync($"/rollouts/{id}/end", null)).ShouldBeProblemAsync(HttpStatusCode.NotFound);
    }

    [Fact]
    public async Task A_rollout_whose_every_eligible_device_updated_is_completed()
    {
        var devices = await DevicesAsync(2, "1.0.0", null, "pilot");
        await DevicesAsync(1, "1.0.0", null);
        var id = await DeclareAsync(new { firmware = "1.1.0", tags = new[] { "pilot" }, max_failure_rate = 0.5, min_devices = 1 });

        await devices[0].ReportAsync(Event("1.1.0", "updated", Later));
        (await RolloutAsync(id)).GetProperty("state").GetString().Should().Be("active");
        await devices[1].ReportAsync(Event("1.1.0", "updated", Later));

        var rollout = await RolloutAsync(id);
        rollout.GetProperty("state").GetString().Should().Be("completed");
        rollout.GetProperty("eligible").GetInt64().Should().Be(2);
    }

    [Fact]
    public async Task A_halt_is_pushed_once_to_webhooks_that_subscribe_to_it()
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var webhook = await (await admin.PostAsJsonAsync("/webhooks", new { url = "http://127.0.0.1:1024/hook", events = new[] { "rollout.halted" } })).JsonAsync();
        var webhookId = webhook.GetProperty("webhook").GetProperty("id").GetInt64();
        var devices = await DevicesAsync(3, "1.0.0", null);
        var id = await DeclareAsync(new { firmware = "2.0.0", max_failure_rate = 0.1, min_devices = 2 });

        foreach (var device in devices)
        {
            await device.ReportAsync(Event("2.0.0", "failed", Later));
        }

        var deliveries = (await (await admin.GetAsync($"/webhooks/{webhookId}/deliveries")).JsonAsync()).EnumerateArray().ToList();
        deliveries.Select(d => (d.GetProperty("type").GetString(), d.GetProperty("event_id").GetInt64(), d.GetProperty("id").GetString()))
            .Should().Equal(("rollout.halted", -id, $"{webhookId}--{id}"));

        // Every id the list shows can be redelivered, the halt's too.
        var redelivered = await admin.PostAsync($"/webhooks/{webhookId}/deliveries/{webhookId}--{id}/redeliver", null);
        redelivered.StatusCode.Should().Be(HttpStatusCode.Accepted, await redelivered.Content.ReadAsStringAsync());
        (await redelivered.JsonAsync()).GetProperty("id").GetString().Should().Be($"{webhookId}--{id}");
        foreach (var wrong in new[] { $"{webhookId}---{id}", $"{webhookId}--0", $"{webhookId}-", $"{webhookId + 1}--{id}", $"{webhookId}--{id}-1" })
        {
            (await (await admin.PostAsync($"/webhooks/{webhookId}/deliveries/{wrong}/redeliver", null)).ShouldBeValidationProblemAsync())
                .Should().ContainKey("delivery_id", wrong);
        }

        await (await admin.PostAsync($"/webhooks/{webhookId}/deliveries/{webhookId}--{id + 1}/redeliver", null)).ShouldBeProblemAsync(HttpStatusCode.NotFound);
    }

    [Theory]
    [InlineData("""{"max_failure_rate":0.05,"min_devices":50}""", "firmware")]
    [InlineData("""{"firmware":"v2","max_failure_rate":0.05,"min_devices":50}""", "firmware")]
    [InlineData("""{"firmware":"2.0.0","from_firmware":"1","max_failure_rate":0.05,"min_devices":50}""", "from_firmware")]
    [InlineData("""{"firmware":"2.0.0","max_failure_rate":1.5,"min_devices":50}""", "max_failure_rate")]
    [InlineData("""{"firmware":"2.0.0","max_failure_rate":0.123456,"min_devices":50}""", "max_failure_rate")]
    [InlineData("""{"firmware":"2.0.0","max_failure_rate":"0.05","min_devices":50}""", "max_failure_rate")]
    [InlineData("""{"firmware":"2.0.0","min_devices":50}""", "max_failure_rate")]
    [InlineData("""{"firmware":"2.0.0","max_failure_rate":0.05,"min_devices":0}""", "min_devices")]
    [InlineData("""{"firmware":"2.0.0","max_failure_rate":0.05,"min_devices":2.5}""", "min_devices")]
    [InlineData("""{"firmware":"2.0.0","max_failure_rate":0.05,"min_devices":50,"hardware":"rev B"}""", "hardware")]
    [InlineData("""{"firmware":"2.0.0","max_failure_rate":0.05,"min_devices":50,"tags":["a b"]}""", "tags")]
    public async Task A_bad_rollout_is_400_naming_the_field_and_declares_nothing(string body, string field)
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);

        (await (await admin.PostRawAsync("/rollouts", body)).ShouldBeValidationProblemAsync()).Should().ContainKey(field);
        (await (await admin.GetAsync("/rollouts")).JsonAsync()).GetArrayLength().Should().Be(0);
    }

    [Fact]
    public async Task Viewers_read_rollouts_and_only_admins_declare_or_end_them()
    {
        var id = await DeclareAsync(new { firmware = "2.0.0", max_failure_rate = 0.05, min_devices = 50 });
        using var viewer = App.ClientWithKey(FirmwareManagerApp.MemberKey2);
        using var otherProject = App.ClientWithKey(FirmwareManagerApp.MemberKey3);

        (await viewer.GetAsync($"/rollouts/{id}")).StatusCode.Should().Be(HttpStatusCode.OK);
        (await (await viewer.GetAsync("/rollouts")).JsonAsync()).GetArrayLength().Should().Be(1);
        await (await viewer.PostAsJsonAsync("/rollouts", new { firmware = "2.0.0", max_failure_rate = 0.05, min_devices = 5 })).ShouldBeProblemAsync(HttpStatusCode.Forbidden);
        await (await viewer.PostAsync($"/rollouts/{id}/end", null)).ShouldBeProblemAsync(HttpStatusCode.Forbidden);
        await (await otherProject.GetAsync($"/rollouts/{id}")).ShouldBeProblemAsync(HttpStatusCode.NotFound);
    }

    [Fact]
    public async Task Rollout_counts_stay_equal_to_a_recount_under_concurrent_reports()
    {
        var devices = await DevicesAsync(20, "1.0.0", "rev-B");
        var id = await DeclareAsync(new { firmware = "2.0.0", hardware = "rev-B", from_firmware = "1.0.0", max_failure_rate = 0.9, min_devices = 100 });
        var statuses = new[] { "downloading", "installing", "installed", "updated", "failed" };
        var random = new Random(3);
        var plans = devices.Select(d => (d, Events: Enumerable.Range(0, 8).Select(_ => (object)new
        {
            firmware = "2.0.0",
            status = statuses[random.Next(statuses.Length)],
            timestamp = At(Later.AddSeconds(random.Next(600))),
            from_firmware = "1.0.0",
        }).ToList())).ToList();

        await Task.WhenAll(plans.Select(async p =>
        {
            foreach (var e in p.Events.Take(4))
            {
                (await p.d.Client.PostEventAsync(p.d.Id, e)).EnsureSuccessStatusCode();
            }

            (await p.d.Client.PostAsJsonAsync($"/firmware/{p.d.Id}/batch", p.Events.Skip(4))).EnsureSuccessStatusCode();
        }));

        await using var connection = App.OpenConnection();
        var ids = devices.Select(d => d.Id).ToArray();
        (await connection.QueryAsync<(long, string)>(
            "SELECT device_id, status FROM rollout_devices WHERE project_id = 1 AND rollout_id = @id ORDER BY 1", new { id }))
            .Should().Equal(await connection.QueryAsync<(long, string)>("""
                SELECT DISTINCT ON (device_id) device_id, status FROM firmware_events
                WHERE project_id = 1 AND device_id = ANY(@ids) AND firmware = '2.0.0'
                ORDER BY device_id, LEAST(occurred_at, received_at) DESC, id DESC
                """, new { ids }));
        (await connection.QuerySingleAsync<(long, long, long, long)>(
            "SELECT attempted, updated, failed, rolled_back FROM rollouts WHERE project_id = 1 AND id = @id", new { id }))
            .Should().Be(await connection.QuerySingleAsync<(long, long, long, long)>("""
                SELECT count(*), count(*) FILTER (WHERE status IN ('installed', 'updated')), count(*) FILTER (WHERE status = 'failed'),
                       count(*) FILTER (WHERE status = 'rolled_back')
                FROM rollout_devices WHERE project_id = 1 AND rollout_id = @id
                """, new { id }));
        foreach (var (_, client) in devices)
        {
            client.Dispose();
        }
    }

    private async Task<long> DeclareAsync(object rollout)
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var response = await admin.PostAsJsonAsync("/rollouts", rollout);
        response.StatusCode.Should().Be(HttpStatusCode.Created, await response.Content.ReadAsStringAsync());
        return (await response.JsonAsync()).GetProperty("id").GetInt64();
    }

    private async Task<JsonElement> RolloutAsync(long id)
    {
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey2);
        return await (await member.GetAsync($"/rollouts/{id}")).JsonAsync();
    }

    // Devices of project 1 running a version before any rollout, with a hardware revision and tags.
    private async Task<List<(long Id, HttpClient Client)>> DevicesAsync(int count, string version, string? hardware, params string[] tags)
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var devices = new List<(long Id, HttpClient Client)>();
        for (var i = 0; i < count; i++)
        {
            devices.Add(await App.DeviceRunningAsync(version, DateTime.UtcNow.AddDays(-2)));
        }

        if (hardware is not null || tags.Length > 0)
        {
            (await admin.PatchAsJsonAsync("/devices", new { device_ids = devices.Select(d => d.Id), hardware, tags })).EnsureSuccessStatusCode();
        }

        return devices;
    }

    private static (long Eligible, long Attempted, long Updated, long Failed, long RolledBack, long InProgress, long Pending, long Silent) Figures(JsonElement r) => (
        r.GetProperty("eligible").GetInt64(), r.GetProperty("attempted").GetInt64(), r.GetProperty("updated").GetInt64(),
        r.GetProperty("failed").GetInt64(), r.GetProperty("rolled_back").GetInt64(), r.GetProperty("in_progress").GetInt64(),
        r.GetProperty("pending").GetInt64(), r.GetProperty("silent").GetInt64());

    private static string At(DateTime time) => time.ToString("yyyy-MM-dd'T'HH:mm:ss.ffffff'Z'", System.Globalization.CultureInfo.InvariantCulture);
}
