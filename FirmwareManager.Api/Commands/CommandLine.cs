using System.CommandLine;

namespace FirmwareManager.Api.Commands;

/// <summary>
/// The operator commands (<c>dotnet FirmwareManager.Api.dll COMMAND ...</c>), run instead of the web service, each with
/// <c>--help</c> (System.CommandLine). A first argument that is neither an option (<c>--urls=...</c>) nor a setting
/// (<c>Key=value</c>) names a command: an unknown one is an error listing the commands, never a silent start of the
/// service. <c>--help</c> alone lists them.
/// </summary>
public static class CommandLine
{
    /// <summary>Exit code of a command given wrong arguments (its usage is printed).</summary>
    public const int Usage = 2;

    private static RootCommand Commands() =>
        new("FirmwareManager. Without a command the web service starts; its settings go as --Key=value.")
        {
            CreateProject.Definition(),
            IssueAdminKey.Definition(),
            GrantApiRole.Definition(),
            VerifyProjections.Definition(),
            HealthCheck.Definition(),
        };

    /// <summary>Whether the arguments name a command (or ask for the list) rather than settings for the web service.</summary>
    public static bool IsCommand(string[] args) =>
        args is ["--help" or "-h" or "-?", ..] ||
        (args is [var first, ..] && first.Length > 0 && !first.StartsWith('-') && !first.StartsWith('/') && !first.Contains('=', StringComparison.Ordinal));

    /// <summary>Runs the command; its exit code (<see cref="Usage"/> for wrong arguments, with the reasons and the usage).</summary>
    public static async Task<int> RunAsync(string[] args, TextWriter? output = null, TextWriter? error = null)
    {
        var configuration = new InvocationConfiguration { Output = output ?? Console.Out, Error = error ?? Console.Error };
        var parsed = Commands().Parse(args);
        if (parsed.Errors.Count == 0)
        {
            return await parsed.InvokeAsync(configuration);
        }

        if (parsed.CommandResult.Command is RootCommand)
        {
            await configuration.Error.WriteLineAsync($"Unknown command '{args[0]}'.");
        }
        else
        {
            foreach (var reason in parsed.Errors)
            {
                await configuration.Error.WriteLineAsync(reason.Message);
            }
        }

        await configuration.Error.WriteLineAsync();
        await Commands().Parse([.. CommandPath(parsed), "--help"]).InvokeAsync(new InvocationConfiguration { Output = configuration.Error });
        return Usage;
    }

    // The command the arguments reached (none: the list of commands), to show its usage.
    private static string[] CommandPath(ParseResult parsed) =>
        parsed.CommandResult.Command is RootCommand ? [] : [parsed.CommandResult.Command.Name];
}
