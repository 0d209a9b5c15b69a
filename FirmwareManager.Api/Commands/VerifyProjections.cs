using System.CommandLine;
using System.Globalization;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Projections;

namespace FirmwareManager.Api.Commands;

/// <summary>
/// <c>dotnet FirmwareManager.Api.dll verify-projections [project-id]</c>: recounts every projected figure of the project
/// (or of every project) and prints each difference (<see cref="ProjectionRecount"/>); exits 0 only when there is none.
/// Reads the connection strings as the service does; reads only. Run it while the projection has caught up (events
/// still waiting are printed as a difference).
/// </summary>
public static class VerifyProjections
{
    public const string Name = "verify-projections";

    public static Command Definition()
    {
        var project = new Argument<long?>("project-id") { Description = "The project to verify (every project when left out).", Arity = ArgumentArity.ZeroOrOne };
        project.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<long?>() is < 1)
            {
                r.AddError("project-id must be a whole number from 1.");
            }
        });
        var command = new Command(Name, "Recount every projected figure from the events; print each difference, exit 0 only when there is none.") { project };
        command.SetAction((parsed, cancellationToken) => RunAsync(parsed.GetValue(project), cancellationToken));
        return command;
    }

    private static async Task<int> RunAsync(long? projectId, CancellationToken cancellationToken)
    {
        try
        {
            await using var dataSource = Npgsql.NpgsqlDataSource.Create(CreateProject.ReadConfiguration().GetMigrationsConnectionString());
            var differences = await new ProjectionRecount(dataSource).DifferencesAsync(projectId, cancellationToken);
            foreach (var d in differences)
            {
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"project {d.ProjectId}: {d.Figure} {d.Key}: stored {d.Stored?.ToString(CultureInfo.InvariantCulture) ?? "-"}, recounted {d.Recounted?.ToString(CultureInfo.InvariantCulture) ?? "-"}"));
            }

            Console.WriteLine(differences.Count == 0 ? "Every projected figure matches its recount." : $"{differences.Count} differences.");
            return differences.Count == 0 ? 0 : 1;
        }
        catch (Exception e) when (StartupFailure.Explain(e) is { } reason)
        {
            await Console.Error.WriteLineAsync($"{Name} failed: {reason}");
            return 1;
        }
    }
}
