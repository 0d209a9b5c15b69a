using Dapper;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Firmware;
using FirmwareManager.Api.Http;
using Npgsql;

namespace FirmwareManager.Api.Events;

/// <summary>A position in a project's arrival order: the event's feed number (0 before migration 0012), then its id.</summary>
public sealed record ArrivalPosition(long Arrival, long Id) : IPagePosition<ArrivalPosition>
{
    public void WriteTo(BinaryWriter writer)
    {
        writer.Write(Arrival);
        writer.Write(Id);
    }

    public static ArrivalPosition? ReadFrom(BinaryReader reader)
    {
        var arrival = reader.ReadInt64();
        var id = reader.ReadInt64();
        return arrival < 0 ? null : new ArrivalPosition(arrival, id);
    }
}

/// <summary>The project-wide feed of events (<c>/events</c>): newest arrival first, or in arrival order for polling.</summary>
public sealed class EventFeed(ReadRouting reads)
{
    // The project's feed, newest arrival first, from the cursor's position: firmware_events_project_feed_idx
    // read backwards.
    private const string FeedNewestFirstSql = $"""
        SELECT {FirmwareEvents.EventColumns}
        FROM firmware_events AS e
        WHERE e.project_id = @ProjectId
          AND (e.arrival, e.id) < (COALESCE(@BeforeArrival, 9223372036854775807), COALESCE(@BeforeId, 0))
          AND (@DeviceId::bigint IS NULL OR e.device_id = @DeviceId)
          AND e.occurred_at >= COALESCE(@Since::timestamptz, '-infinity')
          AND e.occurred_at < COALESCE(@Until::timestamptz, 'infinity')
          AND (cardinality(@Statuses::text[]) = 0 OR e.status = ANY(@Statuses))
          AND (@Firmware::text IS NULL OR e.firmware = @Firmware)
          AND (@ErrorCode::text IS NULL OR e.error_code = @ErrorCode)
        ORDER BY e.arrival DESC,
                 e.id DESC
        LIMIT @Limit
        """;

    // The project's feed in arrival order after the poller's cursor. The project's numbers are handed out in
    // commit order (migration 0012), so an event numbered below one this reads is already visible: nothing
    // commits behind a cursor that was handed out, and no other project's transactions are waited for.
    private const string FeedAfterSql = $"""
        SELECT {FirmwareEvents.EventColumns}
        FROM firmware_events AS e
        WHERE e.project_id = @ProjectId
          AND (e.arrival, e.id) > (@AfterArrival, @AfterId)
          AND (@DeviceId::bigint IS NULL OR e.device_id = @DeviceId)
          AND e.occurred_at >= COALESCE(@Since::timestamptz, '-infinity')
          AND e.occurred_at < COALESCE(@Until::timestamptz, 'infinity')
          AND (cardinality(@Statuses::text[]) = 0 OR e.status = ANY(@Statuses))
          AND (@Firmware::text IS NULL OR e.firmware = @Firmware)
          AND (@ErrorCode::text IS NULL OR e.error_code = @ErrorCode)
        ORDER BY e.arrival,
                 e.id
        LIMIT @Limit
        """;


    public sealed record FeedEvent(
        long Id, long DeviceId, long ProjectId, string Firmware, string Status, DateTime OccurredAt, DateTime ReceivedAt,
        string? FromFirmware, string? ErrorCode, string? Detail, long Arrival)
    {
        public FirmwareEvent Event => new(Id, DeviceId, ProjectId, Firmware, Status, OccurredAt, ReceivedAt, FromFirmware, ErrorCode, Detail, Arrival);

        public ArrivalPosition Position => new(Arrival, Id);
    }

    /// <summary>
    /// A page of the project's events: newest arrival first before <paramref name="before"/>, or, when
    /// <paramref name="after"/> is given, in arrival order after it.
    /// </summary>
    public async Task<IReadOnlyList<FeedEvent>> FeedPageAsync(
        long projectId, long? deviceId, EventFilters filters, ArrivalPosition? before, ArrivalPosition? after, int limit,
        ReadContext read, CancellationToken cancellationToken) =>
        await reads.RunAsync<IReadOnlyList<FeedEvent>>(read, async connection => (await connection.QueryAsync<FeedEvent>(new CommandDefinition(
            after is null ? FeedNewestFirstSql : FeedAfterSql, Parameters(projectId, deviceId, filters, before, after, limit),
            cancellationToken: cancellationToken))).AsList(),
            cancellationToken);

    /// <summary>Every event the filters select, newest arrival first as the pages are: their statement without its bound.</summary>
    public static ExportQuery Export(long projectId, long? deviceId, EventFilters filters) =>
        new(FeedNewestFirstSql, Parameters(projectId, deviceId, filters, null, null, null));

    private static object Parameters(
        long projectId, long? deviceId, EventFilters filters, ArrivalPosition? before, ArrivalPosition? after, int? limit) => new
        {
            ProjectId = projectId,
            DeviceId = deviceId,
            BeforeArrival = before?.Arrival,
            BeforeId = before?.Id,
            AfterArrival = after?.Arrival ?? 0,
            AfterId = after?.Id ?? 0,
            filters.Since,
            filters.Until,
            filters.Statuses,
            filters.Firmware,
            filters.ErrorCode,
            Limit = limit,
        };
}
