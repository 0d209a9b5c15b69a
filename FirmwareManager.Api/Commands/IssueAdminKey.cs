using System.CommandLine;
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
    public const string Name = "issue-admin-key";

    public static Command Definition()
    {
        var project = new Argument<string>("project-name") { Description = "The project's name." };
        project.Validators.Add(r => CreateProject.NotBlank(r, "project-name"));
        var admin = new Option<string>("--admin") { Description = "The email to make an admin, with a new key.", Required = true };
        admin.Validators.Add(CreateProject.Email);
        var command = new Command(Name, "Make the email an admin of the project with a new key, printed once (recovery, audited as the command's).")
        {
            project,
            admin,
        };
        command.SetAction((parsed, cancellationToken) => RunAsync(parsed.GetRequiredValue(project), parsed.GetRequiredValue(admin), cancellationToken));
        return command;
    }

    private static async Task<int> RunAsync(string project, string email, CancellationToken cancellationToken)
    {
        try
        {
            var issued = await IssueAsync(CreateProject.ReadConfiguration().GetMigrationsConnectionString(), project, email, cancellationToken);
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
            await Console.Error.WriteLineAsync($"{Name} failed: {reason}");
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
