using System.Net.Sockets;
using FirmwareManager.Api.Database;
using Microsoft.Extensions.Options;
using Npgsql;

namespace FirmwareManager.Api;

/// <summary>
/// The failures an operator can meet when starting the service (no database, a wrong password, a bad setting, a
/// migration that fails, a port in use), each said as one line: the cause and what to do. Anything else is a bug
/// and keeps its stack trace.
/// </summary>
public static partial class StartupFailure
{
    // The binder's message for a value of the wrong type: "Failed to convert configuration value 'two' at 'A:B' to type ...".
    [System.Text.RegularExpressions.GeneratedRegex("^Failed to convert configuration value .* at '([^']+)'")]
    private static partial System.Text.RegularExpressions.Regex ConfigurationKey();

    private const string CheckConnection =
        "Check ConnectionStrings__FirmwareManager (and ConnectionStrings__FirmwareManagerMigrations when set) and that PostgreSQL is running.";

    /// <summary>The one-line explanation of an expected startup failure; null for anything unexpected.</summary>
    public static string? Explain(Exception exception) => exception switch
    {
        StartupStepFailedException { InnerException: { } inner } e when StartupSteps.IsConflict(inner) =>
            $"{e.Step}: {StartupSteps.Attempts} tries met a concurrent transaction ({Innermost(inner).Message}): another instance's startup or an " +
            "operator's session held its locks in another order. Start again; nothing was left half-done.",
        StartupStepFailedException { InnerException: { } inner } e when Explain(inner) is { } reason => $"{e.Step}: {reason}",
        OptionsValidationException e => $"A setting is not valid: {string.Join(" ", e.Failures)}",
        InvalidOperationException e when ConfigurationKey().Match(e.Message) is { Success: true } key =>
            $"A setting is not valid: {key.Groups[1].Value} (environment variable {key.Groups[1].Value.Replace(":", "__", StringComparison.Ordinal)}): {e.Message}",
        MigrationFailedException { InnerException: PostgresException { SqlState: PostgresErrorCodes.InsufficientPrivilege } } e =>
            $"{e.Message} The migrations' login lacks a privilege: run them as the schema's owner " +
            "(ConnectionStrings__FirmwareManagerMigrations); see docs/reliability.md, \"Least privilege\".",
        MigrationFailedException e => $"{e.Message} That script's transaction was rolled back; fix the cause and start again.",
        PostgresException { SqlState: "28P01" or "28000" } e => $"The database refused the login: {e.MessageText}. {CheckConnection}",
        PostgresException { SqlState: "3D000" } e => $"The database does not exist: {e.MessageText}. Create it, or {CheckConnection}",
        NpgsqlException { InnerException: SocketException or TimeoutException } e => $"Cannot reach the database: {e.Message}. {CheckConnection}",
        NpgsqlException { IsTransient: true } e when ConnectionLost(e) => $"Cannot reach the database: {e.Message}. {CheckConnection}",
        IOException { InnerException: { } inner } when inner.GetType().Name == "AddressInUseException" =>
            $"{exception.Message} Another process listens there: stop it, or set ASPNETCORE_URLS to another address.",
        _ => null,
    };

    // A deadlock or serialization failure (40P01, 40001) is "transient" to Npgsql too, but came from a database
    // that answered: only a failure of the connection itself, or the server going away or refusing sessions, is.
    private static bool ConnectionLost(NpgsqlException e) => e is not PostgresException { SqlState: var state }
        || state.StartsWith("08", StringComparison.Ordinal) || state.StartsWith("57P", StringComparison.Ordinal) || state == "53300";

    private static Exception Innermost(Exception e) => e.InnerException is null ? e : Innermost(e.InnerException);
}

/// <summary>A startup step failed; its message names the step, its inner exception says why.</summary>
public sealed class StartupStepFailedException(string step, Exception inner) : Exception($"{step}: {inner.Message}", inner)
{
    public string Step { get; } = step;
}

/// <summary>
/// The steps a starting instance takes on the database before it serves (migrations with grants and demo data, the
/// partitions ahead, the check of the login), each named, so that a failure says which one failed. Two instances
/// starting together take the DDL steps in turn (the migrations' lock), and each step is safe to repeat: one that
/// meets the other's transactions in another order (a deadlock, 40P01; a serialization failure, 40001) is tried
/// again, from its start, a few times. A step that failed inside another is not tried again by the outer one.
/// </summary>
public static class StartupSteps
{
    public const int Attempts = 5;

    public static async Task RunAsync(string step, Func<Task> action)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await action();
                return;
            }
            catch (Exception e) when (attempt < Attempts && IsConflict(e) && e is not StartupStepFailedException)
            {
                Serilog.Log.Warning("{Step} met a concurrent transaction ({Reason}); trying again", step, e.Message);
                await Task.Delay(TimeSpan.FromMilliseconds(Random.Shared.Next(100, 400) * attempt));
            }
            catch (Exception e) when (e is not StartupStepFailedException and not OptionsValidationException)
            {
                throw new StartupStepFailedException(step, e);
            }
        }
    }

    /// <summary>A deadlock or serialization failure, however wrapped (DbUp wraps a script's error).</summary>
    public static bool IsConflict(Exception exception) => exception switch
    {
        PostgresException e when Conflicts.IsConflict(e) => true,
        _ => exception.InnerException is not null && IsConflict(exception.InnerException),
    };
}
