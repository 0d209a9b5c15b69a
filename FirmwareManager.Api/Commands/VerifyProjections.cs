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
    public const string Command = "verify-projections";

    public static async Task<int> RunAsync(string[] args)
    {
        long? projectId = null;
        if (args is [Command, var id])
        {
            if (!long.TryParse(id, NumberStyles.None, CultureInfo.InvariantCulture, out var parsed) || parsed < 1)
            {
                await Console.Error.WriteLineAsync($"usage: {Command} [project-id]");
                return 2;
            }

            projectId = parsed;
        }
        else if (args is not [Command])
        {
            await Console.Error.WriteLineAsync($"usage: {Command} [project-id]");
            return 2;
        }

        try
        {
            await using var dataSource = Npgsql.NpgsqlDataSource.Create(CreateProject.ReadConfiguration().GetMigrationsConnectionString());
            var differences = await new ProjectionRecount(dataSource).DifferencesAsync(projectId, CancellationToken.None);
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
            await Console.Error.WriteLineAsync($"{Command} failed: {reason}");
            return 1;
        }
    }
}
