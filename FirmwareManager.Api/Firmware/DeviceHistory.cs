using System.Globalization;
using System.Text.RegularExpressions;
using Dapper;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Http;
using Npgsql;
using NpgsqlTypes;

namespace FirmwareManager.Api.Firmware;

/// <summary>
/// A device's history in a project, newest first by the device's clock: a page (keyset paging, every page costs
/// the same) or the whole of it (an export). Events belong to the project they were reported in, on every
/// endpoint: the device's reports from while it belonged to another project are never returned here, and a device
/// that left this project still shows what it reported while it was here.
/// </summary>
public sealed class DeviceHistory(ReadRouting reads, EventPartitionSpan partitions)
{
    // The conditions of a page, in each of the statement's two parts below, made of up to three pieces: the device
    // and the project always; the keyset position for a page after the first; the filters when any is given. A
    // condition the statement does not carry is one PostgreSQL does not build into each partition's scan at every
    // execution: with every piece always present (null when not given), PostgreSQL spent 1.8x the naive statement's
    // CPU per read while executing it took the same time, and a first page with the keyset's conditions cost 11 to
    // 31 µs more a statement than one without (pgbench, bench/history-baselines.sh; docs/performance.md).
    private const string DeviceConditions = """
        e.device_id = @DeviceId
              AND e.project_id = @ProjectId
        """;

    // After a page: the keyset condition is on (occurred_at, firmware, status), ties in a stable order; its
    // occurred_at also bounds the time on its own, so that the partitions after the cursor's time are pruned when
    // the plan starts.
    private const string AfterConditions = """

              AND e.occurred_at <= @AfterOccurredAt::timestamptz
              AND (e.occurred_at, e.firmware, e.status) < (@AfterOccurredAt::timestamptz, @AfterFirmware, @AfterStatus)
        """;

    private const string FilterConditions = """

              AND e.occurred_at >= COALESCE(@Since::timestamptz, '-infinity')
              AND e.occurred_at < COALESCE(@Until::timestamptz, 'infinity')
              AND (cardinality(@Statuses::text[]) = 0 OR e.status = ANY(@Statuses))
              AND (@Firmware::text IS NULL OR e.firmware = @Firmware)
              AND (@ErrorCode::text IS NULL OR e.error_code = @ErrorCode)
        """;

    // One page of the history: a backward scan of each partition's history index, in two parts split at the bounds
    // of the months the monthly partitions cover without a gap (COVERED_FROM, COVERED_UNTIL: literals, filled in
    // from the catalog by EventPartitionSpan, never from input). The second part names only those partitions, so
    // the planner reads them one after another, newest first (an ordered Append), and the scan stops in the month
    // where the page fills: a page that lies in one or two months enters one or two indexes. With the default
    // partition among them, it would have to enter every month's index at once and merge them (a Merge Append);
    // the default partition (clocks far ahead or behind, after retention dropped older months) is in the first
    // part, with any partition made after the bounds were read or left before a gap. While the oldest partition has
    // no lower bound (COVERED_FROM is -infinity), nothing lies before the covered months, and the parts' conditions
    // say only what is left (INSIDE_COVERED, OUTSIDE_COVERED below): one bound fewer in every month's scan. Bounds
    // that are out of date cost only that speed: the parts divide the time between them whatever the bounds are.
    // docs/schema.md, "Across partitions", has the plans. CONDITIONS: the page's conditions (above).
    private const string PageSql = $"""
        SELECT h.Id, h.DeviceId, h.ProjectId, h.Firmware, h.Status, h.OccurredAt, h.ReceivedAt,
               h.FromFirmware, h.ErrorCode, h.Detail, h.Arrival
        FROM (
            (SELECT {FirmwareEvents.EventColumns}
             FROM firmware_events AS e
             WHERE CONDITIONS
               AND OUTSIDE_COVERED
             ORDER BY e.occurred_at DESC, e.firmware DESC, e.status DESC
             LIMIT @Limit)
            UNION ALL
            (SELECT {FirmwareEvents.EventColumns}
             FROM firmware_events AS e
             WHERE CONDITIONS
               AND INSIDE_COVERED
             ORDER BY e.occurred_at DESC, e.firmware DESC, e.status DESC
             LIMIT @Limit)
        ) AS h
        ORDER BY h.OccurredAt DESC, h.Firmware DESC, h.Status DESC
        LIMIT @Limit
        """;

