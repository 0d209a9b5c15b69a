using System.Globalization;
using Dapper;
using FirmwareManager.Api.Firmware;
using Npgsql;

namespace FirmwareManager.Api.Events;

/// <summary>A position in arrival order: the storing transaction's id, then the event id.</summary>
public sealed record ArrivalPosition(ulong TxId, long Id);

/// <summary>The project-wide feed of events (<c>/events</c>): newest arrival first, or in arrival order for polling.</summary>
public sealed class EventFeed(NpgsqlDataSource dataSource)
{
    // The project's feed, newest arrival first, from the cursor's position: firmware_events_project_arrival_idx
    // read backwards.
    private const string FeedNewestFirstSql = """
        SELECT e.id AS Id,
               e.device_id AS DeviceId,
               e.project_id AS ProjectId,
               e.firmware AS Firmware,
               e.status AS Status,
               e.occurred_at AS OccurredAt,
               e.received_at AS ReceivedAt,
               e.tx_id::text AS TxId
        FROM firmware_events AS e
        WHERE e.project_id = @ProjectId
          AND (e.tx_id, e.id) < (COALESCE(@BeforeTxId::xid8, '18446744073709551615'), COALESCE(@BeforeId, 0))
          AND (@DeviceId::bigint IS NULL OR e.device_id = @DeviceId)
          AND e.occurred_at >= COALESCE(@Since::timestamptz, '-infinity')
          AND e.occurred_at < COALESCE(@Until::timestamptz, 'infinity')
          AND (cardinality(@Statuses::text[]) = 0 OR e.status = ANY(@Statuses))
          AND (@Firmware::text IS NULL OR e.firmware = @Firmware)
        ORDER BY e.tx_id DESC,
                 e.id DESC
        LIMIT @Limit
        """;

    // The project's feed in arrival order after the poller's cursor, and only as far as every transaction
    // that could still add an event before that point has ended (pg_snapshot_xmin): an event committed late
    // never lands behind a cursor that was already handed out.
    private const string FeedAfterSql = """
        SELECT e.id AS Id,
               e.device_id AS DeviceId,
               e.project_id AS ProjectId,
               e.firmware AS Firmware,
               e.status AS Status,
               e.occurred_at AS OccurredAt,
               e.received_at AS ReceivedAt,
               e.tx_id::text AS TxId
        FROM firmware_events AS e
        WHERE e.project_id = @ProjectId
          AND (e.tx_id, e.id) > (@AfterTxId::xid8, @AfterId)
          AND e.tx_id < pg_snapshot_xmin(pg_current_snapshot())
          AND (@DeviceId::bigint IS NULL OR e.device_id = @DeviceId)
          AND e.occurred_at >= COALESCE(@Since::timestamptz, '-infinity')
          AND e.occurred_at < COALESCE(@Until::timestamptz, 'infinity')
          AND (cardinality(@Statuses::text[]) = 0 OR e.status = ANY(@Statuses))
          AND (@Firmware::text IS NULL OR e.firmware = @Firmware)
        ORDER BY e.tx_id,
                 e.id
        LIMIT @Limit
        """;


    public sealed record FeedEvent(
        long Id, long DeviceId, long ProjectId, string Firmware, string Status, DateTime OccurredAt, DateTime ReceivedAt, string TxId)
    {
        public FirmwareEvent Event => new(Id, DeviceId, ProjectId, Firmware, Status, OccurredAt, ReceivedAt);

        public ArrivalPosition Position => new(ulong.Parse(TxId, CultureInfo.InvariantCulture), Id);
    }

    /// <summary>
    /// A page of the project's events: newest arrival first before <paramref name="before"/>, or, when
    /// <paramref name="after"/> is given, in arrival order after it.
    /// </summary>
    public async Task<IReadOnlyList<FeedEvent>> FeedPageAsync(
        long projectId, long? deviceId, EventFilters filters, ArrivalPosition? before, ArrivalPosition? after, int limit,
        CancellationToken cancellationToken)
    {
        var parameters = new
        {
            ProjectId = projectId,
            DeviceId = deviceId,
            BeforeTxId = before?.TxId.ToString(CultureInfo.InvariantCulture),
            BeforeId = before?.Id,
            AfterTxId = (after?.TxId ?? 0).ToString(CultureInfo.InvariantCulture),
            AfterId = after?.Id ?? 0,
            filters.Since,
            filters.Until,
            filters.Statuses,
            filters.Firmware,
            Limit = limit,
        };
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        var events = await connection.QueryAsync<FeedEvent>(new CommandDefinition(
            after is null ? FeedNewestFirstSql : FeedAfterSql, parameters, cancellationToken: cancellationToken));
        return events.AsList();
    }
}
