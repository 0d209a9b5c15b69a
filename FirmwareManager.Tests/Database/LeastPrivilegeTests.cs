using Dapper;
using FirmwareManager.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace FirmwareManager.Tests.Database;

/// <summary>The service runs as migration 0008's role, which reads and writes rows and can do nothing else.</summary>
public sealed class LeastPrivilegeTests(FirmwareManagerApp app) : ApiTest(app)
{
    private const string ApiGroupRole = "firmware_manager_api";

    [Fact]
    public async Task The_service_connects_as_the_api_role_not_as_the_owner()
    {
        var servicePool = App.Services.GetRequiredService<NpgsqlDataSource>();
        await using var connection = await servicePool.OpenConnectionAsync();

        var user = await connection.ExecuteScalarAsync<string>("SELECT current_user");

        user.Should().Be(PostgresServer.ApiRole);
    }

    [Theory]
    [InlineData("CREATE TABLE intruder (id int)")]
    [InlineData("DROP TABLE audit_log")]
    [InlineData("ALTER TABLE devices ADD COLUMN x int")]
    [InlineData("CREATE INDEX intruder_idx ON devices (name)")]
    [InlineData("TRUNCATE firmware_events")]
    [InlineData("DELETE FROM devices")]
    [InlineData("DELETE FROM audit_log")]
    [InlineData("DELETE FROM firmware_events")]
    [InlineData("DROP TABLE firmware_events_default")]
    [InlineData("UPDATE audit_log SET action = 'x'")]
    [InlineData("UPDATE firmware_events SET firmware = '6.6.6'")]
    [InlineData("INSERT INTO projects (name) VALUES ('intruder')")]
    [InlineData("UPDATE service_secrets SET secret = secret")]
    [InlineData("SELECT count(*) FROM schemaversions")]
    [InlineData("UPDATE devices SET project_id = 2 WHERE id = 1")]
    [InlineData("UPDATE devices SET serial = 'stolen' WHERE id = 1")]
    [InlineData("UPDATE device_api_keys SET device_id = 1 WHERE id = 2")]
    [InlineData("UPDATE device_api_keys SET key_hash = key_hash")]
    [InlineData("UPDATE membership_api_keys SET membership_id = 1")]
    [InlineData("UPDATE project_memberships SET project_id = 2")]
    [InlineData("UPDATE project_memberships SET email = 'x@y.example'")]
    [InlineData("UPDATE firmware_version_counts SET project_id = 2")]
    [InlineData("UPDATE device_firmware_status SET device_id = 1")]
    public async Task The_api_role_may_not(string statement)
    {
        await using var connection = new NpgsqlConnection(App.ApiConnectionString);

        var attempt = () => connection.ExecuteAsync(statement);

        var refused = (await attempt.Should().ThrowAsync<PostgresException>()).Which;
        if (PostgresServer.IsCitus && statement.Contains("SET project_id", StringComparison.Ordinal))
        {
            // Citus refuses to move a row to another project's shard, for every role, before privileges are checked.
            refused.MessageText.Should().Contain("modifying the partition value of rows is not allowed");
        }
        else
        {
            refused.SqlState.Should().Be(PostgresErrorCodes.InsufficientPrivilege);
        }
    }

    [Fact]
    public async Task Every_table_but_the_migration_journal_is_granted_to_the_api_role_and_none_but_a_steps_scratch_may_be_deleted_from()
    {
        await using var connection = App.OpenConnection();

        var tables = (await connection.QueryAsync<(string Name, bool Select, bool Delete, bool Truncate, bool Owner)>("""
            SELECT c.relname,
                   has_table_privilege(@Role, c.oid, 'SELECT'),
                   has_table_privilege(@Role, c.oid, 'DELETE'),
                   has_table_privilege(@Role, c.oid, 'TRUNCATE'),
                   pg_has_role(@Role, c.relowner, 'USAGE')
            FROM pg_class AS c
            JOIN pg_namespace AS n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public'
              AND c.relkind IN ('r', 'p')
              AND NOT c.relispartition
            """, new { Role = ApiGroupRole })).ToList();

        tables.Should().HaveCountGreaterThan(5);
        tables.Where(t => t.Name != "schemaversions").Should().OnlyContain(t => t.Select,
            "a migration that creates a table grants it to the API role, or the service cannot read it in production " +
            "(partitions are read through their table)");
        tables.Where(t => t.Delete).Select(t => t.Name).Should().BeEquivalentTo(["projection_step_devices", "projection_step_transitions"],
            "retention deletes as the schema's owner; only a projection step's scratch rows, which live within its transaction, are deleted by the service");
        tables.Should().OnlyContain(t => !t.Truncate && !t.Owner);
        (await connection.ExecuteScalarAsync<bool>("SELECT has_schema_privilege(@Role, 'public', 'CREATE')", new { Role = ApiGroupRole }))
            .Should().BeFalse();
    }

    [Fact]
    public async Task A_revoked_key_cannot_be_restored_by_the_api_role_or_the_owner()
    {
        await using (var owner = App.OpenConnection())
        {
            await owner.ExecuteAsync("UPDATE device_api_keys SET revoked_at = now() WHERE id = 2");
        }

        foreach (var connectionString in new[] { App.ApiConnectionString, App.ConnectionString })
        {
            await using var connection = new NpgsqlConnection(connectionString);
            var restore = () => connection.ExecuteAsync("UPDATE device_api_keys SET revoked_at = NULL WHERE id = 2");
            (await restore.Should().ThrowAsync<PostgresException>()).Which.SqlState.Should().Be(PostgresErrorCodes.CheckViolation);
            (await connection.ExecuteAsync("UPDATE device_api_keys SET revoked_at = LEAST(revoked_at, now()) WHERE id = 2"))
                .Should().Be(1, "revoking again is fine");
        }
    }

    [Fact]
    public async Task The_migrations_run_as_an_owner_without_CREATEROLE_and_no_one_else_may_create_in_the_schema()
    {
        await using var connection = App.OpenConnection();

        (await connection.ExecuteScalarAsync<bool>("SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user")).Should().BeFalse();
        (await connection.ExecuteScalarAsync<string>("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"))
            .Should().Be(PostgresServer.OwnerRole);
        (await connection.ExecuteScalarAsync<bool>("SELECT has_schema_privilege('public', 'public', 'CREATE')")).Should().BeFalse();
    }
}
