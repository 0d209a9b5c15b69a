using System.Net;
using System.Net.Http.Json;
using Dapper;
using FirmwareManager.Api.Commands;
using FirmwareManager.Tests.Infrastructure;
using Microsoft.AspNetCore.Hosting;
using Npgsql;

namespace FirmwareManager.Tests.Provisioning;

/// <summary>A new operator's path: an empty database, the bootstrap command, then everything through the API.</summary>
public sealed class ProvisioningFlowTests
{
    [Fact]
    public async Task From_an_empty_database_to_enrolled_devices_reporting_with_rotated_and_revoked_keys()
    {
        var connectionString = await (await PostgresServer.SharedAsync()).CreateDatabaseAsync();
        var created = await CreateProject.CreateProjectAsync(connectionString, "acme", "Ops@Acme.example", CancellationToken.None);
        created.Should().NotBeNull();
        var adminKey = created!.Value.Key.Key;
        adminKey.Should().StartWith("fmm_").And.HaveLength(47);
        (await CreateProject.CreateProjectAsync(connectionString, "acme", "other@acme.example", CancellationToken.None)).Should().BeNull();

        var logs = new CapturedLogs();
        await using var service = new ServiceOnDatabase(connectionString).WithWebHostBuilder(b => b
            .UseSetting("FirmwareManager:KeyUsageFlushSeconds", "1")
            .ConfigureServices(s => Microsoft.Extensions.DependencyInjection.ServiceCollectionServiceExtensions.AddSingleton<Serilog.Core.ILogEventSink>(s, logs)));
        using var admin = Client(service, adminKey);
        var responses = new List<string>();
        async Task<HttpResponseMessage> Keep(Task<HttpResponseMessage> call)
        {
            var response = await call;
            responses.Add(await response.Content.ReadAsStringAsync());
            return response;
        }

        // The admin enrolls a device and it reports.
        var device = await (await Keep(admin.PostAsJsonAsync("/devices", new { name = "pump 7", serial = "SN-0007" }))).JsonAsync();
        var deviceId = device.GetProperty("device").GetProperty("id").GetInt64();
        var firstKey = device.GetProperty("key").GetProperty("key").GetString()!;
        var firstKeyId = device.GetProperty("key").GetProperty("id").GetInt64();
        firstKey.Should().StartWith("fmd_").And.HaveLength(47);
        device.GetProperty("key").GetProperty("prefix").GetString().Should().Be(firstKey[..12]);
        using (var reporter = Client(service, firstKey))
        {
            (await reporter.PostEventAsync(deviceId, new { firmware = "1.0.0", status = "installed" })).StatusCode.Should().Be(HttpStatusCode.Created);
        }

        // A viewer is invited and reads, and may not manage.
        var invited = await (await Keep(admin.PostAsJsonAsync("/members", new { email = "viewer@acme.example", role = "viewer" }))).JsonAsync();
        var viewerKey = invited.GetProperty("key").GetProperty("key").GetString()!;
        using var viewer = Client(service, viewerKey);
        (await (await viewer.GetAsync($"/firmware/{deviceId}")).JsonAsync()).GetArrayLength().Should().Be(1);
        await (await viewer.PostAsJsonAsync("/devices", new { name = "x" })).ShouldBeProblemAsync(HttpStatusCode.Forbidden);

        // Rotation: a second key; both work until the first is revoked.
        var second = await (await Keep(admin.PostAsync($"/devices/{deviceId}/keys", null))).JsonAsync();
        var secondKey = second.GetProperty("key").GetString()!;
        using var oldKey = Client(service, firstKey);
        using var newKey = Client(service, secondKey);
        (await oldKey.PostEventAsync(deviceId, new { firmware = "1.1.0", status = "downloading" })).StatusCode.Should().Be(HttpStatusCode.Created);
        (await newKey.PostEventAsync(deviceId, new { firmware = "1.1.0", status = "installing" })).StatusCode.Should().Be(HttpStatusCode.Created);
        (await admin.DeleteAsync($"/devices/{deviceId}/keys/{firstKeyId}")).StatusCode.Should().Be(HttpStatusCode.NoContent);
        await (await oldKey.PostEventAsync(deviceId, new { firmware = "1.1.0", status = "updated" })).ShouldBeProblemAsync(HttpStatusCode.Unauthorized);
        (await newKey.PostEventAsync(deviceId, new { firmware = "1.1.0", status = "updated" })).StatusCode.Should().Be(HttpStatusCode.Created);

        // Key use is written in the background, here every second.
        var keys = await (await Keep(admin.GetAsync($"/devices/{deviceId}/keys"))).JsonAsync();
        for (var wait = 0; keys[0].GetProperty("last_used_at").ValueKind == System.Text.Json.JsonValueKind.Null && wait < 100; wait++)
        {
            await Task.Delay(100);
            keys = await (await Keep(admin.GetAsync($"/devices/{deviceId}/keys"))).JsonAsync();
        }

        keys.EnumerateArray().Select(k => string.Join(',', k.EnumerateObject().Select(p => p.Name))).Should()
            .AllBe("id,prefix,created_at,last_used_at,revoked_at");
        keys.EnumerateArray().Select(k => k.GetProperty("revoked_at").ValueKind == System.Text.Json.JsonValueKind.Null).Should().Equal(false, true);
        keys[0].GetProperty("last_used_at").GetString().Should().NotBeNull("the key was used");

        // Decommission: keys stop working, history stays readable.
        (await admin.DeleteAsync($"/devices/{deviceId}")).StatusCode.Should().Be(HttpStatusCode.NoContent);
        await (await newKey.GetAsync($"/firmware/{deviceId}")).ShouldBeProblemAsync(HttpStatusCode.Unauthorized);
        (await (await viewer.GetAsync($"/firmware/{deviceId}")).JsonAsync()).GetArrayLength().Should().Be(4);
        (await (await admin.GetAsync($"/devices/{deviceId}")).JsonAsync()).GetProperty("decommissioned_at").GetString().Should().NotBeNull();
        await (await admin.PostAsync($"/devices/{deviceId}/keys", null)).ShouldBeProblemAsync(HttpStatusCode.NotFound);

        // The viewer rotates their own key, then is removed: every key of theirs stops working.
        var viewerSecond = (await (await Keep(viewer.PostAsync("/me/keys", null))).JsonAsync()).GetProperty("key").GetString()!;
        var viewerId = invited.GetProperty("member").GetProperty("id").GetInt64();
        (await admin.DeleteAsync($"/members/{viewerId}")).StatusCode.Should().Be(HttpStatusCode.NoContent);
        await (await viewer.GetAsync("/me")).ShouldBeProblemAsync(HttpStatusCode.Unauthorized);
        using (var viewerRotated = Client(service, viewerSecond))
        {
            await (await viewerRotated.GetAsync("/me")).ShouldBeProblemAsync(HttpStatusCode.Unauthorized);
        }

        // The last admin cannot remove themselves.
        var adminId = created.Value.Admin.Id;
        await (await admin.DeleteAsync($"/members/{adminId}")).ShouldBeProblemAsync(HttpStatusCode.Conflict);

        // Who did what, newest first, with the key prefix that did it.
        var audit = await (await Keep(admin.GetAsync("/audit?limit=100"))).JsonAsync();
        audit.EnumerateArray().Select(e => e.GetProperty("action").GetString()).Should().Equal(
            "member.removed", "key.created", "device.decommissioned", "key.revoked", "key.created", "key.created", "member.added",
            "key.created", "device.created", "key.created", "member.added", "project.created");
        audit[0].GetProperty("actor_key_prefix").GetString().Should().Be(adminKey[..12]);
        audit[audit.GetArrayLength() - 1].GetProperty("actor_kind").GetString().Should().Be("cli");

        // No full key anywhere but in the answer that created it: not in later answers, logs or tables.
        var fullKeys = new[] { adminKey, firstKey, secondKey, viewerKey, viewerSecond };
        foreach (var key in fullKeys)
        {
            responses.Count(r => r.Contains(key, StringComparison.Ordinal)).Should().BeLessThanOrEqualTo(1, "only the creating answer shows a key");
        }

        var logText = string.Join('\n', logs.Rendered());
        var tables = await AllRowsAsTextAsync(connectionString);
        foreach (var key in fullKeys)
        {
            logText.Should().NotContain(key);
            tables.Should().NotContain(key);
        }
    }

