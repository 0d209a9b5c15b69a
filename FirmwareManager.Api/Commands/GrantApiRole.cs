using System.CommandLine;
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
    public const string Name = "grant-api-role";

    public static Command Definition()
    {
        var login = new Argument<string>("login") { Description = "The login the service runs as (it must exist)." };
        login.Validators.Add(r => CreateProject.NotBlank(r, "login"));
        var command = new Command(Name, "(DBA) Create the firmware_manager_api role if needed, apply its grants, and make the login a member.") { login };
        command.SetAction((parsed, cancellationToken) => RunAsync(parsed.GetRequiredValue(login), cancellationToken));
        return command;
    }

    private static async Task<int> RunAsync(string login, CancellationToken cancellationToken)
    {
        try
        {
            var connectionString = CreateProject.ReadConfiguration().GetMigrationsConnectionString();
            await DatabaseMigrator.GrantApiRoleAsync(connectionString, login, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance, cancellationToken);
            Console.WriteLine($"{login} is a member of firmware_manager_api, whose grants are in place. Run the service as {login} " +
                              "(ConnectionStrings__FirmwareManager) and the migrations as the schema's owner (ConnectionStrings__FirmwareManagerMigrations).");
            return 0;
        }
        catch (Exception e) when (StartupFailure.Explain(e) is { } reason)
        {
            await Console.Error.WriteLineAsync($"{Name} failed: {reason}");
            return 1;
        }
        catch (Exception e) when (e is InvalidOperationException or Npgsql.PostgresException)
        {
            await Console.Error.WriteLineAsync($"{Name} failed: {e.Message}");
            return 1;
        }
    }
}
