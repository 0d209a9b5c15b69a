using FirmwareManager.Api.Database;

namespace FirmwareManager.Api.Commands;

/// <summary>
/// <c>dotnet FirmwareManager.Api.dll grant-api-role LOGIN</c>: the DBA step of a least-privileged install. As the
/// login in <c>ConnectionStrings__FirmwareManagerMigrations</c> (else <c>ConnectionStrings__FirmwareManager</c>),
/// which must be allowed to create roles (CREATEROLE, or a superuser): creates the group role
/// <c>firmware_manager_api</c> when it does not exist, applies its grants, and makes LOGIN (which must exist) a
/// member. Idempotent: run again, it changes nothing.
/// </summary>
public static class GrantApiRole
{
    public const string Command = "grant-api-role";

    public static async Task<int> RunAsync(string[] args)
    {
        if (args is not [Command, var login] || string.IsNullOrWhiteSpace(login) || login.StartsWith('-'))
        {
            await Console.Error.WriteLineAsync($"usage: {Command} <login>");
            return 2;
        }

        try
        {
            var connectionString = CreateProject.ReadConfiguration().GetMigrationsConnectionString();
            await DatabaseMigrator.GrantApiRoleAsync(connectionString, login, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
            Console.WriteLine($"{login} is a member of firmware_manager_api, whose grants are in place. Run the service as {login} " +
                              "(ConnectionStrings__FirmwareManager) and the migrations as the schema's owner (ConnectionStrings__FirmwareManagerMigrations).");
            return 0;
        }
        catch (Exception e) when (StartupFailure.Explain(e) is { } reason)
        {
            await Console.Error.WriteLineAsync($"{Command} failed: {reason}");
            return 1;
        }
        catch (Exception e) when (e is InvalidOperationException or Npgsql.PostgresException)
        {
            await Console.Error.WriteLineAsync($"{Command} failed: {e.Message}");
            return 1;
        }
    }
}
