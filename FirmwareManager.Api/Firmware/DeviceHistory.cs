using System.Globalization;
using Dapper;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Http;
using Npgsql;

namespace FirmwareManager.Api.Firmware;

/// <summary>
/// A device's history in a project, newest first by the device's clock: a page (keyset paging, every page costs
/// the same) or the whole of it (an export). Events belong to the project they were reported in, on every
/// endpoint: the device's reports from while it belonged to another project are never returned here, and a device
/// that left this project still shows what it reported while it was here.
/// </summary>
public sealed class DeviceHistory(ReadRouting reads, EventPartitionSpan partitions)
{
    // The conditions of a page, in each of the statement's three parts below. The keyset condition is on
    // (occurred_at, firmware, status), ties in a stable order; its occurred_at also bounds the time on its own, so
    // that the partitions after a cursor's time are pruned when the plan starts.
    private const string PageConditions = """
        e.device_id = @DeviceId
              AND e.project_id = @ProjectId
              AND e.occurred_at >= COALESCE(@Since::timestamptz, '-infinity')
              AND e.occurred_at < COALESCE(@Until::timestamptz, 'infinity')
              AND e.occurred_at <= COALESCE(@AfterOccurredAt::timestamptz, 'infinity')
              AND (e.occurred_at, e.firmware, e.status)
                  < (COALESCE(@AfterOccurredAt::timestamptz, 'infinity'), COALESCE(@AfterFirmware, ''), COALESCE(@AfterStatus, ''))
              AND (cardinality(@Statuses::text[]) = 0 OR e.status = ANY(@Statuses))
              AND (@Firmware::text IS NULL OR e.firmware = @Firmware)
              AND (@ErrorCode::text IS NULL OR e.error_code = @ErrorCode)
        """;

    // One page of the history: a backward scan of each partition's history index, in three parts split at the
    // bounds of the months the monthly partitions cover without a gap (COVERED_FROM, COVERED_UNTIL: literals,
    // filled in from the catalog by EventPartitionSpan, never from input; ANY_BEFORE_COVERED is false while the
    // oldest partition has no lower bound, so that the third part is then no scan at all). The middle part names only those
    // partitions, so the planner reads them one after another, newest first (an ordered Append), and the scan
    // stops in the month where the page fills: a page that lies in one or two months enters one or two indexes.
    // With the default partition among them, it would have to enter every month's index at once and merge them
    // (a Merge Append); the default partition (clocks far ahead or behind, after retention dropped older months)
    // is in the two outer parts, with any partition made after the bounds were read. Bounds that are out of date
    // cost only that speed: the parts divide the time between them whatever the bounds are.
    // docs/schema.md, "Across partitions", has the plans.
    private const string PageSql = $"""
        SELECT h.Id, h.DeviceId, h.ProjectId, h.Firmware, h.Status, h.OccurredAt, h.ReceivedAt,
               h.FromFirmware, h.ErrorCode, h.Detail, h.Arrival
        FROM (
            (SELECT {FirmwareEvents.EventColumns}
             FROM firmware_events AS e
             WHERE {PageConditions}
               AND e.occurred_at >= TIMESTAMPTZ 'COVERED_UNTIL'
             ORDER BY e.occurred_at DESC, e.firmware DESC, e.status DESC
             LIMIT @Limit)
            UNION ALL
            (SELECT {FirmwareEvents.EventColumns}
             FROM firmware_events AS e
             WHERE {PageConditions}
               AND e.occurred_at >= TIMESTAMPTZ 'COVERED_FROM'
               AND e.occurred_at < TIMESTAMPTZ 'COVERED_UNTIL'
             ORDER BY e.occurred_at DESC, e.firmware DESC, e.status DESC
             LIMIT @Limit)
            UNION ALL
            (SELECT {FirmwareEvents.EventColumns}
             FROM firmware_events AS e
             WHERE {PageConditions}
               AND e.occurred_at < TIMESTAMPTZ 'COVERED_FROM'
               AND ANY_BEFORE_COVERED
             ORDER BY e.occurred_at DESC, e.firmware DESC, e.status DESC
             LIMIT @Limit)
        ) AS h
        ORDER BY h.OccurredAt DESC, h.Firmware DESC, h.Status DESC
        LIMIT @Limit
        """;

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

