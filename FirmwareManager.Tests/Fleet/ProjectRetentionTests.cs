using System.Net;
using System.Net.Http.Json;
using System.Text;
using Dapper;
using FirmwareManager.Api.Firmware;
using FirmwareManager.Api.Upkeep;
using FirmwareManager.Tests.Infrastructure;

namespace FirmwareManager.Tests.Fleet;

/// <summary>A project's own event retention (<c>/project/retention</c>), applied by the upkeep job, and the audit log's.</summary>
public sealed class ProjectRetentionTests(FirmwareManagerApp app) : ApiTest(app)
{
    [Fact]
    public async Task An_admin_sets_and_clears_the_projects_retention_audited_and_every_member_reads_it()
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        using var viewer = App.ClientWithKey(FirmwareManagerApp.MemberKey2);

        var set = await admin.PutAsJsonAsync("/project/retention", new { max_age_days = 30 });
        set.StatusCode.Should().Be(HttpStatusCode.OK);
        var read = await (await viewer.GetAsync("/project/retention")).JsonAsync();
        read.GetProperty("max_age_days").GetInt32().Should().Be(30);
        read.GetProperty("effective_max_age_days").GetInt32().Should().Be(30, "the service sets none here");
        read.GetProperty("service_max_age_days").ValueKind.Should().Be(System.Text.Json.JsonValueKind.Null);
        (await admin.DeleteAsync("/project/retention")).StatusCode.Should().Be(HttpStatusCode.OK);
        (await (await viewer.GetAsync("/project/retention")).JsonAsync()).GetProperty("max_age_days").ValueKind
            .Should().Be(System.Text.Json.JsonValueKind.Null);

