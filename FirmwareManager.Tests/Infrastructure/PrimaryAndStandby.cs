using Npgsql;

namespace FirmwareManager.Tests.Infrastructure;

/// <summary>
/// A primary and hot standbys streaming from it (<see cref="PostgresServer.StartPrimaryAndStandbyAsync"/>): a standby
/// can be stopped and started, and held back (<c>recovery_min_apply_delay</c>) so that it lags for as long as a test
/// needs. The first standby is "the standby" of the members without an index.
/// </summary>
public sealed class PrimaryAndStandby(string primary, IReadOnlyList<(string ConnectionString, Action Stop, Action Start)> standbys)
{
    public string PrimaryConnectionString { get; } = primary;

    public string StandbyConnectionString => StandbyConnection(0);

    private string StandbyConnection(int index) =>
        new NpgsqlConnectionStringBuilder(standbys[index].ConnectionString) { Pooling = false }.ConnectionString;

    /// <summary>
    /// A connection string for <paramref name="database"/> that names every host, primary first, as an operator
    /// writes it; with <paramref name="loadBalance"/>, Npgsql spreads connections over the standbys.
    /// </summary>
    public string MultiHostConnectionString(string database, bool loadBalance = false)
    {
        var primaryHost = new NpgsqlConnectionStringBuilder(PrimaryConnectionString);
        var hosts = standbys.Select(s => new NpgsqlConnectionStringBuilder(s.ConnectionString)).Select(s => $"{s.Host}:{s.Port}");
        return new NpgsqlConnectionStringBuilder(PrimaryConnectionString)
        {
            Host = string.Join(',', hosts.Prepend($"{primaryHost.Host}:{primaryHost.Port}")),
            Database = database,
            // Quick to notice a host that went away (the default rechecks a host's state every 10 s).
            HostRecheckSeconds = 1,
            Timeout = 3,
            LoadBalanceHosts = loadBalance,
        }.ConnectionString;
    }

    public void StopStandby() => standbys[0].Stop();

    public void StartStandby() => standbys[0].Start();

    /// <summary>From now on the standby applies each commit only an hour after it happened: it keeps what it has.</summary>
    public Task HoldBackStandbyAsync(int index = 0) => SetApplyDelayAsync(index, "1h");

    /// <summary>The standby applies commits again as they come, and has caught up with the primary when this returns.</summary>
    public async Task ReleaseStandbyAsync(int index = 0)
    {
        await SetApplyDelayAsync(index, "0");
        await CatchUpAsync(index);
    }

    /// <summary>Returns once the standby has replayed everything the primary has written so far.</summary>
    public async Task CatchUpAsync(int index = 0)
    {
        await using var primaryConnection = new NpgsqlConnection(PrimaryConnectionString);
        await primaryConnection.OpenAsync();
        await using var lsnCommand = new NpgsqlCommand("SELECT pg_current_wal_insert_lsn()::text", primaryConnection);
        var target = (string)(await lsnCommand.ExecuteScalarAsync())!;
        await using var standbyConnection = new NpgsqlConnection(StandbyConnection(index));
        await standbyConnection.OpenAsync();
        for (var i = 0; i < 400; i++)
        {
            await using var check = new NpgsqlCommand("SELECT pg_last_wal_replay_lsn() >= @Target::pg_lsn", standbyConnection);
            check.Parameters.AddWithValue("Target", target);
            if (await check.ExecuteScalarAsync() is true)
            {
                return;
            }

            await Task.Delay(25);
        }

        throw new TimeoutException($"The standby did not replay up to {target} within 10 s.");
    }

    private async Task SetApplyDelayAsync(int index, string delay)
    {
        await using var connection = new NpgsqlConnection(StandbyConnection(index));
        await connection.OpenAsync();
        // ALTER SYSTEM writes postgresql.auto.conf; it works on a standby, and a reload applies it.
        await using (var set = new NpgsqlCommand($"ALTER SYSTEM SET recovery_min_apply_delay = '{delay}'", connection))
        {
            await set.ExecuteNonQueryAsync();
        }

        await using var reload = new NpgsqlCommand("SELECT pg_reload_conf()", connection);
        await reload.ExecuteScalarAsync();
        // The startup process reads the new value at its next wait: give it a moment.
        await Task.Delay(200);
    }
}