    // The parts' time conditions, with and without a lower bound of the covered months.
    private const string OutsideCovered = "(e.occurred_at >= TIMESTAMPTZ 'COVERED_UNTIL' OR e.occurred_at < TIMESTAMPTZ 'COVERED_FROM')";
    private const string OutsideCoveredNoneBefore = "e.occurred_at >= TIMESTAMPTZ 'COVERED_UNTIL'";
    private const string InsideCovered = "e.occurred_at >= TIMESTAMPTZ 'COVERED_FROM' AND e.occurred_at < TIMESTAMPTZ 'COVERED_UNTIL'";
    private const string InsideCoveredNoneBefore = "e.occurred_at < TIMESTAMPTZ 'COVERED_UNTIL'";

    // The device is the project's now, or reported in it before it moved: anything else is 404, the same for a
    // device that does not exist as for another project's, so that ids cannot be probed.
    private const string DeviceKnownToProjectSql = """
        SELECT EXISTS (
            SELECT 1
            FROM devices
            WHERE id = @DeviceId
              AND project_id = @ProjectId
        ) OR EXISTS (
            SELECT 1
            FROM firmware_events
            WHERE device_id = @DeviceId
              AND project_id = @ProjectId
        )
        """;

    /// <summary>Where a history page ends: the sort key of its last event.</summary>
    public sealed record Position(DateTime OccurredAt, string Firmware, string Status) : IPagePosition<Position>
    {
        public static Position Of(FirmwareEvent e) => new(e.OccurredAt, e.Firmware, e.Status);

        public void WriteTo(BinaryWriter writer)
        {
            writer.Write(OccurredAt.Ticks);
            writer.Write(Firmware);
            writer.Write(Status);
        }

        public static Position? ReadFrom(BinaryReader reader)
        {
            var ticks = reader.ReadInt64();
            return ticks is < 0 or > 3155378975999999999
                ? null
                : new Position(new DateTime(ticks, DateTimeKind.Utc), reader.ReadString(), reader.ReadString());
        }
    }

    // The page statements for one span of partitions, numbered to run, by [filtered, after a position]; and the text of
    // the first pages' (without the keyset), by [filtered], for exports and EXPLAIN.
    private sealed record Made(EventPartitionSpan.Span Span, Numbered[,] Pages, string[] FirstPages);

    // A statement with its named parameters numbered ($1, $2, ... in the order they first appear, Names), once when it
    // is made: Npgsql sends a statement with positional parameters as it is, where it would parse the text for the
    // names at every execution (6% of the API's samples for a history read, perf during bench/history-baselines.sh).
    private sealed record Numbered(string Sql, string[] Names)
    {
        public static Numbered Of(string sql)
        {
            var names = new List<string>();
            var numbered = Regex.Replace(sql, "@([A-Za-z]+)", match =>
            {
                var index = names.IndexOf(match.Groups[1].Value);
                if (index < 0)
                {
                    names.Add(match.Groups[1].Value);
                    index = names.Count - 1;
                }

                return string.Create(CultureInfo.InvariantCulture, $"${index + 1}");
            });
            return new Numbered(numbered, [.. names]);
        }
    }

    // The page statements for the partitions' current bounds, made again when they change (monthly).
    private volatile Made? _statement;

    /// <summary>
    /// Up to <paramref name="limit"/> events of the device in the project after <paramref name="after"/>, newest
    /// first; null when the device is not in that project and never reported in it.
    /// </summary>
    public async Task<IReadOnlyList<FirmwareEvent>?> PageAsync(
        long deviceId, long projectId, EventFilters filters, Position? after, int limit, ReadContext read,
        CancellationToken cancellationToken)
    {
        var page = Statements().Pages[filters.IsEmpty ? 0 : 1, after is null ? 0 : 1];
        return await reads.RunAsync<IReadOnlyList<FirmwareEvent>?>(read, async connection =>
        {
            var events = await ReadPageAsync(connection, page, deviceId, projectId, filters, after, limit, cancellationToken);

            // An empty page may also mean the device is unknown to the project: only then is that asked.
            if (events.Count == 0 &&
                !await DeviceKnownToProjectAsync(connection, null, deviceId, projectId, cancellationToken))
            {
                return null;
            }

            return events;
        }, cancellationToken);
    }

