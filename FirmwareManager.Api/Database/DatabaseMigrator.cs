using System.Reflection;
using DbUp;
using DbUp.Engine;
using DbUp.Helpers;
using Npgsql;

namespace FirmwareManager.Api.Database;

/// <summary>
/// Applies the schema scripts (migrations/*.sql, embedded in this assembly) with DbUp, one transaction per
/// script (or none, for a script named <c>*.no-transaction.sql</c>), journaled in <c>schemaversions</c>; then, when asked, the demo data scripts, which are written to be
/// applied again and so are not journaled. Instances starting together take turns through an advisory lock.
/// </summary>
public static class DatabaseMigrator
{
    // Any constant will do, as long as nothing else in the database uses it: "FirmwareM" in ASCII.
    private const long UpgradeLockKey = 0x4669726d776172;

    private const string TryUpgradeLock = "SELECT pg_try_advisory_lock(@key)";
    private const string ReleaseUpgradeLock = "SELECT pg_advisory_unlock(@key)";

    private static readonly Assembly Scripts = typeof(DatabaseMigrator).Assembly;

    /// <summary>
    /// Applies the schema scripts not applied yet (all of them, or only those numbered up to <paramref name="throughScript"/>,
    /// for tests of a migration on a database of an older schema), the grants, and the demo data when asked.
    /// </summary>
    public static Task MigrateAsync(string connectionString, bool applyDemoData, ILogger logger, CancellationToken cancellationToken = default) =>
        MigrateAsync(connectionString, applyDemoData, logger, throughScript: null, cancellationToken);

    /// <inheritdoc cref="MigrateAsync(string, bool, ILogger, CancellationToken)"/>
    public static Task MigrateAsync(
        string connectionString, bool applyDemoData, ILogger logger, int? throughScript, CancellationToken cancellationToken = default) =>
        MigrateAsync(connectionString, applyDemoData, logger, throughScript, thenUnderTheLock: null, cancellationToken);

    /// <summary>
    /// As <see cref="MigrateAsync(string, bool, ILogger, CancellationToken)"/>, then <paramref name="thenUnderTheLock"/>
    /// before the lock is released: startup's other DDL, so that it never runs beside another instance's scripts.
    /// </summary>
    public static async Task MigrateAsync(
        string connectionString, bool applyDemoData, ILogger logger, int? throughScript, Func<Task>? thenUnderTheLock,
        CancellationToken cancellationToken = default)
    {
        // The lock lives as long as this session: if the process dies mid-upgrade, PostgreSQL releases it.
        await using var lockConnection = new NpgsqlConnection(connectionString);
        await lockConnection.OpenAsync(cancellationToken);
        // Tried again every 100 ms rather than waited for in one statement: a waiting statement holds a snapshot,
        // and CREATE INDEX CONCURRENTLY in the holder's scripts waits for every older snapshot to end: for ever.
        await using (var take = new NpgsqlCommand(TryUpgradeLock, lockConnection))
        {
            take.Parameters.AddWithValue("key", UpgradeLockKey);
            while (await take.ExecuteScalarAsync(cancellationToken) is not true)
            {
                await Task.Delay(100, cancellationToken);
            }
        }

        try
        {
            foreach (var (scripts, transaction) in SchemaRuns())
            {
                var builder = DeployChanges.To.PostgresqlDatabase(connectionString)
                    .WithScriptsEmbeddedInAssembly(Scripts, name => scripts.Contains(name) && (throughScript is null || Number(name) <= throughScript));
                Run(transaction ? builder.WithTransactionPerScript() : builder.WithoutTransaction(), "schema", logger);
            }

            // The grants name the current schema's tables and columns: not for an older one.
            if (throughScript is null)
            {
                Run(Grants(connectionString).WithTransactionPerScript(), "grants", logger);
            }

            if (applyDemoData)
            {
                Run(DeployChanges.To.PostgresqlDatabase(connectionString)
                    .WithScriptsEmbeddedInAssembly(Scripts, name => name.StartsWith("demo/", StringComparison.Ordinal)
                        && (throughScript is null || DemoNumber(name) <= throughScript))
                    .JournalTo(new NullJournal())
                    .WithTransactionPerScript(),
                    "demo data", logger);
            }

            if (thenUnderTheLock is not null)
            {
                await thenUnderTheLock();
            }
        }
        finally
        {
            await using var release = new NpgsqlCommand(ReleaseUpgradeLock, lockConnection);
            release.Parameters.AddWithValue("key", UpgradeLockKey);
            await release.ExecuteNonQueryAsync(CancellationToken.None);
        }
    }

    // migrations/0019_name.sql: 19.
    // A demo script is numbered by the schema script it needs (demo/0027_... needs 0027).
    private static int DemoNumber(string name) => int.Parse(name.AsSpan("demo/".Length, 4), System.Globalization.CultureInfo.InvariantCulture);

    private static int Number(string name) => int.Parse(name.AsSpan("migrations/".Length, 4), System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>The suffix of a schema script that runs outside a transaction.</summary>
    public const string NoTransactionSuffix = ".no-transaction.sql";

    /// <summary>
    /// migrations/*.sql in order, in runs of scripts that each run in a transaction of their own, or outside one
    /// (<see cref="NoTransactionSuffix"/>: <c>CREATE INDEX CONCURRENTLY</c> and the like, which PostgreSQL refuses
    /// in a transaction). Every run shares the journal, so each script is applied once, in order, whatever its run.
    /// </summary>
    internal static IEnumerable<(HashSet<string> Scripts, bool Transaction)> SchemaRuns()
    {
        var names = Scripts.GetManifestResourceNames()
            .Where(name => name.StartsWith("migrations/", StringComparison.Ordinal))
            .Order(StringComparer.Ordinal);
        HashSet<string>? run = null;
        var transaction = true;
        foreach (var name in names)
        {
            var inTransaction = !name.EndsWith(NoTransactionSuffix, StringComparison.Ordinal);
            if (run is not null && inTransaction != transaction)
            {
                yield return (run, transaction);
                run = null;
            }

            run ??= new HashSet<string>(StringComparer.Ordinal);
            run.Add(name);
            transaction = inTransaction;
        }

        if (run is not null)
        {
            yield return (run, transaction);
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
            // On Citus the workers check privileges too, and propagate a role grant only for roles made through
            // the coordinator: a login made on each node by hand gets its membership there as well.
            await using var citus = new NpgsqlCommand(CitusInstalledSql, connection);
            if (await citus.ExecuteScalarAsync(cancellationToken) is true)
            {
                await using var onWorkers = new NpgsqlCommand("SELECT run_command_on_workers(@grant)", connection);
                onWorkers.Parameters.AddWithValue("grant", $"GRANT firmware_manager_api TO {quoted}");
                await onWorkers.ExecuteNonQueryAsync(cancellationToken);
            }
        }

        Run(Grants(connectionString).WithTransactionPerScript(), "grants", logger);
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

    private const string CitusInstalledSql = "SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')";

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
