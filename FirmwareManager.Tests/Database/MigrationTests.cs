using System.Net;
using Dapper;
using FirmwareManager.Api.Database;
using FirmwareManager.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace FirmwareManager.Tests.Database;

/// <summary>Startup against databases of their own: empty, already migrated, migrated by two at once, or broken.</summary>
public sealed class MigrationTests
{
    private static readonly string[] SchemaScripts = Directory
        .GetFiles(Path.Combine(Checkout.Root(), "migrations"), "*.sql")
        .Select(path => "migrations/" + Path.GetFileName(path))
        .Order(StringComparer.Ordinal)
        .ToArray();

    [Fact]
    public async Task Every_schema_script_is_applied_once_and_a_second_run_applies_nothing()
    {
        var connectionString = await (await PostgresServer.SharedAsync()).CreateDatabaseAsync();

        await DatabaseMigrator.MigrateAsync(connectionString, applyDemoData: false, NullLogger.Instance);
        var afterFirst = await JournalAsync(connectionString);
        await DatabaseMigrator.MigrateAsync(connectionString, applyDemoData: false, NullLogger.Instance);

        SchemaScripts.Should().NotBeEmpty();
        afterFirst.Should().Equal(SchemaScripts);
        (await JournalAsync(connectionString)).Should().Equal(SchemaScripts);
    }

    [Fact]
    public async Task No_table_is_unlogged_for_Citus_moves_a_shard_by_logical_replication_of_every_table_beside_it()
    {
        var connectionString = await (await PostgresServer.SharedAsync()).CreateDatabaseAsync();
        await DatabaseMigrator.MigrateAsync(connectionString, applyDemoData: false, NullLogger.Instance);
        await using var connection = new NpgsqlConnection(connectionString);

        // With migration 0042's tables unlogged, the rebalance of bench/citus-ops.sh under load never finished.
        (await connection.QueryAsync<string>("""
            SELECT c.relname
            FROM pg_class AS c
            JOIN pg_namespace AS n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public'
              AND c.relkind IN ('r', 'p')
              AND c.relpersistence <> 'p'
            """)).Should().BeEmpty();
        (await connection.ExecuteScalarAsync<long>("SELECT count(*) FROM pg_class WHERE relname = 'projection_step_devices'")).Should().Be(1);
    }

    [Fact]
    public async Task The_tables_written_once_per_event_and_every_partition_of_the_events_have_no_foreign_key_and_the_counts_keep_theirs()
    {
        var connectionString = await (await PostgresServer.SharedAsync()).CreateDatabaseAsync();
        await DatabaseMigrator.MigrateAsync(connectionString, applyDemoData: false, NullLogger.Instance);
        await using var connection = new NpgsqlConnection(connectionString);

        // Migration 0043: a partition keeps a key it had before it was attached (0023 adopted the old table's), so each
        // partition is asked too, not only the partitioned table.
        var keys = (await connection.QueryAsync<(string Table, string Key)>("""
            SELECT c.conrelid::regclass::text, c.conname
            FROM pg_constraint AS c
            WHERE c.contype = 'f'
              AND (c.conrelid IN ('firmware_events'::regclass, 'device_firmware_status'::regclass, 'device_transition_status'::regclass,
                                  'firmware_version_counts'::regclass)
                   OR c.conrelid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'firmware_events'::regclass))
            ORDER BY 1, 2
            """)).ToArray();

        (await connection.ExecuteScalarAsync<long>("SELECT count(*) FROM pg_inherits WHERE inhparent = 'firmware_events'::regclass"))
            .Should().BeGreaterThan(1, "the events have their partitions");
        keys.Should().Equal(("firmware_version_counts", "firmware_version_counts_project_id_fkey"));
    }

