using System.Net;
using System.Net.Http.Json;
using Dapper;
using FirmwareManager.Api.Commands;
using FirmwareManager.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;

namespace FirmwareManager.Tests.Provisioning;

/// <summary>
/// What the key cache only approximates is re-checked in each change's transaction; a project cannot lock itself
/// out; and a deadlock with a session the service does not control is retried, never a 500.
/// </summary>
public sealed class RecheckAndLockoutTests(FirmwareManagerApp app) : ApiTest(app)
{
    private async Task<long> CountAsync(string table)
    {
        await using var connection = App.OpenConnection();
        return await connection.ExecuteScalarAsync<long>($"SELECT count(*) FROM {table}");
    }

    private async Task ExecuteAsync(string sql, object? parameters = null)
    {
        await using var connection = App.OpenConnection();
        await connection.ExecuteAsync(sql, parameters);
    }

    [Fact]
    public async Task The_last_admin_cannot_revoke_their_own_last_key_and_the_key_keeps_working()
    {
        using var admin3 = App.ClientWithKey(FirmwareManagerApp.MemberKey3);
        var keyId = (await (await admin3.GetAsync("/me/keys")).JsonAsync())[0].GetProperty("id").GetInt64();

        var problem = await (await admin3.DeleteAsync($"/me/keys/{keyId}")).ShouldBeProblemAsync(HttpStatusCode.Conflict);
        await (await admin3.DeleteAsync($"/members/3/keys/{keyId}")).ShouldBeProblemAsync(HttpStatusCode.Conflict);

        problem.GetProperty("detail").GetString().Should().Contain("last active key");
        (await admin3.GetAsync("/me")).StatusCode.Should().Be(HttpStatusCode.OK);
        // With a second key issued first, the old one may go.
        var second = (await (await admin3.PostAsync("/me/keys", null)).JsonAsync()).GetProperty("key").GetString()!;
        (await admin3.DeleteAsync($"/me/keys/{keyId}")).StatusCode.Should().Be(HttpStatusCode.NoContent);
        using var rotated = App.ClientWithKey(second);
        (await rotated.GetAsync("/me")).StatusCode.Should().Be(HttpStatusCode.OK);
    }

    [Fact]
    public async Task Removing_the_only_admin_who_has_a_key_is_409_even_when_another_admin_remains()
    {
        using var admin1 = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var other = await (await admin1.PostAsJsonAsync("/members", new { email = "second@project-1.example", role = "admin" })).JsonAsync();
        var otherId = other.GetProperty("member").GetProperty("id").GetInt64();
        var otherKeyId = other.GetProperty("key").GetProperty("id").GetInt64();
        (await admin1.DeleteAsync($"/members/{otherId}/keys/{otherKeyId}")).StatusCode.Should().Be(HttpStatusCode.NoContent);

        // Member 1 is the only admin with a key: removing them would leave an admin no one can act as.
        using var otherAdmin = App.ClientWithKey(other.GetProperty("key").GetProperty("key").GetString()!);
        await (await admin1.DeleteAsync("/members/1")).ShouldBeProblemAsync(HttpStatusCode.Conflict);
        (await admin1.GetAsync("/me")).StatusCode.Should().Be(HttpStatusCode.OK);
    }

    [Fact]
    public async Task A_project_whose_admins_lost_every_key_is_recovered_by_the_issue_admin_key_command()
    {
        // Keys revoked behind the service's back (as by hand in the database): the API cannot issue an admin key now.
        await ExecuteAsync("UPDATE membership_api_keys SET revoked_at = now() WHERE membership_id = 3");
        App.Services.GetRequiredService<FirmwareManager.Api.Auth.KeyCache>().ForgetAll();

        var issued = await IssueAdminKey.IssueAsync(App.ConnectionString, "project_2", "Ops@Project-2.example", CancellationToken.None);

        issued.Should().NotBeNull();
        issued!.Value.Admin.Role.Should().Be("admin");
        using var recovered = App.ClientWithKey(issued.Value.Key.Key);
        (await (await recovered.GetAsync("/me")).JsonAsync()).GetProperty("email").GetString().Should().Be("ops@project-2.example");
        var audit = await (await recovered.GetAsync("/audit?limit=2")).JsonAsync();
        audit.EnumerateArray().Select(e => (e.GetProperty("action").GetString(), e.GetProperty("actor_kind").GetString()))
            .Should().Equal(("key.created", "cli"), ("member.admin_recovered", "cli"));
        (await IssueAdminKey.IssueAsync(App.ConnectionString, "no_such_project", "x@y.example", CancellationToken.None)).Should().BeNull();
        (await CommandLine.RunAsync(["issue-admin-key", "project_2"], TextWriter.Null, TextWriter.Null)).Should().Be(CommandLine.Usage, "wrong arguments print the usage");
    }