    [Fact]
    public async Task The_bootstrap_command_refuses_wrong_arguments_with_exit_code_2()
    {
        (await CommandLine.RunAsync(["create-project"], TextWriter.Null, TextWriter.Null)).Should().Be(CommandLine.Usage);
        (await CommandLine.RunAsync(["create-project", "acme", "--owner", "x@y"], TextWriter.Null, TextWriter.Null)).Should().Be(CommandLine.Usage);
    }

    [Theory]
    [InlineData("create-project", "project-name")]
    [InlineData("issue-admin-key", "--admin")]
    [InlineData("grant-api-role", "login")]
    [InlineData("verify-projections", "project-id")]
    [InlineData("healthcheck", "url")]
    public async Task Each_command_says_how_it_is_used_with_help_and_an_unknown_one_lists_them_all(string command, string argument)
    {
        using var output = new StringWriter();
        (await CommandLine.RunAsync([command, "--help"], output, TextWriter.Null)).Should().Be(0);
        output.ToString().Should().Contain("Usage:").And.Contain(command).And.Contain(argument);

        using var error = new StringWriter();
        (await CommandLine.RunAsync(["no-such-command"], TextWriter.Null, error)).Should().Be(CommandLine.Usage);
        error.ToString().Should().Contain("no-such-command").And.Contain(command, "the usage lists every command");
        CommandLine.IsCommand(["--help"]).Should().BeTrue("--help alone lists the commands");
        CommandLine.IsCommand(["--urls=http://127.0.0.1:0"]).Should().BeFalse("settings start the web service");
    }

    private static HttpClient Client(Microsoft.AspNetCore.Mvc.Testing.WebApplicationFactory<Program> service, string key)
    {
        var client = service.CreateClient();
        client.DefaultRequestHeaders.Add("api_key", key);
        return client;
    }

    private static async Task<string> AllRowsAsTextAsync(string connectionString)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        var tables = await connection.QueryAsync<string>(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename");
        var text = new System.Text.StringBuilder();
        foreach (var table in tables)
        {
            text.AppendJoin('\n', await connection.QueryAsync<string>($"SELECT row_to_json(t)::text FROM \"{table}\" AS t"));
        }

        return text.ToString();
    }
}
