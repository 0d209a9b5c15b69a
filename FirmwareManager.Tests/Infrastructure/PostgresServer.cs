using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Npgsql;

namespace FirmwareManager.Tests.Infrastructure;

/// <summary>
/// The PostgreSQL server the tests use: the one <c>FIRMWAREMANAGER_TEST_DB</c> names (a connection string whose
/// user may create databases, such as a CI service container), or else a throwaway cluster started here with
/// initdb and pg_ctl on a free loopback port, as the <c>postgres</c> user when the tests run as root, and removed
/// when the test run ends. Each test class gets a database of its own on it.
/// With <c>FIRMWAREMANAGER_TEST_ENGINE=citus</c> the throwaway server is a Citus cluster: a coordinator and two
/// workers, each a cluster of its own on loopback; a server <c>FIRMWAREMANAGER_TEST_DB</c> names is a Citus
/// coordinator when its database lists workers (<c>pg_dist_node</c>). Each test database is then made on every node,
/// with the extension, and its workers registered, as a DBA prepares a Citus database (docs/scale-out.md).
/// </summary>
public sealed class PostgresServer
{
    public const string ConnectionStringVariable = "FIRMWAREMANAGER_TEST_DB";
    public const string EngineVariable = "FIRMWAREMANAGER_TEST_ENGINE";

    /// <summary>The engine the tests run on: <c>postgresql</c> (the default) or <c>citus</c>.</summary>
    public static bool IsCitus { get; } = string.Equals(
        Environment.GetEnvironmentVariable(EngineVariable), "citus", StringComparison.OrdinalIgnoreCase);

    private static readonly Lazy<Task<PostgresServer>> SharedServer = new(StartAsync);
    private static int _databaseCounter;

    private readonly string _adminConnectionString;

    // The workers' admin connection strings, when this server is a Citus coordinator.
    private readonly IReadOnlyList<string> _workers;

    private PostgresServer(string adminConnectionString, IReadOnlyList<string>? workers = null)
    {
        _adminConnectionString = adminConnectionString;
        _workers = workers ?? [];
    }

    public static Task<PostgresServer> SharedAsync() => SharedServer.Value;

    /// <summary>The server's administrator (a superuser): what a DBA's <c>grant-api-role</c> runs as.</summary>
    public string AdminConnectionString => _adminConnectionString;

    /// <summary>A new, empty database on this server, and its connection string.</summary>
    public async Task<string> CreateDatabaseAsync()
    {
        var name = NewDatabaseName();
        await AdminExecuteAsync($"CREATE DATABASE {name}");
        await PrepareCitusAsync(name);
        return new NpgsqlConnectionStringBuilder(_adminConnectionString) { Database = name, Pooling = true }.ConnectionString;
    }

    public const string OwnerRole = "fm_owner_test";

    /// <summary>
    /// A new, empty database owned by <see cref="OwnerRole"/>, a login with no CREATEROLE and no superuser: the owner a
    /// DBA or a managed PostgreSQL gives. Its connection string logs in as that owner.
    /// </summary>
    public async Task<string> CreateOwnedDatabaseAsync()
    {
        await AdminExecuteAsync($"""
            DO $$
            BEGIN
                IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{OwnerRole}') THEN
                    CREATE ROLE {OwnerRole} LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB PASSWORD '{OwnerRole}';
                END IF;
            END
            $$
            """);
        var name = NewDatabaseName();
        await AdminExecuteAsync($"CREATE DATABASE {name} OWNER {OwnerRole}");
        await PrepareCitusAsync(name);
        return new NpgsqlConnectionStringBuilder(_adminConnectionString)
        {
            Database = name,
            Username = OwnerRole,
            Password = OwnerRole,
            Pooling = true,
        }.ConnectionString;
    }

    /// <summary>Returns once a session of <paramref name="connectionString"/>'s database waits for a lock, or fails after 10 s.</summary>
    public async Task WaitUntilASessionWaitsForALockAsync(string connectionString)
    {
        // As the server's administrator: the owner may not see the wait events of the API's sessions. On Citus the
        // waiting happens on a worker, which the coordinator's own sessions do not show: citus_lock_waits does.
        var admin = new NpgsqlConnectionStringBuilder(_adminConnectionString)
        {
            Database = new NpgsqlConnectionStringBuilder(connectionString).Database,
        };
        var waitsSql = _workers.Count > 0
            ? "SELECT EXISTS (SELECT 1 FROM citus_lock_waits)"
            : "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database())";
        await using var watcher = new NpgsqlConnection(admin.ConnectionString);
        await watcher.OpenAsync();
        for (var i = 0; i < 400; i++)
        {
            await using var command = new NpgsqlCommand(waitsSql, watcher);
            if (await command.ExecuteScalarAsync() is true)
            {
                return;
            }

            await Task.Delay(25);
        }

        throw new TimeoutException("No session of the test's database waited for a lock within 10 s.");
    }

