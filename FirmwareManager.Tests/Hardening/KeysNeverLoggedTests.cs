using System.Net;
using System.Net.Http.Json;
using System.Text.RegularExpressions;
using FirmwareManager.Tests.Infrastructure;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Serilog.Core;
using Serilog.Events;

namespace FirmwareManager.Tests.Hardening;

/// <summary>Every log line of a full run, at the most verbose level for every source, and not one API key or webhook URL in them.</summary>
public sealed partial class KeysNeverLoggedTests
{
    [Fact]
    public async Task A_full_run_at_verbose_level_logs_no_api_key_good_bad_or_revoked()
    {
        var connectionString = await PostgresServer.CreateDemoDatabaseAsync();
        var logs = new CapturedLogs();
        await using var service = new ServiceOnDatabase(connectionString).WithWebHostBuilder(b => b
            .UseSetting("Serilog:MinimumLevel:Default", "Verbose")
            .UseSetting("Serilog:MinimumLevel:Override:Microsoft.AspNetCore", "Verbose")
            .UseSetting("Serilog:MinimumLevel:Override:Npgsql", "Verbose")
            .UseSetting("Serilog:MinimumLevel:Override:Microsoft.Hosting.Lifetime", "Verbose")
            .UseSetting("FirmwareManager:KeyUsageFlushSeconds", "1")
            .UseSetting("FirmwareManager:Webhooks:AllowPrivateTargets", "true")
            .ConfigureServices(s => s.AddSingleton<ILogEventSink>(logs)));
        var keys = new List<string>
        {
            FirmwareManagerApp.DeviceKey1, FirmwareManagerApp.DeviceKey2, FirmwareManagerApp.MemberKey1, FirmwareManagerApp.MemberKey2,
            "fmd_" + new string('x', 43), "not-a-key-at-all-but-secret-anyway",
        };
        HttpClient Client(string key)
        {
            var client = service.CreateClient();
            client.DefaultRequestHeaders.Add("X-Api-Key", key);
            return client;
        }

        using var admin = Client(FirmwareManagerApp.MemberKey1);
        // A webhook whose URL carries its secret in the path, as Slack's and many chat tools' do: a secret too.
        await using var receiver = await WebhookReceiver.StartAsync();
        const string webhookSecretPath = "T0FMSECRET/B0FMSECRET/xoxbWebhookPathSecret42";
        var webhook = await admin.PostAsJsonAsync("/webhooks", new { url = $"{receiver.Url}/{webhookSecretPath}", events = new[] { "event.installed" } });
        webhook.StatusCode.Should().Be(HttpStatusCode.Created, await webhook.Content.ReadAsStringAsync());
        // Issue keys of every kind, use them, rotate and revoke them.
        var device = await (await admin.PostAsJsonAsync("/devices", new { name = "logged?", serial = "SN-LOG" })).JsonAsync();
        var deviceId = device.GetProperty("device").GetProperty("id").GetInt64();
        keys.Add(device.GetProperty("key").GetProperty("key").GetString()!);
        var second = await (await admin.PostAsync($"/devices/{deviceId}/keys", null)).JsonAsync();
        keys.Add(second.GetProperty("key").GetString()!);
        var member = await (await admin.PostAsJsonAsync("/members", new { email = "logs@project-1.example", role = "viewer" })).JsonAsync();
        keys.Add(member.GetProperty("key").GetProperty("key").GetString()!);
        var mine = await (await admin.PostAsync("/me/keys", null)).JsonAsync();
        keys.Add(mine.GetProperty("key").GetString()!);
        var bulk = await (await admin.PostAsJsonAsync("/devices/bulk", new { count = 3 })).Content.ReadAsStringAsync();
        keys.AddRange(BulkKeys().Matches(bulk).Select(m => m.Groups[1].Value));

        foreach (var key in keys)
        {
            using var client = Client(key);
            await client.GetAsync("/me");
            await client.GetAsync($"/firmware/{deviceId}");
            await client.PostAsJsonAsync($"/firmware/{deviceId}", new { firmware = "1.2.3", status = "installed" });
        }

        await admin.DeleteAsync($"/devices/{deviceId}/keys/{second.GetProperty("id").GetInt64()}");
        using (var revoked = Client(keys[7]))
        {
            (await revoked.GetAsync($"/firmware/{deviceId}")).StatusCode.Should().Be(HttpStatusCode.Unauthorized);
        }

        using (var twoKeys = Client(FirmwareManagerApp.MemberKey1))
        {
            twoKeys.DefaultRequestHeaders.Add("api_key", FirmwareManagerApp.MemberKey2);
            (await twoKeys.GetAsync("/devices")).StatusCode.Should().Be(HttpStatusCode.Unauthorized);
        }

        await Task.Delay(TimeSpan.FromSeconds(1.5)); // the key-usage flush runs and logs too
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (receiver.Accepted.Count == 0)
        {
            DateTime.UtcNow.Should().BeBefore(deadline, "the webhook's deliveries arrive");
            await Task.Delay(100);
        }

        keys.Should().HaveCountGreaterThan(10);
        logs.Events.Should().Contain(e => e.Level == LogEventLevel.Verbose || e.Level == LogEventLevel.Debug, "the run logged at its most verbose");
        var text = string.Join('\n', logs.Rendered());
        text.Length.Should().BeGreaterThan(10_000);
        foreach (var key in keys)
        {
            text.Should().NotContain(key);
            text.Should().NotContain(key[4..], "not even without its prefix");
        }

        text.Should().NotContain(webhookSecretPath, "a webhook's URL is a secret");
        text.Should().NotContain("FMSECRET");
    }

    [GeneratedRegex(@"""key"":""(fmd_[0-9A-Za-z]{43})""")]
    private static partial Regex BulkKeys();
}
