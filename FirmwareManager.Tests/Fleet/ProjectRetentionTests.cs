using System.Net;
using System.Net.Http.Json;
using System.Text;
using Dapper;
using FirmwareManager.Api.Firmware;
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
