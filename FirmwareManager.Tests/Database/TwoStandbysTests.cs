using System.Net;
using System.Net.Http.Json;
using Dapper;
using FirmwareManager.Api.Database;
using FirmwareManager.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace FirmwareManager.Tests.Database;

/// <summary>
/// Read-your-writes with a primary and two standbys, connections spread over them (Load Balance Hosts=true), one
/// standby held back: a member's floor is kept after a read from the other, so that its next read, wherever Npgsql
/// sends it, never misses the member's own write. Plain PostgreSQL only, as ReadReplicaTests.
/// </summary>
public sealed class TwoStandbysTests
{
    [SingleServerFact]
    public async Task A_members_write_is_in_each_of_its_next_200_reads_whichever_standby_serves_them()
    {
        var cluster = await PostgresServer.StartPrimaryAndStandbyAsync(standbys: 2);
        await using (var connection = new NpgsqlConnection(cluster.PrimaryConnectionString))
        {
            await connection.ExecuteAsync("CREATE DATABASE fm_two_standbys");
        }

        var database = new NpgsqlConnectionStringBuilder(cluster.PrimaryConnectionString) { Database = "fm_two_standbys" }.ConnectionString;
        await DatabaseMigrator.MigrateAsync(database, applyDemoData: true, NullLogger.Instance);
        await cluster.CatchUpAsync(0);
        await cluster.CatchUpAsync(1);
        await cluster.HoldBackStandbyAsync(1);
        await using var service = new ServiceOnDatabase(cluster.MultiHostConnectionString("fm_two_standbys", loadBalance: true));
        using var admin = service.CreateClient();
        admin.DefaultRequestHeaders.Add("X-Api-Key", FirmwareManagerApp.MemberKey1);
        using var viewer = service.CreateClient();
        viewer.DefaultRequestHeaders.Add("X-Api-Key", FirmwareManagerApp.MemberKey2);

        var provisioned = await admin.PostAsJsonAsync("/devices", new { name = "two standbys" });
        provisioned.StatusCode.Should().Be(HttpStatusCode.Created);
        var deviceId = (await provisioned.JsonAsync()).GetProperty("device").GetProperty("id").GetInt64();
        await cluster.CatchUpAsync(0);

        var missed = 0;
        for (var i = 0; i < 200; i++)
        {
            if ((await admin.GetAsync($"/devices/{deviceId}")).StatusCode != HttpStatusCode.OK)
            {
                missed++;
            }
        }

        missed.Should().Be(0, "each read of the member that wrote sees its write, after a read from the standby that has it too");
        var viewerSaw = 0;
        for (var i = 0; i < 20; i++)
        {
            viewerSaw += (await viewer.GetAsync($"/devices/{deviceId}")).StatusCode == HttpStatusCode.OK ? 1 : 0;
        }

        viewerSaw.Should().BeLessThan(20, "the viewer, who wrote nothing, is served by either standby, the held-back one too");
    }
}
