using FirmwareManager.Api.Database;
using FirmwareManager.Api.Keys;
using FirmwareManager.Api.Members;
using Microsoft.Extensions.Logging.Abstractions;

namespace FirmwareManager.Api.Commands;

/// <summary>
/// <c>dotnet FirmwareManager.Api.dll issue-admin-key PROJECT --admin EMAIL</c>: the way back into a project whose
/// admins have lost every key, for an operator with database access. Like <c>create-project</c> it applies the
/// migrations if needed and runs as the schema owner; it makes the email an active admin of the project (adding,
/// promoting or restoring it), prints a new key once, and audits both as the command's.
/// </summary>
public static class IssueAdminKey
{
    public const string Command = "issue-admin-key";

    public static async Task<int> RunAsync(string[] args)
    {
        if (args is not [Command, var project, "--admin", var email] || string.IsNullOrWhiteSpace(project) || !email.Contains('@', StringComparison.Ordinal))
        {
            await Console.Error.WriteLineAsync($"usage: {Command} <project-name> --admin <email>");
            return 2;
        }

        try
        {
            var issued = await IssueAsync(CreateProject.ReadConfiguration().GetMigrationsConnectionString(), project, email, CancellationToken.None);
            if (issued is null)
            {
                await Console.Error.WriteLineAsync($"There is no project named '{project}'; nothing was changed.");
                return 1;
            }

            var (admin, key) = issued.Value;
            Console.WriteLine($"{admin.Email} (member {admin.Id}) is an admin of '{project}' with a new key (prefix {key.Prefix}); audited as 'cli'.");
            Console.WriteLine("The key, shown this once; store it now:");
            Console.WriteLine(key.Key);
            return 0;
        }
        catch (Exception e) when (StartupFailure.Explain(e) is { } reason)
        {
            await Console.Error.WriteLineAsync($"{Command} failed: {reason}");
            return 1;
        }
    }

    /// <summary>Migrates the database, then makes the email an admin of the project with a new key; null when there is no such project.</summary>
    public static async Task<(Member Admin, NewKeyResponse Key)?> IssueAsync(
        string connectionString, string project, string email, CancellationToken cancellationToken)
    {
        await DatabaseMigrator.MigrateAsync(connectionString, applyDemoData: false, NullLogger.Instance, cancellationToken);
        await using var dataSource = Npgsql.NpgsqlDataSource.Create(connectionString);
        return await new Memberships(dataSource).IssueAdminKeyAsync(project.Trim(), email.Trim().ToLowerInvariant(), cancellationToken);
    }
}
