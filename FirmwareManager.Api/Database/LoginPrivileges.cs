using Dapper;
using Npgsql;

namespace FirmwareManager.Api.Database;

/// <summary>
/// At startup in Production: a warning when the service's own login is a superuser or owns the schema, since then
/// a bug or an injection could change the schema or every row, not only the rows the API role may.
/// </summary>
public static class LoginPrivileges
{
    private const string PrivilegesSql = """
        SELECT r.rolsuper AS Superuser,
               pg_has_role(current_user, n.nspowner, 'USAGE')
               OR EXISTS (
                   SELECT 1
                   FROM pg_class AS c
                   WHERE c.relnamespace = n.oid
                     AND pg_has_role(current_user, c.relowner, 'USAGE')
               ) AS OwnsSchema
        FROM pg_roles AS r
        CROSS JOIN pg_namespace AS n
        WHERE r.rolname = current_user
          AND n.nspname = 'public'
        """;

    private sealed record Privileges(bool Superuser, bool OwnsSchema);

    public static async Task WarnWhenPrivilegedAsync(NpgsqlDataSource dataSource, IHostEnvironment environment, ILogger logger)
    {
        if (!environment.IsProduction())
        {
            return;
        }

        await using var connection = await dataSource.OpenConnectionAsync();
        var privileges = await connection.QuerySingleAsync<Privileges>(PrivilegesSql);
        if (privileges.Superuser || privileges.OwnsSchema)
        {
            logger.LogWarning(
                "The service's database login is {What}: run it as a login in the firmware_manager_api role, with the migrations as the " +
                "owner (ConnectionStrings__FirmwareManagerMigrations; grant-api-role, docs/reliability.md \"Least privilege\")",
                privileges.Superuser ? "a superuser" : "the owner of the schema");
        }
    }
}
