using System.CommandLine;
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
    public const string Name = "create-project";

    public static Command Definition()
    {
        var project = new Argument<string>("project-name") { Description = "The project's name (unique)." };
        project.Validators.Add(r => NotBlank(r, "project-name"));
        var admin = new Option<string>("--admin") { Description = "The first admin's email.", Required = true };
        admin.Validators.Add(Email);
        var command = new Command(Name, "Create a project and its first admin; prints the admin's key once. Applies the migrations first, as the schema's owner.")
        {
            project,
            admin,
        };
        command.SetAction((parsed, cancellationToken) => RunAsync(parsed.GetRequiredValue(project), parsed.GetRequiredValue(admin), cancellationToken));
        return command;
    }

    private static async Task<int> RunAsync(string name, string email, CancellationToken cancellationToken)
    {
        try
        {
            var created = await CreateProjectAsync(ReadConfiguration().GetMigrationsConnectionString(), name, email, cancellationToken);
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
            await Console.Error.WriteLineAsync($"{Name} failed: {reason}");
            return 1;
        }
    }

    /// <summary>A value that is not empty or blank.</summary>
    internal static void NotBlank(System.CommandLine.Parsing.ArgumentResult result, string what)
    {
        if (string.IsNullOrWhiteSpace(result.GetValueOrDefault<string>()))
        {
            result.AddError($"{what} must not be empty.");
        }
    }

    /// <summary>An email address, as far as a command can tell: something with an @.</summary>
    internal static void Email(System.CommandLine.Parsing.OptionResult result)
    {
        if (result.GetValueOrDefault<string>() is not { } email || !email.Contains('@', StringComparison.Ordinal))
        {
            result.AddError("--admin must be an email address.");
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
