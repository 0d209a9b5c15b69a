using System.Net;
using Dapper;
using FirmwareManager.Api.Database;
using FirmwareManager.Tests.Infrastructure;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace FirmwareManager.Tests.Database;

/// <summary>
/// A login that owns its database but may not create roles (what a DBA or a managed PostgreSQL gives) installs,
/// upgrades and serves; the DBA step (grant-api-role) then adds the least-privileged API role. On a cluster of its
/// own, where that role does not exist yet: roles belong to the cluster, and the shared one has it.
/// </summary>
public sealed class OwnerWithoutCreateRoleTests
{
    [Fact]
    public async Task The_owner_installs_and_serves_without_CREATEROLE_and_grant_api_role_then_adds_the_api_role()
    {
        var server = await PostgresServer.StartPrivateAsync();
        var owner = await server.CreateOwnedDatabaseAsync();
        var database = new NpgsqlConnectionStringBuilder(owner).Database;
        var adminOnDatabase = new NpgsqlConnectionStringBuilder(server.AdminConnectionString) { Database = database }.ConnectionString;

        // Installed and served by the owner alone, in Production: it works, and says it should not run as the owner.
        await using (var asOwner = new ServiceOnDatabase(owner))
        {
            await using var production = asOwner.WithWebHostBuilder(b => b.UseEnvironment("Production"));
            using var anonymous = production.CreateClient();
            (await anonymous.GetAsync("/health")).StatusCode.Should().Be(HttpStatusCode.OK);
            asOwner.Logs.Rendered().Should().Contain(l => l.Contains("the owner of the schema", StringComparison.Ordinal));
        }

        await using (var admin = new NpgsqlConnection(adminOnDatabase))
        {
            (await admin.ExecuteScalarAsync<bool>("SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = @OwnerRole", new { PostgresServer.OwnerRole }))
                .Should().BeFalse("the owner may not create roles");
            (await admin.ExecuteScalarAsync<bool>("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = 'firmware_manager_api')"))
                .Should().BeFalse("no one who could create it has run yet");
            await admin.ExecuteAsync("CREATE ROLE fm_api LOGIN PASSWORD 'fm_api'");
        }

        // The DBA step, twice: the second changes nothing.
        await DatabaseMigrator.GrantApiRoleAsync(adminOnDatabase, "fm_api", NullLogger.Instance);
        await DatabaseMigrator.GrantApiRoleAsync(adminOnDatabase, "fm_api", NullLogger.Instance);
        var api = new NpgsqlConnectionStringBuilder(owner) { Username = "fm_api", Password = "fm_api" }.ConnectionString;

        // Upgraded (the migrations again, as the owner) and served as the API role, with no warning.
        await using var service = new ServiceOnDatabase(api);
        await using var production2 = service.WithWebHostBuilder(b => b
            .UseEnvironment("Production")
            .UseSetting("ConnectionStrings:FirmwareManagerMigrations", owner));
        using var client = production2.CreateClient();
        (await client.GetAsync("/health")).StatusCode.Should().Be(HttpStatusCode.OK);
        service.Logs.Rendered().Should().NotContain(l => l.Contains("database login is", StringComparison.Ordinal));
        await using var asApi = new NpgsqlConnection(api);
        (await asApi.ExecuteScalarAsync<long>("SELECT count(*) FROM devices")).Should().Be(0);
        var denied = () => asApi.ExecuteAsync("UPDATE devices SET project_id = project_id");
        (await denied.Should().ThrowAsync<PostgresException>()).Which.SqlState.Should().Be(PostgresErrorCodes.InsufficientPrivilege);
    }

    [Fact]
    public async Task Grant_api_role_names_a_missing_login_instead_of_failing_obscurely()
    {
        var server = await PostgresServer.SharedAsync();
        var owner = await server.CreateOwnedDatabaseAsync();
        await DatabaseMigrator.MigrateAsync(owner, applyDemoData: false, NullLogger.Instance);
        var adminOnDatabase = new NpgsqlConnectionStringBuilder(server.AdminConnectionString) { Database = new NpgsqlConnectionStringBuilder(owner).Database }.ConnectionString;

        var grant = () => DatabaseMigrator.GrantApiRoleAsync(adminOnDatabase, "no_such_login", NullLogger.Instance);

        (await grant.Should().ThrowAsync<InvalidOperationException>()).WithMessage("*no login 'no_such_login'*CREATE ROLE*");
    }
}