    // The page's statement on the connection, its parameters by position, its rows read as they come.
    private static async Task<List<FirmwareEvent>> ReadPageAsync(
        NpgsqlConnection connection, Numbered page, long deviceId, long projectId, EventFilters filters, Position? after, int limit,
        CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(page.Sql, connection);
        foreach (var name in page.Names)
        {
            command.Parameters.Add(name switch
            {
                "DeviceId" => new NpgsqlParameter<long> { TypedValue = deviceId },
                "ProjectId" => new NpgsqlParameter<long> { TypedValue = projectId },
                "Since" => Nullable(filters.Since, NpgsqlDbType.TimestampTz),
                "Until" => Nullable(filters.Until, NpgsqlDbType.TimestampTz),
                "AfterOccurredAt" => Nullable(after?.OccurredAt, NpgsqlDbType.TimestampTz),
                "AfterFirmware" => Nullable(after?.Firmware, NpgsqlDbType.Text),
                "AfterStatus" => Nullable(after?.Status, NpgsqlDbType.Text),
                "Statuses" => new NpgsqlParameter<string[]> { TypedValue = filters.Statuses, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text },
                "Firmware" => Nullable(filters.Firmware, NpgsqlDbType.Text),
                "ErrorCode" => Nullable(filters.ErrorCode, NpgsqlDbType.Text),
                "Limit" => new NpgsqlParameter<int> { TypedValue = limit },
                _ => throw new InvalidOperationException($"The history page has no parameter {name}."),
            });
        }

        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var events = new List<FirmwareEvent>();
        while (await reader.ReadAsync(cancellationToken))
        {
            events.Add(new FirmwareEvent(
                reader.GetInt64(0), reader.GetInt64(1), reader.GetInt64(2), reader.GetString(3), reader.GetString(4),
                reader.GetFieldValue<DateTime>(5), reader.GetFieldValue<DateTime>(6),
                reader.IsDBNull(7) ? null : reader.GetString(7), reader.IsDBNull(8) ? null : reader.GetString(8),
                reader.IsDBNull(9) ? null : reader.GetString(9), reader.GetInt64(10)));
        }

        return events;
    }

    private static NpgsqlParameter Nullable(object? value, NpgsqlDbType type) => new() { Value = value ?? DBNull.Value, NpgsqlDbType = type };

    /// <summary>The device's whole history the filters select, in the pages' order: their statement without its bound.</summary>
    public ExportQuery Export(long deviceId, long projectId, EventFilters filters) =>
        new(Statement(filters), new
        {
            DeviceId = deviceId,
            ProjectId = projectId,
            filters.Since,
            filters.Until,
            filters.Statuses,
            filters.Firmware,
            filters.ErrorCode,
            Limit = (int?)null,
        });

    /// <summary>Whether the device is the project's, or reported in it (else a history read is 404); in an export, in its snapshot.</summary>
    public static Task<bool> DeviceKnownToProjectAsync(
        NpgsqlConnection connection, NpgsqlTransaction? transaction, long deviceId, long projectId, CancellationToken cancellationToken) =>
        connection.ExecuteScalarAsync<bool>(new CommandDefinition(
            DeviceKnownToProjectSql, new { DeviceId = deviceId, ProjectId = projectId }, transaction, cancellationToken: cancellationToken));

    /// <summary>The first page's statement for <paramref name="filters"/> with the partitions' bounds as they were last read.</summary>
    public string Statement(EventFilters filters) => Statements().FirstPages[filters.IsEmpty ? 0 : 1];

    private Made Statements()
    {
        var span = partitions.Current;
        var statement = _statement;
        if (statement is null || statement.Span != span)
        {
            var noneBefore = span.From == DateTime.MinValue;
            var sql = PageSql
                .Replace("OUTSIDE_COVERED", noneBefore ? OutsideCoveredNoneBefore : OutsideCovered, StringComparison.Ordinal)
                .Replace("INSIDE_COVERED", noneBefore ? InsideCoveredNoneBefore : InsideCovered, StringComparison.Ordinal)
                .Replace("COVERED_FROM", Literal(span.From), StringComparison.Ordinal)
                .Replace("COVERED_UNTIL", Literal(span.Until), StringComparison.Ordinal);
            var pages = new Numbered[2, 2];
            var firstPages = new string[2];
            for (var filtered = 0; filtered < 2; filtered++)
            {
                for (var after = 0; after < 2; after++)
                {
                    var conditions = DeviceConditions + (after == 1 ? AfterConditions : "") + (filtered == 1 ? FilterConditions : "");
                    var text = sql.Replace("CONDITIONS", conditions, StringComparison.Ordinal);
                    pages[filtered, after] = Numbered.Of(text);
                    if (after == 0)
                    {
                        firstPages[filtered] = text;
                    }
                }
            }

            statement = new Made(span, pages, firstPages);
            _statement = statement;
        }

        return statement;
    }

    private static string Literal(DateTime at) =>
        at == DateTime.MinValue ? "-infinity"
        : at == DateTime.MaxValue ? "infinity"
        : at.ToString("yyyy-MM-dd HH:mm:ss'+00'", CultureInfo.InvariantCulture);
}