        var audit = await (await admin.GetAsync("/audit")).JsonAsync();
        audit.EnumerateArray().Where(e => e.GetProperty("action").GetString() == "project.retention_changed")
            .Select(e => e.GetProperty("details").ToString())
            .Should().Equal("""{"max_age_days":null,"max_age_days_before":30}""", """{"max_age_days":30,"max_age_days_before":null}""");
        // The other project's is its own.
        using var otherAdmin = App.ClientWithKey(FirmwareManagerApp.MemberKey3);
        (await (await otherAdmin.GetAsync("/project/retention")).JsonAsync()).GetProperty("max_age_days").ValueKind
            .Should().Be(System.Text.Json.JsonValueKind.Null);
    }

    [Theory]
    [InlineData("""{"max_age_days": 0}""")]
    [InlineData("""{"max_age_days": 36501}""")]
    [InlineData("""{"max_age_days": -5}""")]
    [InlineData("""{"max_age_days": "30"}""")]
    [InlineData("""{"max_age_days": 1.5}""")]
    [InlineData("""{"max_age_days": 99999999999}""")]
    [InlineData("""{"max_age_days": null}""")]
    [InlineData("""{}""")]
    [InlineData("""[30]""")]
    [InlineData("""{"max_age_days": 30, "max_age_days": 40}""")]
    [InlineData("""{"max_age_days": 30""")]
    public async Task A_bad_retention_is_400_and_changes_nothing(string body)
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);

        var response = await admin.PutAsync("/project/retention", new StringContent(body, Encoding.UTF8, "application/json"));

        await response.ShouldBeProblemAsync(HttpStatusCode.BadRequest);
        await using var connection = App.OpenConnection();
        (await connection.ExecuteScalarAsync<int?>("SELECT event_max_age_days FROM projects WHERE id = 1")).Should().BeNull();
        (await connection.ExecuteScalarAsync<long>("SELECT count(*) FROM audit_log WHERE action = 'project.retention_changed'")).Should().Be(0);
    }

    [Fact]
    public async Task A_viewer_or_a_device_may_not_change_it()
    {
        using var viewer = App.ClientWithKey(FirmwareManagerApp.MemberKey2);
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);

        (await viewer.PutAsJsonAsync("/project/retention", new { max_age_days = 1 })).StatusCode.Should().Be(HttpStatusCode.Forbidden);
        (await viewer.DeleteAsync("/project/retention")).StatusCode.Should().Be(HttpStatusCode.Forbidden);
        (await device.GetAsync("/project/retention")).StatusCode.Should().Be(HttpStatusCode.Forbidden);
    }

    [Fact]
    public async Task The_upkeep_job_deletes_only_that_projects_older_events_and_old_audit_entries()
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        using var device1 = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        await using var connection = App.OpenConnection();
        // The demo events are from 2023; device 1 reports one of today too.
        (await device1.PostEventAsync(1, new { firmware = "6.0.0", status = "downloading" })).StatusCode.Should().Be(HttpStatusCode.Created);
        var otherProjects = await connection.ExecuteScalarAsync<long>("SELECT count(*) FROM firmware_events WHERE project_id <> 1");
        otherProjects.Should().BeGreaterThan(0);
        var state = await PartitionTests.StateAsync(connection);
        (await admin.PutAsJsonAsync("/project/retention", new { max_age_days = 30 })).StatusCode.Should().Be(HttpStatusCode.OK);

        var settings = new RetentionOptions { AuditMaxAgeDays = 1 };
        await RunUpkeepAsync(settings, DateTime.UtcNow);

        (await connection.QueryAsync<string>("SELECT firmware FROM firmware_events WHERE project_id = 1")).Should().Equal("6.0.0");
        (await connection.ExecuteScalarAsync<long>("SELECT count(*) FROM firmware_events WHERE project_id <> 1")).Should().Be(otherProjects);
        (await PartitionTests.StateAsync(connection)).Should().Be(state);
        (await connection.ExecuteScalarAsync<long>("SELECT count(*) FROM audit_log")).Should().Be(1, "today's entry is younger than a day");

        await RunUpkeepAsync(settings, DateTime.UtcNow.AddDays(2));
        (await connection.ExecuteScalarAsync<long>("SELECT count(*) FROM audit_log")).Should().Be(0);
    }

    [Fact]
    public async Task The_upkeep_job_deletes_webhook_deliveries_finished_before_their_retention_and_never_a_pending_one()
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var created = await admin.PostAsJsonAsync("/webhooks", new { url = "http://127.0.0.1:1024/hook", events = new[] { "event.failed" } });
        created.StatusCode.Should().Be(HttpStatusCode.Created, await created.Content.ReadAsStringAsync());
        var webhookId = (await created.JsonAsync()).GetProperty("webhook").GetProperty("id").GetInt64();
        await using var connection = App.OpenConnection();
        var now = DateTime.UtcNow;
        // Event ids 1-6: delivered 40 and 10 days ago, given up 40 days ago, pending since 40 days ago (retried
        // ever since), redelivered and pending again, and a rollout's delivery (a negative id) delivered 40 days ago.
        await connection.ExecuteAsync("""
            INSERT INTO webhook_deliveries (project_id, webhook_id, event_id, device_id, event_type, created_at, next_attempt_at, delivered_at, given_up_at)
            VALUES (1, @WebhookId, 1, 1, 'event.failed', @Old, @Old, @Old, NULL),
                   (1, @WebhookId, 2, 1, 'event.failed', @Recent, @Recent, @Recent, NULL),
                   (1, @WebhookId, 3, 1, 'event.failed', @Old, @Old, NULL, @Old),
                   (1, @WebhookId, 4, 2, 'event.failed', @Old, @Now, NULL, NULL),
                   (1, @WebhookId, 5, 2, 'event.failed', @Old, @Now, NULL, NULL),
                   (1, @WebhookId, -1, 0, 'rollout.halted', @Old, @Old, @Old, NULL)
            """, new { WebhookId = webhookId, Old = now.AddDays(-40), Recent = now.AddDays(-10), Now = now });

        await RunUpkeepAsync(new RetentionOptions { WebhookDeliveriesMaxAgeDays = 30, BatchSize = 100 }, now);

        (await connection.QueryAsync<long>("SELECT event_id FROM webhook_deliveries ORDER BY event_id")).Should().Equal(2, 4, 5);
        var log = await (await admin.GetAsync($"/webhooks/{webhookId}/deliveries")).JsonAsync();
        log.GetArrayLength().Should().Be(3, "the delivery log shows what is kept");

        await RunUpkeepAsync(new RetentionOptions { WebhookDeliveriesMaxAgeDays = 30, BatchSize = 100 }, now.AddDays(25));
        (await connection.QueryAsync<long>("SELECT event_id FROM webhook_deliveries ORDER BY event_id")).Should().Equal(4, 5);
    }

    private async Task RunUpkeepAsync(RetentionOptions settings, DateTime nowUtc)
    {
        // The service's own job may hold the lock for its round at startup: try again until this round runs.
        var upkeep = PartitionTests.Upkeep(App.ConnectionString, settings);
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (!await upkeep.RunOnceAsync(settings, nowUtc, CancellationToken.None))
        {
            DateTime.UtcNow.Should().BeBefore(deadline);
            await Task.Delay(100);
        }
    }
}
