using System.Net;
using FirmwareManager.Api.Database;
using FirmwareManager.Tests.Infrastructure;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.Logging.Abstractions;

namespace FirmwareManager.Tests.Observability;

public sealed class MetricsSettingsTests
{
    [Fact]
    public async Task Metrics_can_be_turned_off()
    {
        await using var service = await StartAsync(("FirmwareManager:Metrics:Enabled", "false"));
        using var client = service.CreateClient();

        (await client.GetAsync("/metrics")).StatusCode.Should().Be(HttpStatusCode.NotFound);
        (await client.GetAsync("/health")).StatusCode.Should().Be(HttpStatusCode.OK);
    }

    [Fact]
    public async Task Metrics_can_move_to_a_port_of_their_own()
    {
        await using var service = await StartAsync(("FirmwareManager:Metrics:Port", "9464"));
        using var apiPort = service.CreateClient();
        using var metricsPort = service.CreateClient();
        metricsPort.BaseAddress = new Uri("http://localhost:9464");

        (await apiPort.GetAsync("/metrics")).StatusCode.Should().Be(HttpStatusCode.NotFound);
        (await metricsPort.GetAsync("/metrics")).StatusCode.Should().Be(HttpStatusCode.OK);
    }

    private static async Task<WebApplicationFactory<Program>> StartAsync(params (string Key, string Value)[] settings)
    {
        var connectionString = await (await PostgresServer.SharedAsync()).CreateDatabaseAsync();
        await DatabaseMigrator.MigrateAsync(connectionString, applyDemoData: false, NullLogger.Instance);
        return new ServiceOnDatabase(connectionString).WithWebHostBuilder(builder =>
        {
            foreach (var (key, value) in settings)
            {
                builder.UseSetting(key, value);
            }
        });
    }
}
