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
        NpgsqlException { IsTransient: true } e => $"Cannot reach the database: {e.Message}. {CheckConnection}",
        IOException { InnerException: { } inner } when inner.GetType().Name == "AddressInUseException" =>
            $"{exception.Message} Another process listens there: stop it, or set ASPNETCORE_URLS to another address.",
        _ => null,
    };
}
