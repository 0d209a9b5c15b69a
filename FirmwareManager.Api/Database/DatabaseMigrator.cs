using System.Reflection;
using DbUp;
using DbUp.Engine;
using DbUp.Helpers;
using Npgsql;

namespace FirmwareManager.Api.Database;

/// <summary>
/// Applies the schema scripts (migrations/*.sql, embedded in this assembly) with DbUp, one transaction per
/// script, journaled in <c>schemaversions</c>; then, when asked, the demo data scripts, which are written to be
/// applied again and so are not journaled. Instances starting together take turns through an advisory lock.
/// </summary>
public static class DatabaseMigrator
{
    // Any constant will do, as long as nothing else in the database uses it: "FirmwareM" in ASCII.
    private const long UpgradeLockKey = 0x4669726d776172;

    private const string TakeUpgradeLock = "SELECT pg_advisory_lock(@key)";
    private const string ReleaseUpgradeLock = "SELECT pg_advisory_unlock(@key)";

    private static readonly Assembly Scripts = typeof(DatabaseMigrator).Assembly;

    public static async Task MigrateAsync(string connectionString, bool applyDemoData, ILogger logger, CancellationToken cancellationToken = default)
    {
        // The lock lives as long as this session: if the process dies mid-upgrade, PostgreSQL releases it.
        await using var lockConnection = new NpgsqlConnection(connectionString);
        await lockConnection.OpenAsync(cancellationToken);
        await using (var take = new NpgsqlCommand(TakeUpgradeLock, lockConnection))
        {
            take.Parameters.AddWithValue("key", UpgradeLockKey);
            await take.ExecuteNonQueryAsync(cancellationToken);
        }

        try
        {
            Run(DeployChanges.To.PostgresqlDatabase(connectionString)
                .WithScriptsEmbeddedInAssembly(Scripts, name => name.StartsWith("migrations/", StringComparison.Ordinal)),
                "schema", logger);

            Run(Grants(connectionString), "grants", logger);

            if (applyDemoData)
            {
                Run(DeployChanges.To.PostgresqlDatabase(connectionString)
                    .WithScriptsEmbeddedInAssembly(Scripts, name => name.StartsWith("demo/", StringComparison.Ordinal))
                    .JournalTo(new NullJournal()),
                    "demo data", logger);
            }
        }
        finally
        {
            await using var release = new NpgsqlCommand(ReleaseUpgradeLock, lockConnection);
            release.Parameters.AddWithValue("key", UpgradeLockKey);
            await release.ExecuteNonQueryAsync(CancellationToken.None);
        }
    }

    /// <summary>migrations/grants/*.sql: the API role's privileges, applied again at every start (they are written to be).</summary>
    private static DbUp.Builder.UpgradeEngineBuilder Grants(string connectionString) =>
        DeployChanges.To.PostgresqlDatabase(connectionString)
            .WithScriptsEmbeddedInAssembly(Scripts, name => name.StartsWith("grants/", StringComparison.Ordinal))
            .JournalTo(new NullJournal());

    /// <summary>
    /// What <c>grant-api-role</c> does, as a login that may create roles: the API role when it does not exist,
    /// its grants, and the role for <paramref name="login"/>. Run again, it changes nothing.
    /// </summary>
    public static async Task GrantApiRoleAsync(string connectionString, string login, ILogger logger, CancellationToken cancellationToken = default)
    {
        await using (var connection = new NpgsqlConnection(connectionString))
        {
            await connection.OpenAsync(cancellationToken);
            await using var create = new NpgsqlCommand(CreateApiRoleSql, connection);
            await create.ExecuteNonQueryAsync(cancellationToken);
            await using var exists = new NpgsqlCommand(LoginExistsSql, connection);
            exists.Parameters.AddWithValue("login", login);
            if (await exists.ExecuteScalarAsync(cancellationToken) is not true)
            {
                throw new InvalidOperationException(
                    $"There is no login '{login}'. Create it first, e.g. CREATE ROLE \"{login}\" LOGIN PASSWORD '...'; then run grant-api-role again.");
            }

            // An identifier, not a value: quoted by the server, never by string building here.
            await using var quote = new NpgsqlCommand("SELECT quote_ident(@login)", connection);
            quote.Parameters.AddWithValue("login", login);
            var quoted = (string)(await quote.ExecuteScalarAsync(cancellationToken))!;
            await using var grant = new NpgsqlCommand($"GRANT firmware_manager_api TO {quoted}", connection);
            await grant.ExecuteNonQueryAsync(cancellationToken);
        }

        Run(Grants(connectionString), "grants", logger);
    }

    private const string CreateApiRoleSql = """
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'firmware_manager_api') THEN
                CREATE ROLE firmware_manager_api NOLOGIN;
            END IF;
        END
        $$
        """;

    private const string LoginExistsSql = """
        SELECT EXISTS (
            SELECT 1
            FROM pg_roles
            WHERE rolname = @login
              AND rolcanlogin
        )
        """;

    private static void Run(DbUp.Builder.UpgradeEngineBuilder builder, string what, ILogger logger)
    {
        var result = builder
            .WithTransactionPerScript()
            .WithVariablesDisabled()
            .LogTo(new MigrationLog(logger))
            .Build()
            .PerformUpgrade();

        if (!result.Successful)
        {
            throw new MigrationFailedException(
                $"Applying the {what} scripts failed at {result.ErrorScript?.Name ?? "(unknown script)"}: {result.Error.Message}",
                result.Error);
        }

        logger.LogInformation("Database {What} is up to date ({Count} scripts applied now)", what, result.Scripts.Count());
    }
}

/// <summary>
/// DbUp's progress through the service's logger. A failing script is reported once, by the startup's one-line
/// explanation (<see cref="MigrationFailedException"/>): DbUp's own error lines and stack trace go to Debug.
/// </summary>
internal sealed class MigrationLog(ILogger logger) : DbUp.Engine.Output.IUpgradeLog
{
    public void LogTrace(string format, params object[] args) => Write(LogLevel.Trace, format, args);

    public void LogDebug(string format, params object[] args) => Write(LogLevel.Debug, format, args);

    public void LogInformation(string format, params object[] args) => Write(LogLevel.Information, format, args);

    public void LogWarning(string format, params object[] args) => Write(LogLevel.Warning, format, args);

    public void LogError(string format, params object[] args) => Write(LogLevel.Debug, format, args);

    public void LogError(Exception ex, string format, params object[] args) => Write(LogLevel.Debug, format, args);

    private void Write(LogLevel level, string format, object[] args)
    {
        if (logger.IsEnabled(level))
        {
            logger.Log(level, "{Message}", args.Length == 0 ? format : string.Format(System.Globalization.CultureInfo.InvariantCulture, format, args));
        }
    }
}

public sealed class MigrationFailedException(string message, Exception inner) : Exception(message, inner);
