using System.Globalization;
using System.Text.RegularExpressions;
using Dapper;
using Npgsql;

namespace FirmwareManager.Api.Firmware;

/// <summary>One partition of <c>firmware_events</c>: a range of <c>occurred_at</c> (null bounds: MINVALUE / MAXVALUE), or the default one.</summary>
public sealed record EventPartition(string Name, DateTime? From, DateTime? To, bool IsDefault);

/// <summary>
/// The time that the range partitions of <c>firmware_events</c> cover without a gap, up to the newest one, as this
/// instance last read the catalog (at startup and at each round of upkeep): what the history page statement
/// (<see cref="DeviceHistory"/>) splits its reads at. Before the first read, the whole time line.
/// </summary>
public sealed class EventPartitionSpan
{
    /// <summary>From <see cref="From"/> (<see cref="DateTime.MinValue"/>: no lower bound) until <see cref="Until"/>.</summary>
    public sealed record Span(DateTime From, DateTime Until);

    private volatile Span _current = new(DateTime.MinValue, DateTime.MaxValue);

    public Span Current => _current;

    /// <summary>Reads the partitions' bounds again.</summary>
    public async Task RefreshAsync(NpgsqlConnection connection, CancellationToken cancellationToken) =>
        _current = Of(await EventPartitions.ListAsync(connection, cancellationToken));

    /// <summary>The run of range partitions that ends with the newest one, each ending where the next begins.</summary>
    public static Span Of(IReadOnlyList<EventPartition> partitions)
    {
        var ranges = partitions.Where(p => !p.IsDefault).OrderByDescending(p => p.To ?? DateTime.MaxValue).ToList();
        if (ranges.Count == 0)
        {
            return new Span(DateTime.MinValue, DateTime.MaxValue);
        }

        var until = ranges[0].To ?? DateTime.MaxValue;
        var from = ranges[0].From;
        foreach (var older in ranges.Skip(1))
        {
            if (from is null || older.To != from)
            {
                break;
            }

            from = older.From;
        }

        return new Span(from ?? DateTime.MinValue, until);
    }
}

/// <summary>
/// The monthly partitions of <c>firmware_events</c> (migration 0023): made ahead of time, and dropped whole once
/// every time they hold is older than the retention cutoff. DDL, so it runs as the schema's owner (the
/// migrations' connection), never as the API role. Partitions are named <c>firmware_events_yYYYYmMM</c> and cover
/// a calendar month in UTC.
/// </summary>
public static partial class EventPartitions
{
    // The partitions and their bounds as PostgreSQL prints them: FOR VALUES FROM ('...') TO ('...'), or DEFAULT.
    // The connection's TimeZone is UTC (MaintenanceConnection.OpenAsync), so that the bounds print in UTC.
    private const string ListSql = """
        SELECT c.relname AS Name, pg_get_expr(c.relpartbound, c.oid) AS Bound
        FROM pg_inherits AS i
        JOIN pg_class AS c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'firmware_events'::regclass
        """;

    [GeneratedRegex(@"^FOR VALUES FROM \((?:'(?<from>[^']+)'|MINVALUE)\) TO \((?:'(?<to>[^']+)'|MAXVALUE)\)$")]
    private static partial Regex RangeBound();

    private sealed record Row(string Name, string Bound);

    public static async Task<IReadOnlyList<EventPartition>> ListAsync(NpgsqlConnection connection, CancellationToken cancellationToken)
    {
        var rows = await connection.QueryAsync<Row>(new CommandDefinition(ListSql, cancellationToken: cancellationToken));
        var partitions = new List<EventPartition>();
        foreach (var row in rows)
        {
            if (row.Bound == "DEFAULT")
            {
                partitions.Add(new EventPartition(row.Name, null, null, IsDefault: true));
                continue;
            }

            var match = RangeBound().Match(row.Bound);
            if (!match.Success)
            {
                throw new InvalidOperationException($"Partition {row.Name} has a bound this service does not know: {row.Bound}");
            }

            partitions.Add(new EventPartition(row.Name, ParseBound(match.Groups["from"]), ParseBound(match.Groups["to"]), IsDefault: false));
        }

        return partitions.OrderBy(p => p.IsDefault).ThenBy(p => p.From ?? DateTime.MinValue).ToList();
    }

    private static DateTime? ParseBound(Group group) => group.Success
        ? DateTime.Parse(group.Value, CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal)
        : null;

    /// <summary>The name of the partition of the month that begins at <paramref name="monthStart"/>.</summary>
    public static string NameOf(DateTime monthStart) =>
        string.Create(CultureInfo.InvariantCulture, $"firmware_events_y{monthStart:yyyy}m{monthStart:MM}");

    /// <summary>
    /// Makes the monthly partitions from the end of the last one up to the end of the month
    /// <paramref name="monthsAhead"/> months after <paramref name="nowUtc"/>'s; the names of those it made.
    /// </summary>
    public static async Task<IReadOnlyList<string>> CreateAheadAsync(
        NpgsqlConnection connection, DateTime nowUtc, int monthsAhead, bool citus, CancellationToken cancellationToken)
    {
        var partitions = await ListAsync(connection, cancellationToken);
        var thisMonth = new DateTime(nowUtc.Year, nowUtc.Month, 1, 0, 0, 0, DateTimeKind.Utc);
        var end = thisMonth.AddMonths(monthsAhead + 1);
        var next = partitions.Where(p => !p.IsDefault && p.To is not null).Select(p => p.To!.Value).DefaultIfEmpty(thisMonth).Max();
        var created = new List<string>();
        while (next < end)
        {
            // Partitions begin on the first of a month (the boundary 0021 chose is one); a month ends at the next first.
            var monthStart = new DateTime(next.Year, next.Month, 1, 0, 0, 0, DateTimeKind.Utc);
            var to = monthStart.AddMonths(1);
            var name = NameOf(monthStart);
            await CreateAsync(connection, name, next, to, citus, cancellationToken);
            created.Add(name);
            next = to;
        }

        return created;
    }