    [Fact]
    public async Task Devices_are_keyed_by_project_and_id_with_no_second_index_of_those_columns_and_a_key_must_name_its_device_with_its_project()
    {
        var connectionString = await (await PostgresServer.SharedAsync()).CreateDatabaseAsync();
        await DatabaseMigrator.MigrateAsync(connectionString, applyDemoData: false, NullLogger.Instance);
        await using var connection = new NpgsqlConnection(connectionString);

        // Migrations 0044 to 0047: the key Citus has had since 0018, on both engines, and one index fewer to write
        // with every report a projection step applies.
        var indexes = (await connection.QueryAsync<(string Name, string Columns, bool Primary, bool Partial)>("""
            SELECT i.indexrelid::regclass::text,
                   (SELECT string_agg(a.attname, ',' ORDER BY k.ordinality)
                    FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ordinality)
                    JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum),
                   i.indisprimary,
                   i.indpred IS NOT NULL
            FROM pg_index AS i
            WHERE i.indrelid = 'devices'::regclass
            """)).ToArray();
        indexes.Where(i => i.Primary).Select(i => (i.Name, i.Columns)).Should().Equal(("devices_pkey", "project_id,id"));
        indexes.Where(i => !i.Partial && i.Columns == "project_id,id").Should().ContainSingle("the primary key alone covers (project_id, id)");

        var references = (await connection.QueryAsync<(string Table, string Key, bool Validated, string Definition)>("""
            SELECT conrelid::regclass::text, conname, convalidated, pg_get_constraintdef(oid)
            FROM pg_constraint
            WHERE contype = 'f'
              AND confrelid = 'devices'::regclass
            """)).ToArray();
        references.Should().Equal(("device_api_keys", "device_api_keys_device_fkey", true,
            "FOREIGN KEY (project_id, device_id) REFERENCES devices(project_id, id)"));

        // A key for a device of another project is refused: the key holds the project.
        var projects = (await connection.QueryAsync<long>(
            "INSERT INTO projects (name) VALUES ('keyed one'), ('keyed two') RETURNING id")).Order().ToArray();
        var device = await connection.ExecuteScalarAsync<long>(
            "INSERT INTO devices (project_id, name) VALUES (@Project, 'keyed') RETURNING id", new { Project = projects[0] });
        var misplaced = () => connection.ExecuteAsync("""
            INSERT INTO device_api_keys (project_id, device_id, key_prefix, key_hash)
            VALUES (@Project, @Device, 'fmd_misplace', sha256('misplaced'::bytea))
            """, new { Project = projects[1], Device = device });
        (await misplaced.Should().ThrowAsync<PostgresException>()).Which.SqlState.Should().Be(PostgresErrorCodes.ForeignKeyViolation);
    }

    [Fact]
    public async Task Demo_data_is_applied_only_when_switched_on_and_applying_it_again_changes_nothing()
    {
        var connectionString = await (await PostgresServer.SharedAsync()).CreateDatabaseAsync();

        await DatabaseMigrator.MigrateAsync(connectionString, applyDemoData: false, NullLogger.Instance);
        var withoutDemo = await RowCountsAsync(connectionString);
        await DatabaseMigrator.MigrateAsync(connectionString, applyDemoData: true, NullLogger.Instance);
        var withDemo = await RowCountsAsync(connectionString);
        await DatabaseMigrator.MigrateAsync(connectionString, applyDemoData: true, NullLogger.Instance);

        withoutDemo.Should().Be("0 projects, 0 members, 0 devices, 0 events");
        withDemo.Should().Be("2 projects, 3 members, 3 devices, 6 events");
        (await RowCountsAsync(connectionString)).Should().Be(withDemo);
    }

    [Fact]
    public async Task Two_instances_starting_together_on_an_empty_database_both_come_up()
    {
        var connectionString = await (await PostgresServer.SharedAsync()).CreateDatabaseAsync();
        await using var first = new ServiceOnDatabase(connectionString);
        await using var second = new ServiceOnDatabase(connectionString);

        var clients = await Task.WhenAll(Task.Run(first.CreateClient), Task.Run(second.CreateClient));

        foreach (var client in clients)
        {
            (await client.GetAsync("/health")).StatusCode.Should().Be(HttpStatusCode.OK);
        }

        (await JournalAsync(connectionString)).Should().Equal(SchemaScripts);
    }

    [Fact]
    public async Task A_failing_script_stops_startup_with_a_message_naming_it_and_leaves_no_half_applied_script()
    {
        var connectionString = await (await PostgresServer.SharedAsync()).CreateDatabaseAsync();
        await using (var connection = new NpgsqlConnection(connectionString))
        {
            // Something a script expects to create is already there, as after a hand-made change.
            await connection.ExecuteAsync("CREATE TABLE devices (id bigint PRIMARY KEY)");
        }

        var migrate = () => DatabaseMigrator.MigrateAsync(connectionString, applyDemoData: false, NullLogger.Instance);
        await using var service = new ServiceOnDatabase(connectionString);

        (await migrate.Should().ThrowAsync<MigrationFailedException>())
            .WithMessage("*migrations/0002_create_devices.sql*");
        service.Invoking(s => s.CreateClient()).Should().Throw<Exception>();
        (await JournalAsync(connectionString)).Should().Equal(SchemaScripts[0]);
        await using (var connection = new NpgsqlConnection(connectionString))
        {
            (await connection.ExecuteScalarAsync<bool>("SELECT to_regclass('device_api_keys') IS NULL")).Should().BeTrue(
                "the failed script's transaction was rolled back whole");
        }
    }

    private static async Task<string[]> JournalAsync(string connectionString)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        return (await connection.QueryAsync<string>("SELECT scriptname FROM schemaversions ORDER BY scriptname")).ToArray();
    }

    private static async Task<string> RowCountsAsync(string connectionString)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        return await connection.ExecuteScalarAsync<string>("""
            SELECT format('%s projects, %s members, %s devices, %s events',
                (SELECT count(*) FROM projects), (SELECT count(*) FROM project_memberships),
                (SELECT count(*) FROM devices), (SELECT count(*) FROM firmware_events))
            """) ?? "";
    }
}
