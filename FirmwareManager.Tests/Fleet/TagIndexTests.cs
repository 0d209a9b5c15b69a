using System.Reflection;
using Dapper;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Devices;
using FirmwareManager.Api.FleetHealth;
using FirmwareManager.Api.Versions;
using FirmwareManager.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace FirmwareManager.Tests.Fleet;

/// <summary>
/// The tags' GIN index holds only the devices that have tags (migration 0049): a report's update of an untagged
/// device adds nothing to it. The statements that filter by tag must still find their devices through it, which they
/// do only if the planner can see that the index covers them (the index's predicate among their conditions);
/// otherwise a filter by a rare tag reads every device of the project.
/// </summary>
public sealed class TagIndexTests
{
    private const int UntaggedDevices = 5000;
    private const int TaggedDevices = 10;

    [Fact]
    public async Task Filters_by_tag_find_their_devices_through_the_index_of_tagged_devices()
    {
        var connectionString = await (await PostgresServer.SharedAsync()).CreateDatabaseAsync();
        await DatabaseMigrator.MigrateAsync(connectionString, applyDemoData: true, NullLogger.Instance);
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await connection.ExecuteAsync("""
            INSERT INTO devices (project_id, name, current_firmware, current_firmware_at, tags)
            SELECT 1, 'tag index ' || g, '1.0.0', now(), CASE WHEN g <= @TaggedDevices THEN ARRAY['pilot'] ELSE '{}' END
            FROM generate_series(1, @Devices) AS g
            """, new { TaggedDevices, Devices = UntaggedDevices + TaggedDevices });
        await connection.ExecuteAsync("ANALYZE devices");

        var engine = new DatabaseEngine(PostgresServer.IsCitus);
        var devices = new DeviceSummaries(null!, engine, TimeProvider.System).Export(
            1, new DeviceFilters(null, [], null, false, false, Tags: ["pilot"]));
        var versions = Constant(typeof(FirmwareVersions), "TaggedPageSql");
        var versionParameters = new { ProjectId = 1L, After = Array.Empty<byte>(), Limit = 101, Now = DateTime.UtcNow, Hardware = (string?)null, Tags = new[] { "pilot" } };

        // /firmware-transitions' filtered statements serve a hardware filter alone too (no tag: the condition is true).
        var transitionParameters = new
        {
            ProjectId = 1L,
            AfterTo = "",
            AfterFrom = "",
            To = (string?)null,
            From = (string?)null,
            Hardware = (string?)null,
            Tags = new[] { "pilot" },
            Limit = 101,
            Tos = new[] { "2.0.0" },
            Top = 3,
        };
        var statements = new[] { ("/devices?tag=", devices.Sql, devices.Parameters), ("/firmware-versions?tag=", versions, versionParameters) }
            .Concat(new[] { "FilteredPageSql", "FilteredTopErrorsSql" }.Select(field => ($"/firmware-transitions?tag= ({field})", Constant(typeof(FirmwareTransitions), field), (object)transitionParameters)));
        foreach (var (name, sql, parameters) in statements)
        {
            var plan = string.Join('\n', await connection.QueryAsync<string>("EXPLAIN (COSTS OFF) " + sql, parameters));
            plan.Should().Contain("devices_tagged_idx", $"{name} reads the devices with the tag through the index of tagged devices:\n{plan}");
            plan.Should().NotContain("Seq Scan on devices", $"{name} does not read every device of the project:\n{plan}");
        }

        // The index holds what its name says, and the filters answer from it: every tagged device, no other.
        (await connection.QueryAsync<long>(devices.Sql, devices.Parameters)).Should().HaveCount(TaggedDevices);

        // A hardware filter alone still counts the transitions of devices without tags; with a tag, only tagged ones.
        await connection.ExecuteAsync("""
            UPDATE devices SET hardware = 'board-x' WHERE name IN ('tag index 11', 'tag index 12', 'tag index 13');
            INSERT INTO device_transition_status (project_id, device_id, to_firmware, from_firmware, status, reported_at)
            SELECT project_id, id, '2.0.0', '1.0.0', 'installed', now() FROM devices WHERE hardware = 'board-x';
            """);
        var transitions = Constant(typeof(FirmwareTransitions), "FilteredPageSql");
        (await connection.QueryAsync<long>($"SELECT attempted FROM ({transitions}) AS page", transitionParameters with { Hardware = "board-x", Tags = Array.Empty<string>() }))
            .Should().Equal(3L);
        (await connection.QueryAsync<long>($"SELECT attempted FROM ({transitions}) AS page", transitionParameters with { Hardware = "board-x" }))
            .Should().BeEmpty();
        (await connection.ExecuteScalarAsync<string>("""
            SELECT pg_get_expr(i.indpred, i.indrelid)
            FROM pg_index AS i
            WHERE i.indexrelid = 'devices_tagged_idx'::regclass
            """)).Should().Be("(tags <> '{}'::text[])");
        (await connection.ExecuteScalarAsync<long>("""
            SELECT count(*)
            FROM pg_index AS i
            JOIN pg_class AS c ON c.oid = i.indexrelid
            JOIN pg_am AS am ON am.oid = c.relam
            WHERE i.indrelid = 'devices'::regclass
              AND am.amname = 'gin'
            """)).Should().Be(1, "the index of every device's tags is gone");
    }

    private static string Constant(Type type, string name) =>
        (string)type.GetField(name, BindingFlags.NonPublic | BindingFlags.Static)!.GetRawConstantValue()!;
}
