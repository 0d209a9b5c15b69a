using System.Net;
using Dapper;
using FirmwareManager.Tests.Infrastructure;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Npgsql;

namespace FirmwareManager.Tests.Hardening;

/// <summary>Per-key rate limits: a flooding key gets 429 with Retry-After and stores nothing more; other keys are untouched.</summary>
public sealed class RateLimitTests
{
    private static async Task<(string ConnectionString, WebApplicationFactory<Program> Service)> StartAsync(int devicePerSecond, int deviceBurst, int memberPerSecond, int memberBurst)
    {
        var connectionString = await PostgresServer.CreateDemoDatabaseAsync();
        var service = new ServiceOnDatabase(connectionString).WithWebHostBuilder(b => b
            .UseSetting("FirmwareManager:RateLimits:Device:PermitsPerSecond", devicePerSecond.ToString(System.Globalization.CultureInfo.InvariantCulture))
            .UseSetting("FirmwareManager:RateLimits:Device:Burst", deviceBurst.ToString(System.Globalization.CultureInfo.InvariantCulture))
            .UseSetting("FirmwareManager:RateLimits:Member:PermitsPerSecond", memberPerSecond.ToString(System.Globalization.CultureInfo.InvariantCulture))
            .UseSetting("FirmwareManager:RateLimits:Member:Burst", memberBurst.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        return (connectionString, service);
    }

    private static HttpClient Client(WebApplicationFactory<Program> service, string key)
    {
        var client = service.CreateClient();
        client.DefaultRequestHeaders.Add("api_key", key);
        return client;
    }

    private static object Report(int i) => new { firmware = $"9.0.{i}", status = "downloading", timestamp = $"2024-03-01T00:00:{i % 60:00}.{i:000000}Z" };

    [Fact]
    public async Task A_flooding_device_gets_429_with_Retry_After_and_stores_nothing_more_while_other_devices_and_members_are_served()
    {
        var (connectionString, service) = await StartAsync(devicePerSecond: 1, deviceBurst: 5, memberPerSecond: 1, memberBurst: 5);
        await using var _ = service;
        using var flooder = Client(service, FirmwareManagerApp.DeviceKey1);
        using var neighbour = Client(service, FirmwareManagerApp.DeviceKey2);
        using var member = Client(service, FirmwareManagerApp.MemberKey1);

        var flood = await Task.WhenAll(Enumerable.Range(0, 40).Select(i => flooder.PostEventAsync(1, Report(i))));
        var neighbourAnswers = new List<HttpStatusCode>();
        for (var i = 0; i < 5; i++)
        {
            neighbourAnswers.Add((await neighbour.PostEventAsync(2, Report(i))).StatusCode);
        }

        var memberAnswer = await member.GetAsync("/firmware/1");

        var accepted = flood.Count(r => r.StatusCode == HttpStatusCode.Created);
        var limited = flood.Where(r => r.StatusCode == HttpStatusCode.TooManyRequests).ToList();
        accepted.Should().BeInRange(5, 7, "the burst of 5, plus what refilled meanwhile at 1 a second");
        limited.Should().HaveCount(40 - accepted, "every other request is limited, none fails otherwise");
        var problem = await limited[0].ShouldBeProblemAsync(HttpStatusCode.TooManyRequests);
        problem.GetProperty("detail").GetString().Should().Contain("rate limit");
        limited.Should().OnlyContain(r => r.Headers.RetryAfter!.Delta >= TimeSpan.FromSeconds(1));
        neighbourAnswers.Should().OnlyContain(s => s == HttpStatusCode.Created, "another device has a budget of its own");
        memberAnswer.StatusCode.Should().Be(HttpStatusCode.OK, "members have budgets of their own");
        await using var connection = new NpgsqlConnection(connectionString);
        (await connection.ExecuteScalarAsync<int>("SELECT count(*) FROM firmware_events WHERE device_id = 1 AND firmware LIKE '9.0.%'"))
            .Should().Be(accepted, "a limited request stores nothing");
    }

    [Fact]
    public async Task Member_keys_have_a_budget_of_their_own_and_it_refills()
    {
        var (_, service) = await StartAsync(devicePerSecond: 1, deviceBurst: 1, memberPerSecond: 2, memberBurst: 3);
        await using var _ = service;
        using var member = Client(service, FirmwareManagerApp.MemberKey1);
        using var otherMember = Client(service, FirmwareManagerApp.MemberKey2);

        // Six at once: one after another, a slow read (Citus, a busy machine) lets the budget refill between them.
        var burst = (await Task.WhenAll(Enumerable.Range(0, 6).Select(_ => member.GetAsync("/devices")))).Select(r => r.StatusCode).ToList();

        var other = await otherMember.GetAsync("/devices");
        // The next 429 (a refill since the burst may let one more through first).
        var limited = await member.GetAsync("/devices");
        for (var tries = 0; limited.StatusCode != HttpStatusCode.TooManyRequests && tries < 20; tries++)
        {
            limited = await member.GetAsync("/devices");
        }

        limited.StatusCode.Should().Be(HttpStatusCode.TooManyRequests, "a member that keeps asking faster than 2 a second is limited");
        await Task.Delay(limited.Headers.RetryAfter!.Delta!.Value + TimeSpan.FromMilliseconds(200));
        var afterWaiting = await member.GetAsync("/devices");

        burst.Count(s => s == HttpStatusCode.OK).Should().BeGreaterThanOrEqualTo(3, "the burst is 3 for members here, not the devices' 1");
        burst.Should().Contain(HttpStatusCode.TooManyRequests);
        other.StatusCode.Should().Be(HttpStatusCode.OK);
        afterWaiting.StatusCode.Should().Be(HttpStatusCode.OK, "waiting as long as Retry-After says is enough");
    }

    [Fact]
    public async Task Zero_permits_switches_the_limit_off()
    {
        var (_, service) = await StartAsync(devicePerSecond: 0, deviceBurst: 1, memberPerSecond: 0, memberBurst: 1);
        await using var _ = service;
        using var device = Client(service, FirmwareManagerApp.DeviceKey1);

        var answers = await Task.WhenAll(Enumerable.Range(0, 30).Select(i => device.PostEventAsync(1, Report(i))));

        answers.Should().OnlyContain(r => r.StatusCode == HttpStatusCode.Created);
    }
}