    private static string NewDatabaseName() => string.Create(CultureInfo.InvariantCulture,
        $"fm_test_{Environment.ProcessId}_{Interlocked.Increment(ref _databaseCounter)}_{Random.Shared.Next(100000)}");

    /// <summary>Runs <paramref name="sql"/> as the administrator on every node (to act on any session, such as ending it).</summary>
    public Task AdminExecuteOnEveryNodeAsync(string sql) => AdminExecuteAsync(sql);

    /// <summary>Runs <paramref name="sql"/> as the administrator on this server, and on each worker when it is a Citus coordinator (roles are per node).</summary>
    private async Task AdminExecuteAsync(string sql)
    {
        foreach (var node in _workers.Prepend(_adminConnectionString))
        {
            await ExecuteAsync(node, sql);
        }
    }

    private static async Task ExecuteAsync(string connectionString, string sql)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }

    /// <summary>
    /// On a Citus coordinator: the database <paramref name="name"/> (made on every node by <see cref="AdminExecuteAsync"/>)
    /// gets the extension on every node, and the coordinator's copy learns its nodes. What a DBA does once per database.
    /// </summary>
    private async Task PrepareCitusAsync(string name)
    {
        if (_workers.Count == 0)
        {
            return;
        }

        foreach (var node in _workers.Prepend(_adminConnectionString))
        {
            await ExecuteAsync(new NpgsqlConnectionStringBuilder(node) { Database = name }.ConnectionString, "CREATE EXTENSION citus");
        }

        var coordinator = new NpgsqlConnectionStringBuilder(_adminConnectionString) { Database = name };
        await ExecuteAsync(coordinator.ConnectionString, string.Create(CultureInfo.InvariantCulture,
            $"SELECT citus_set_coordinator_host('{coordinator.Host}', {coordinator.Port})"));
        foreach (var worker in _workers.Select(w => new NpgsqlConnectionStringBuilder(w)))
        {
            await ExecuteAsync(coordinator.ConnectionString, string.Create(CultureInfo.InvariantCulture,
                $"SELECT citus_add_node('{worker.Host}', {worker.Port})"));
        }
    }

    /// <summary>A new database with the schema and the demo data set, for tests that start a service of their own on it.</summary>
    public static async Task<string> CreateDemoDatabaseAsync()
    {
        var connectionString = await (await SharedAsync()).CreateDatabaseAsync();
        await FirmwareManager.Api.Database.DatabaseMigrator.MigrateAsync(
            connectionString, applyDemoData: true, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        return connectionString;
    }

    public const string ApiRole = "fm_api_test";

    /// <summary>
    /// The connection string of a database migrated by its owner, as the login the service runs as in production:
    /// made a member of the <c>firmware_manager_api</c> role by the DBA step (<c>grant-api-role</c>, as the server's
    /// administrator), nothing more.
    /// </summary>
    public async Task<string> ApiRoleConnectionStringAsync(string ownerConnectionString)
    {
        await AdminExecuteAsync($"""
            DO $$
            BEGIN
                IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ApiRole}') THEN
                    CREATE ROLE {ApiRole} LOGIN PASSWORD '{ApiRole}';
                END IF;
            END
            $$
            """);
        var database = new NpgsqlConnectionStringBuilder(ownerConnectionString).Database;
        var adminOnDatabase = new NpgsqlConnectionStringBuilder(_adminConnectionString) { Database = database }.ConnectionString;
        await FirmwareManager.Api.Database.DatabaseMigrator.GrantApiRoleAsync(
            adminOnDatabase, ApiRole, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        return new NpgsqlConnectionStringBuilder(ownerConnectionString) { Username = ApiRole, Password = ApiRole }.ConnectionString;
    }

    /// <summary>
    /// A cluster of its own, started from the machine's PostgreSQL binaries whatever <c>FIRMWAREMANAGER_TEST_DB</c>
    /// says: for a test that needs a cluster where no role of the service exists yet (roles are cluster-wide).
    /// Removed when the test run ends, as the shared one is.
    /// </summary>
    public static async Task<PostgresServer> StartPrivateAsync() => new((await ThrowawayCluster.StartAsync()).ConnectionString);

    /// <summary>
    /// A primary and a hot standby streaming from it (<c>pg_basebackup -R</c>), both throwaway clusters on loopback,
    /// whatever <c>FIRMWAREMANAGER_TEST_DB</c> says: for the read-replica tests.
    /// </summary>
    public static async Task<PrimaryAndStandby> StartPrimaryAndStandbyAsync(int standbys = 1)
    {
        var primary = await ThrowawayCluster.StartAsync();
        var started = new List<(string, Action, Action)>();
        for (var i = 0; i < standbys; i++)
        {
            var standby = await primary.StartStandbyAsync();
            started.Add((standby.ConnectionString, standby.Stop, standby.Start));
        }

        return new PrimaryAndStandby(primary.ConnectionString, started);
    }

    private static async Task<PostgresServer> StartAsync()
    {
        var given = Environment.GetEnvironmentVariable(ConnectionStringVariable);
        if (!string.IsNullOrWhiteSpace(given))
        {
            return new PostgresServer(given, IsCitus ? await RegisteredWorkersAsync(given) : null);
        }

        if (!IsCitus)
        {
            return new PostgresServer((await ThrowawayCluster.StartAsync()).ConnectionString);
        }

        var nodes = await Task.WhenAll(Enumerable.Range(0, 3).Select(_ => ThrowawayCluster.StartAsync(citus: true)));
        return new PostgresServer(nodes[0].ConnectionString, nodes.Skip(1).Select(n => n.ConnectionString).ToList());
    }

    /// <summary>The workers a given Citus coordinator lists in its own database, reached with the same login.</summary>
    private static async Task<IReadOnlyList<string>> RegisteredWorkersAsync(string coordinator)
    {
        await using var connection = new NpgsqlConnection(coordinator);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            "SELECT nodename, nodeport FROM pg_dist_node WHERE noderole = 'primary' AND groupid <> 0 ORDER BY nodeid", connection);
        var workers = new List<string>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            workers.Add(new NpgsqlConnectionStringBuilder(coordinator) { Host = reader.GetString(0), Port = reader.GetInt32(1) }.ConnectionString);
        }

        return workers.Count > 0
            ? workers
            : throw new InvalidOperationException(
                $"{EngineVariable}=citus, but the server {ConnectionStringVariable} names lists no workers (pg_dist_node). " +
                "Add them there first (SELECT citus_add_node(host, port)).");
    }

    private sealed class ThrowawayCluster
    {
        private readonly string _binDirectory;
        private readonly string _directory;

        private ThrowawayCluster(string binDirectory, string directory, int port)
        {
            _binDirectory = binDirectory;
            _directory = directory;
            ConnectionString = new NpgsqlConnectionStringBuilder
            {
                Host = "127.0.0.1",
                Port = port,
                Username = "postgres",
                Database = "postgres",
                // Trust authentication ignores it; tests check that it never shows in logs or metrics.
                Password = "fm-test-password",
            }.ConnectionString;
        }

        public string ConnectionString { get; }

        private string DataDirectory => Path.Combine(_directory, "data");

        public static async Task<ThrowawayCluster> StartAsync(bool citus = false)
        {
            var bin = FindPostgresBinaries();
            var directory = Directory.CreateTempSubdirectory("fm-test-pg-").FullName;
            if (Environment.IsPrivilegedProcess)
            {
                // PostgreSQL refuses to run as root; the cluster belongs to the postgres user.
                Run("chown", ["-R", "postgres:postgres", directory], asPostgres: false);
            }

            var cluster = new ThrowawayCluster(bin, directory, FreeLoopbackPort()) { _citus = citus };
            cluster.RunPg("initdb", ["-D", cluster.DataDirectory, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"]);
            cluster.Start();
            cluster.StopWhenThisProcessExits();
            await using var connection = new NpgsqlConnection(cluster.ConnectionString);
            await connection.OpenAsync();
            return cluster;
        }

        private bool _citus;

        /// <summary>A hot standby of this cluster: a base backup with its replication settings (<c>-R</c>), started.</summary>
        public async Task<ThrowawayCluster> StartStandbyAsync()
        {
            var directory = Directory.CreateTempSubdirectory("fm-test-pg-standby-").FullName;
            if (Environment.IsPrivilegedProcess)
            {
                Run("chown", ["-R", "postgres:postgres", directory], asPostgres: false);
            }

            var primary = new NpgsqlConnectionStringBuilder(ConnectionString);
            var standby = new ThrowawayCluster(_binDirectory, directory, FreeLoopbackPort());
            standby.RunPg("pg_basebackup", [
                "-D", standby.DataDirectory, "-R", "-X", "stream", "-c", "fast", "-h", primary.Host!,
                "-p", primary.Port.ToString(CultureInfo.InvariantCulture), "-U", "postgres",
            ]);
            standby.Start();
            standby.StopWhenThisProcessExits();
            await using var connection = new NpgsqlConnection(standby.ConnectionString);
            await connection.OpenAsync();
            return standby;
        }

        public void Start()
        {
            var port = new NpgsqlConnectionStringBuilder(ConnectionString).Port;
            // A time zone other than UTC, so a timestamp that is written or read in the wrong zone shows in the tests.
            // On Citus, 4 shards a table (production: 64, docs/scale-out.md), two on each worker: every statement the
            // tests check still runs on one shard of two nodes, and emptying every table between tests (Respawn) is a
            // task per shard, which made the Citus suite 2.4 times as long with the default 32.
            // 600 connections: the test classes run in parallel, each app with its pools, and a plain run peaked at
            // about 270 sessions on one server (sampled 2026-12-06); with 300 a CI run once met "remaining connection
            // slots are reserved" where a test's service read its Data Protection key ring.
            RunPg("pg_ctl", [
                "start", "-w", "-t", "60", "-D", DataDirectory, "-l", Path.Combine(_directory, "postgres.log"),
                "-o", $"-p {port} -k {_directory} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off " +
                      "-c full_page_writes=off -c max_connections=600 -c TimeZone=America/New_York" +
                      (_citus ? " -c shared_preload_libraries=citus -c max_prepared_transactions=200 -c citus.shard_count=4" : ""),
            ]);
        }

        public void Stop() => RunPg("pg_ctl", ["stop", "-w", "-t", "60", "-m", "fast", "-D", DataDirectory]);

        /// <summary>
        /// Stops the cluster and deletes its directory once this test process has exited, however it exits: a
        /// detached watchdog does it, because the test host may be ended before any exit handler of its own runs.
        /// </summary>
        private void StopWhenThisProcessExits()
        {
            var pgCtl = Path.Combine(_binDirectory, "pg_ctl");
            var stop = Environment.IsPrivilegedProcess ? $"runuser -u postgres -- {pgCtl}" : pgCtl;
            var script = string.Create(CultureInfo.InvariantCulture,
                $"while kill -0 {Environment.ProcessId} 2>/dev/null; do sleep 0.2; done; " +
                $"{stop} stop -D '{DataDirectory}' -m immediate -w >/dev/null 2>&1; rm -rf '{_directory}'");
            var watchdog = new ProcessStartInfo("setsid") { UseShellExecute = false };
            foreach (var argument in new[] { "sh", "-c", script })
            {
                watchdog.ArgumentList.Add(argument);
            }

            Process.Start(watchdog)?.Dispose();
        }

        private void RunPg(string program, string[] arguments) =>
            Run(Path.Combine(_binDirectory, program), arguments, asPostgres: Environment.IsPrivilegedProcess);

        private static void Run(string program, string[] arguments, bool asPostgres)
        {
            var start = new ProcessStartInfo(asPostgres ? "runuser" : program)
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                WorkingDirectory = Path.GetTempPath(),
            };
            if (asPostgres)
            {
                foreach (var argument in new[] { "-u", "postgres", "--", program })
                {
                    start.ArgumentList.Add(argument);
                }
            }

            foreach (var argument in arguments)
            {
                start.ArgumentList.Add(argument);
            }

            using var process = Process.Start(start) ?? throw new InvalidOperationException($"Could not start {program}.");
            var output = process.StandardOutput.ReadToEndAsync();
            var error = process.StandardError.ReadToEndAsync();
            process.WaitForExit();
            if (process.ExitCode != 0)
            {
                throw new InvalidOperationException(
                    $"{program} {string.Join(' ', arguments)} exited with {process.ExitCode}:\n{output.Result}\n{error.Result}");
            }
        }

        private static string FindPostgresBinaries()
        {
            var candidates = Directory.Exists("/usr/lib/postgresql")
                ? Directory.GetDirectories("/usr/lib/postgresql")
                    .Select(version => Path.Combine(version, "bin"))
                    .OrderByDescending(bin => int.TryParse(Path.GetFileName(Path.GetDirectoryName(bin)), out var major) ? major : 0)
                : Enumerable.Empty<string>();
            return candidates.FirstOrDefault(bin => File.Exists(Path.Combine(bin, "initdb")))
                ?? throw new InvalidOperationException(
                    $"No PostgreSQL server binaries under /usr/lib/postgresql/*/bin. Install them (apt-get install postgresql) " +
                    $"or set {ConnectionStringVariable} to a connection string of a server the tests may create databases on.");
        }

        private static int FreeLoopbackPort()
        {
            using var listener = new TcpListener(IPAddress.Loopback, 0);
            listener.Start();
            return ((IPEndPoint)listener.LocalEndpoint).Port;
        }
    }
}
