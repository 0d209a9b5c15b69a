using System.Net;
using Dapper;
using FirmwareManager.Api.Database;
using FirmwareManager.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace FirmwareManager.Tests.Database;

/// <summary>The service when its database goes away and comes back: 503 with Retry-After, never a 500, and recovery by itself.</summary>
public sealed class DatabaseOutageTests
{
    [Fact]
    public async Task While_the_database_is_unreachable_requests_get_503_with_Retry_After_and_it_recovers_by_itself()
    {
        var connectionString = await (await PostgresServer.SharedAsync()).CreateDatabaseAsync();
        await DatabaseMigrator.MigrateAsync(connectionString, applyDemoData: true, NullLogger.Instance);
        var direct = new NpgsqlConnectionStringBuilder(connectionString);
        await using var proxy = new TcpProxy(direct.Host!, direct.Port);
        proxy.Start();
        var throughProxy = new NpgsqlConnectionStringBuilder(connectionString) { Host = "127.0.0.1", Port = proxy.Port, Timeout = 3 }.ConnectionString;
        await using var service = new ServiceOnDatabase(throughProxy);
        using var device = service.CreateClient();
        device.DefaultRequestHeaders.Add("api_key", FirmwareManagerApp.DeviceKey1);
        using var anonymous = service.CreateClient();

        var before = await device.PostEventAsync(1, new { firmware = "2.0.0", status = "updated", timestamp = "2024-01-01T00:00:00Z" });
        proxy.Stop();
        var during = await device.PostEventAsync(1, new { firmware = "2.0.1", status = "updated", timestamp = "2024-01-02T00:00:00Z" });
        var healthDuring = await anonymous.GetAsync("/health");
        proxy.Start();
        var after = await RetryAsync(() => device.PostEventAsync(1, new { firmware = "2.0.2", status = "updated", timestamp = "2024-01-03T00:00:00Z" }));

        before.StatusCode.Should().Be(HttpStatusCode.Created);
        await during.ShouldBeProblemAsync(HttpStatusCode.ServiceUnavailable);
        during.Headers.RetryAfter!.Delta.Should().Be(TimeSpan.FromSeconds(5));
        healthDuring.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable);
        after.StatusCode.Should().Be(HttpStatusCode.Created);
        // /health reuses its answer for a second (a flood of it costs one query a second): healthy again within that.
        (await RetryAsync(() => anonymous.GetAsync("/health"))).StatusCode.Should().Be(HttpStatusCode.OK);
        await using var connection = new NpgsqlConnection(connectionString);
        (await connection.QueryAsync<string>("SELECT firmware FROM firmware_events WHERE device_id = 1 ORDER BY occurred_at"))
            .Should().Equal("1.0.0", "2.0.0", "2.0.2");
    }

    /// <summary>The first request after the database returns may still meet a connection cut during the outage.</summary>
    private static async Task<HttpResponseMessage> RetryAsync(Func<Task<HttpResponseMessage>> send)
    {
        var deadline = DateTime.UtcNow.AddSeconds(5);
        while (true)
        {
            var response = await send();
            if (response.StatusCode != HttpStatusCode.ServiceUnavailable || DateTime.UtcNow > deadline)
            {
                return response;
            }

            await Task.Delay(100);
        }
    }
}