    [Fact]
    public async Task A_removed_admin_whose_key_is_still_cached_cannot_change_anything_after_the_removal_commits()
    {
        using var admin1 = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        (await admin1.GetAsync("/me")).StatusCode.Should().Be(HttpStatusCode.OK, "the key is now cached on this instance");
        // Removed by another instance: this one's cache still holds the key for up to 4 s.
        var second = await (await admin1.PostAsJsonAsync("/members", new { email = "second@project-1.example", role = "admin" })).JsonAsync();
        await ExecuteAsync("UPDATE project_memberships SET removed_at = now() WHERE id = 1");
        var devices = await CountAsync("devices");
        var members = await CountAsync("project_memberships");
        var audit = await CountAsync("audit_log");

        await (await admin1.PostAsJsonAsync("/devices", new { name = "ghost" })).ShouldBeProblemAsync(HttpStatusCode.Unauthorized);
        await (await admin1.PostAsJsonAsync("/devices/bulk", new { count = 3 })).ShouldBeProblemAsync(HttpStatusCode.Unauthorized);
        await (await admin1.PostAsJsonAsync("/members", new { email = "ghost@project-1.example", role = "admin" })).ShouldBeProblemAsync(HttpStatusCode.Unauthorized);
        await (await admin1.PostAsync("/devices/1/keys", null)).ShouldBeProblemAsync(HttpStatusCode.Unauthorized);
        await (await admin1.DeleteAsync("/devices/1/keys/1")).ShouldBeProblemAsync(HttpStatusCode.Unauthorized);
        await (await admin1.DeleteAsync("/devices/2")).ShouldBeProblemAsync(HttpStatusCode.Unauthorized);
        await (await admin1.DeleteAsync($"/members/{second.GetProperty("member").GetProperty("id").GetInt64()}")).ShouldBeProblemAsync(HttpStatusCode.Unauthorized);
        await (await admin1.PostAsync("/me/keys", null)).ShouldBeProblemAsync(HttpStatusCode.Unauthorized);

        (await CountAsync("devices")).Should().Be(devices);
        (await CountAsync("project_memberships")).Should().Be(members);
        (await CountAsync("audit_log")).Should().Be(audit, "nothing was changed, so nothing was audited");
        await using var connection = App.OpenConnection();
        (await connection.ExecuteScalarAsync<bool>("SELECT revoked_at IS NULL FROM device_api_keys WHERE id = 1")).Should().BeTrue();
        (await connection.ExecuteScalarAsync<bool>("SELECT decommissioned_at IS NULL FROM devices WHERE id = 2")).Should().BeTrue();
    }

    [Fact]
    public async Task A_viewer_demoted_from_admin_behind_the_cache_may_no_longer_manage()
    {
        using var admin1 = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        (await admin1.GetAsync("/me")).StatusCode.Should().Be(HttpStatusCode.OK);
        await ExecuteAsync("UPDATE project_memberships SET role = 'viewer' WHERE id = 1");

        await (await admin1.PostAsJsonAsync("/devices", new { name = "ghost" })).ShouldBeProblemAsync(HttpStatusCode.Unauthorized);
        (await admin1.PostAsync("/me/keys", null)).StatusCode.Should().Be(HttpStatusCode.Created, "a viewer may still manage their own keys");
    }

    [Fact]
    public async Task A_deadlock_with_a_session_the_service_does_not_control_is_retried_not_a_500()
    {
        // An operator's session locks device 2's key, then its device: the opposite of a decommission's order.
        await using var session = App.OpenConnection();
        await using var transaction = await session.BeginTransactionAsync();
        await session.ExecuteAsync("UPDATE device_api_keys SET last_used_at = now() WHERE device_id = 2", transaction: transaction);

        using var admin1 = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var decommission = admin1.DeleteAsync("/devices/2");
        await App.WaitUntilASessionWaitsForALockAsync();

        // The decommission now holds device 2 and waits for its key; this waits for device 2: a deadlock, which
        // PostgreSQL breaks after deadlock_timeout (1 s) by aborting one of the two.
        try
        {
            await session.ExecuteAsync("UPDATE devices SET name = name WHERE id = 2", transaction: transaction);
            await transaction.CommitAsync();
        }
        catch (Npgsql.PostgresException e) when (e.SqlState == Npgsql.PostgresErrorCodes.DeadlockDetected)
        {
            await transaction.RollbackAsync();
        }

        using var answer = await decommission;
        // Whichever of the two PostgreSQL aborted, the decommission went through: on a second try when it was the one.
        answer.StatusCode.Should().Be(HttpStatusCode.NoContent, await answer.Content.ReadAsStringAsync());
        await using var connection = App.OpenConnection();
        (await connection.ExecuteScalarAsync<bool>("SELECT decommissioned_at IS NOT NULL FROM devices WHERE id = 2")).Should().BeTrue();
    }
}
