using Dapper;
using FirmwareManager.Api.Database;
using FirmwareManager.Tests.Infrastructure;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace FirmwareManager.Tests.Database;

/// <summary>The defaults the service gives its connection pool, and a connection string that sets its own.</summary>
public sealed class ConnectionSettingsTests
{
    [Theory]
    [InlineData("", false)]
    [InlineData(";No Reset On Close=false", true)]
    [InlineData(";noresetonclose=False", true)]
    public async Task A_pooled_connection_keeps_its_session_unless_the_connection_string_asks_for_a_reset(string extra, bool reset)
    {
        var connectionString = await (await PostgresServer.SharedAsync()).CreateDatabaseAsync() + extra;
        // The webhook sender looks for due deliveries every second, and the projector for projects to step every half
        // second, each on a pooled connection: either could take the idle one between the two opens below (CI saw it).
        await using var service = new ServiceOnDatabase(connectionString).WithWebHostBuilder(b => b
            .UseSetting("FirmwareManager:Webhooks:SendDeliveries", "false")
            .UseSetting("FirmwareManager:Projections:Enabled", "false"));
        var dataSource = service.Services.GetRequiredService<NpgsqlDataSource>();

        int firstBackend;
        await using (var connection = await dataSource.OpenConnectionAsync())
        {
            firstBackend = await connection.ExecuteScalarAsync<int>("SELECT pg_backend_pid()");
            await connection.ExecuteAsync("SET firmware_manager.test_marker = 'left behind'");
        }

        await using (var connection = await dataSource.OpenConnectionAsync())
        {
            (await connection.ExecuteScalarAsync<int>("SELECT pg_backend_pid()")).Should().Be(firstBackend, "the pool hands the idle connection out again");
            var marker = await connection.ExecuteScalarAsync<string?>("SELECT current_setting('firmware_manager.test_marker', true)");
            if (reset)
            {
                marker.Should().BeNullOrEmpty();
            }
            else
            {
                marker.Should().Be("left behind");
            }
        }
    }

    [Theory]
    [InlineData("Host=db;No Reset On Close=false", true)]
    [InlineData("Host=db;NoResetOnClose=true", true)]
    [InlineData("Host=db;Maximum Pool Size=10", false)]
    public void Only_a_keyword_the_connection_string_sets_counts_as_set(string connectionString, bool sets) =>
        DatabaseExtensions.SetsKeyword(connectionString, "No Reset On Close").Should().Be(sets);
}