    // A partition is made as a table of its own and then attached: ATTACH PARTITION needs only a SHARE UPDATE
    // EXCLUSIVE lock on firmware_events, which ingest and reads do not wait for (CREATE TABLE ... PARTITION OF
    // would take an exclusive one). A report whose clock was outside every partition went to the default one, and
    // the new partition cannot be attached while a row of its range is there: such rows are moved, in the same
    // transaction, with the default partition locked. The default partition is kept small (clocks far off), so
    // this is quick; usually there is nothing to move.
    //
    // The rows are moved with every column the table has now, read from the catalog in the same transaction: a
    // list written here once lost the failure details (0025) of every row it moved, and the next column added would
    // have been lost the same way.
    private const string ColumnsSql = """
        SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
        FROM pg_attribute AS a
        WHERE a.attrelid = 'firmware_events'::regclass
          AND a.attnum > 0
          AND NOT a.attisdropped
          AND a.attgenerated = ''
        """;

    private const string MoveAsideSql = """
        CREATE TEMPORARY TABLE fm_moving_events ON COMMIT DROP AS
        SELECT *
        FROM firmware_events_default
        WHERE occurred_at >= @From
          AND occurred_at < @To
        """;

    private const string DeleteMovedSql = "DELETE FROM firmware_events_default WHERE occurred_at >= @From AND occurred_at < @To";

    private static async Task CreateAsync(
        NpgsqlConnection connection, string name, DateTime from, DateTime to, bool citus, CancellationToken cancellationToken)
    {
        var parameters = new { From = from, To = to };
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        Task ExecuteAsync(string sql, object? values = null) =>
            connection.ExecuteAsync(new CommandDefinition(sql, values, transaction, cancellationToken: cancellationToken));

        // Waits for a lock at most this long (the default partition's, the table's), then tries again next round.
        await ExecuteAsync("SET LOCAL lock_timeout = '2s'");
        if (citus)
        {
            // DDL in this transaction over one connection per node, so later statements see earlier ones.
            await ExecuteAsync("SET LOCAL citus.multi_shard_modify_mode = 'sequential'");
        }

        // The name and bounds are made here from dates, never from input (DDL takes no parameters).
        var bounds = string.Create(CultureInfo.InvariantCulture,
            $"FROM ('{from:yyyy-MM-dd HH:mm:ss}+00') TO ('{to:yyyy-MM-dd HH:mm:ss}+00')");
        await ExecuteAsync($"CREATE TABLE {name} (LIKE firmware_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)");
        if (citus)
        {
            await ExecuteAsync($"SELECT create_distributed_table('{name}', 'project_id', colocate_with => 'firmware_events')");
        }

        await ExecuteAsync("LOCK TABLE firmware_events_default IN SHARE ROW EXCLUSIVE MODE");
        // Quoted identifiers from the catalog, not input; named on both sides, since the default partition's
        // columns need not be in the parent's order (a table attached as a partition keeps its own).
        var columns = await connection.ExecuteScalarAsync<string>(new CommandDefinition(ColumnsSql, transaction: transaction, cancellationToken: cancellationToken))
            ?? throw new InvalidOperationException("firmware_events has no columns in the catalog");
        await ExecuteAsync(MoveAsideSql, parameters);
        await ExecuteAsync(DeleteMovedSql, parameters);
        await ExecuteAsync($"INSERT INTO {name} ({columns}) SELECT {columns} FROM fm_moving_events");
        await ExecuteAsync($"ALTER TABLE firmware_events ATTACH PARTITION {name} FOR VALUES {bounds}");
        await transaction.CommitAsync(cancellationToken);
    }

    /// <summary>
    /// Drops each range partition whose every time is before <paramref name="cutoff"/>; the names of those dropped.
    /// Dropping a partition takes a moment's exclusive lock on <c>firmware_events</c>: one that cannot get it within
    /// a second is left for the next round, so that ingest never queues behind it for longer.
    /// </summary>
    public static async Task<IReadOnlyList<string>> DropBeforeAsync(
        NpgsqlConnection connection, DateTime cutoff, ILogger logger, CancellationToken cancellationToken)
    {
        var dropped = new List<string>();
        foreach (var partition in await ListAsync(connection, cancellationToken))
        {
            if (partition.IsDefault || partition.To is not { } to || to > cutoff)
            {
                continue;
            }

            try
            {
                await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
                await connection.ExecuteAsync(new CommandDefinition("SET LOCAL lock_timeout = '1s'", transaction: transaction, cancellationToken: cancellationToken));
                await connection.ExecuteAsync(new CommandDefinition($"DROP TABLE {partition.Name}", transaction: transaction, cancellationToken: cancellationToken));
                await transaction.CommitAsync(cancellationToken);
                dropped.Add(partition.Name);
            }
            catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.LockNotAvailable)
            {
                logger.LogInformation("Retention: {Partition} is busy; dropping it at the next round", partition.Name);
            }
        }

        return dropped;
    }
}
