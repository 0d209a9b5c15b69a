using System.Net;
using Dapper;
using FirmwareManager.Api.Database;
using FirmwareManager.Tests.Infrastructure;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace FirmwareManager.Tests.Fleet;

public sealed class RetentionTests
{
    [Fact]
    public async Task Retention_deletes_old_events_in_batches_and_leaves_current_firmware_and_counts_alone()
    {
        var connectionString = await (await PostgresServer.SharedAsync()).CreateDatabaseAsync();
        await DatabaseMigrator.MigrateAsync(connectionString, applyDemoData: true, NullLogger.Instance);
        await using (var connection = new NpgsqlConnection(connectionString))
        {
            // The demo events were received in 2023; add 250 recent ones to device 1.
            await connection.ExecuteAsync("""
                INSERT INTO firmware_events (device_id, project_id, firmware, status, occurred_at)
                SELECT 1, 1, '1.0.0', 'downloading', now() - g * interval '1 minute' FROM generate_series(1, 250) AS g
                """);
        }

        var before = await StateAsync(connectionString);
        await using var service = new ServiceOnDatabase(connectionString).WithWebHostBuilder(builder => builder
            .UseSetting("FirmwareManager:Retention:MaxAgeDays", "30")
            .UseSetting("FirmwareManager:Retention:BatchSize", "100"));
        using var member = service.CreateClient();
        member.DefaultRequestHeaders.Add("api_key", FirmwareManagerApp.MemberKey1);

        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (await CountAsync(connectionString, "SELECT count(*) FROM firmware_events WHERE received_at < now() - interval '30 days'") > 0)
        {
            DateTime.UtcNow.Should().BeBefore(deadline, "retention runs at startup");
            await Task.Delay(100);
        }

        (await CountAsync(connectionString, "SELECT count(*) FROM firmware_events")).Should().Be(250);
        (await StateAsync(connectionString)).Should().Be(before);
        (await member.GetAsync("/firmware-versions")).StatusCode.Should().Be(HttpStatusCode.OK);
        (await (await member.GetAsync("/devices/2")).JsonAsync()).GetProperty("current_firmware").GetString().Should().Be("1.0.1");
    }

    private static async Task<long> CountAsync(string connectionString, string sql)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        return await connection.ExecuteScalarAsync<long>(sql);
    }

    private static async Task<string> StateAsync(string connectionString)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        return await connection.ExecuteScalarAsync<string>("""
            SELECT (SELECT string_agg(id || ':' || current_firmware || ':' || last_event_status, ',' ORDER BY id) FROM devices)
                || ' | ' ||
                   (SELECT string_agg(project_id || ':' || firmware || ':' || devices || '/' || failed || '/' || rolled_back, ',' ORDER BY project_id, firmware, stripe)
                    FROM firmware_version_counts)
            """) ?? "";
    }
}
