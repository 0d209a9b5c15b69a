using FirmwareManager.Api.Observability;

namespace FirmwareManager.Api.Commands;

/// <summary>
/// The operator commands (<c>dotnet FirmwareManager.Api.dll COMMAND ...</c>), run instead of the web service. A
/// first argument that is neither an option (<c>--urls=...</c>) nor a setting (<c>Key=value</c>) names a command:
/// an unknown one is an error listing the commands, never a silent start of the service.
/// </summary>
public static class CommandLine
{
    private sealed record Command(string Name, string Usage, Func<string[], Task<int>> RunAsync);

    private static readonly Command[] Commands =
    [
        new(CreateProject.Command, $"{CreateProject.Command} <project-name> --admin <email>   create a project and its first admin; prints the admin's key once", CreateProject.RunAsync),
        new(IssueAdminKey.Command, $"{IssueAdminKey.Command} <project-name> --admin <email>   make the email an admin of the project with a new key, printed once (recovery)", IssueAdminKey.RunAsync),
        new(GrantApiRole.Command, $"{GrantApiRole.Command} <login>   (DBA) create the firmware_manager_api role if needed, apply its grants, make the login a member", GrantApiRole.RunAsync),
        new(VerifyProjections.Command, $"{VerifyProjections.Command} [project-id]   recount every projected figure from the events; print each difference, exit 0 only when there is none", VerifyProjections.RunAsync),
        new(HealthCheck.Command, $"{HealthCheck.Command} [url]   exit 0 when the running service's /health answers 200", HealthCheck.RunAsync),
    ];

    /// <summary>Whether the arguments name a command rather than settings for the web service.</summary>
    public static bool IsCommand(string[] args) =>
        args is [var first, ..] && first.Length > 0 && !first.StartsWith('-') && !first.StartsWith('/') && !first.Contains('=', StringComparison.Ordinal);

    public static async Task<int> RunAsync(string[] args)
    {
        var command = Commands.FirstOrDefault(c => c.Name == args[0]);
        if (command is not null)
        {
            return await command.RunAsync(args);
        }

        await Console.Error.WriteLineAsync($"Unknown command '{args[0]}'. The commands are:");
        foreach (var known in Commands)
        {
            await Console.Error.WriteLineAsync($"  {known.Usage}");
        }

        await Console.Error.WriteLineAsync("Without a command the web service starts; settings go as --Key=value.");
        return 2;
    }
}