    private sealed record Made(EventPartitionSpan.Span Span, string Sql);

    // The page statement for the partitions' current bounds, made again when they change (monthly).
    private volatile Made? _statement;

    /// <summary>
    /// Up to <paramref name="limit"/> events of the device in the project after <paramref name="after"/>, newest
    /// first; null when the device is not in that project and never reported in it.
    /// </summary>
    public async Task<IReadOnlyList<FirmwareEvent>?> PageAsync(
        long deviceId, long projectId, EventFilters filters, Position? after, int limit, ReadContext read,
        CancellationToken cancellationToken)
    {
        var parameters = Parameters(deviceId, projectId, filters, after, limit);
        var sql = Statement();
        return await reads.RunAsync<IReadOnlyList<FirmwareEvent>?>(read, async connection =>
        {
            var events = (await connection.QueryAsync<FirmwareEvent>(
                new CommandDefinition(sql, parameters, cancellationToken: cancellationToken))).AsList();

            // An empty page may also mean the device is unknown to the project: only then is that asked.
            if (events.Count == 0 &&
                !await connection.ExecuteScalarAsync<bool>(new CommandDefinition(DeviceKnownToProjectSql, parameters, cancellationToken: cancellationToken)))
            {
                return null;
            }

            return events;
        }, cancellationToken);
    }

    /// <summary>The device's whole history the filters select, in the pages' order: their statement without its bound.</summary>
    public ExportQuery Export(long deviceId, long projectId, EventFilters filters) =>
        new(Statement(), Parameters(deviceId, projectId, filters, null, null));

    /// <summary>Whether the device is the project's, or reported in it (else a history read is 404), in an export's snapshot.</summary>
    public static Task<bool> DeviceKnownToProjectAsync(
        NpgsqlConnection connection, NpgsqlTransaction transaction, long deviceId, long projectId, CancellationToken cancellationToken) =>
        connection.ExecuteScalarAsync<bool>(new CommandDefinition(
            DeviceKnownToProjectSql, new { DeviceId = deviceId, ProjectId = projectId }, transaction, cancellationToken: cancellationToken));

    /// <summary>The page statement with the partitions' bounds as they were last read.</summary>
    public string Statement()
    {
        var span = partitions.Current;
        var statement = _statement;
        if (statement is null || statement.Span != span)
        {
            statement = new Made(span, PageSql
                .Replace("COVERED_FROM", Literal(span.From), StringComparison.Ordinal)
                .Replace("COVERED_UNTIL", Literal(span.Until), StringComparison.Ordinal)
                .Replace("ANY_BEFORE_COVERED", span.From == DateTime.MinValue ? "false" : "true", StringComparison.Ordinal));
            _statement = statement;
        }

        return statement.Sql;
    }

    private static string Literal(DateTime at) =>
        at == DateTime.MinValue ? "-infinity"
        : at == DateTime.MaxValue ? "infinity"
        : at.ToString("yyyy-MM-dd HH:mm:ss'+00'", CultureInfo.InvariantCulture);

    private static object Parameters(long deviceId, long projectId, EventFilters filters, Position? after, int? limit) => new
    {
        DeviceId = deviceId,
        ProjectId = projectId,
        filters.Since,
        filters.Until,
        AfterOccurredAt = after?.OccurredAt,
        AfterFirmware = after?.Firmware,
        AfterStatus = after?.Status,
        filters.Statuses,
        filters.Firmware,
        filters.ErrorCode,
        Limit = limit,
    };
}
