using FirmwareManager.Api.Database;
using FirmwareManager.Api.Keys;
using FirmwareManager.Api.Members;
using Microsoft.Extensions.Logging.Abstractions;

namespace FirmwareManager.Api.Commands;

/// <summary>
/// <c>dotnet FirmwareManager.Api.dll create-project NAME --admin EMAIL</c>: the first step of a real deployment.
/// Needs no running server: applies the migrations if needed, creates the project and its first admin, and prints
/// the admin's API key once. Reads the connection strings as the service does (appsettings.json,
/// ConnectionStrings__FirmwareManagerMigrations when set, else ConnectionStrings__FirmwareManager): it runs as the
/// schema owner.
/// </summary>
public static class CreateProject
{
    public const string Command = "create-project";

    public static async Task<int> RunAsync(string[] args)
    {
        if (args is not [Command, var name, "--admin", var email] || string.IsNullOrWhiteSpace(name) || !email.Contains('@', StringComparison.Ordinal))
        {
            await Console.Error.WriteLineAsync($"usage: {Command} <project-name> --admin <email>");
            return 2;
        }

        try
        {
            var created = await CreateProjectAsync(ReadConfiguration().GetMigrationsConnectionString(), name, email, CancellationToken.None);
            if (created is null)
            {
                await Console.Error.WriteLineAsync($"A project named '{name}' already exists; nothing was changed.");
                return 1;
            }

            var (projectId, admin, key) = created.Value;
            Console.WriteLine($"Created project '{name}' (id {projectId}) with admin {admin.Email} (member {admin.Id}).");
            Console.WriteLine("The admin's API key, shown this once; store it now:");
            Console.WriteLine(key.Key);
            return 0;
        }
        catch (Exception e) when (StartupFailure.Explain(e) is { } reason)
        {
            await Console.Error.WriteLineAsync($"{Command} failed: {reason}");
            return 1;
        }
    }

    /// <summary>The settings as the service reads them: appsettings.json beside the assembly, then the environment.</summary>
    public static IConfiguration ReadConfiguration() => new ConfigurationBuilder()
        .AddJsonFile(Path.Combine(AppContext.BaseDirectory, "appsettings.json"), optional: true)
        .AddEnvironmentVariables()
        .Build();

    /// <summary>Migrates the database and creates the project with its admin; null when the name is taken.</summary>
    public static async Task<(long ProjectId, Member Admin, NewKeyResponse Key)?> CreateProjectAsync(
        string connectionString, string name, string adminEmail, CancellationToken cancellationToken)
    {
        await DatabaseMigrator.MigrateAsync(connectionString, applyDemoData: false, NullLogger.Instance, cancellationToken);
        await using var dataSource = Npgsql.NpgsqlDataSource.Create(connectionString);
        return await new Memberships(dataSource).CreateProjectAsync(name.Trim(), adminEmail.Trim().ToLowerInvariant(), cancellationToken);
    }
}
