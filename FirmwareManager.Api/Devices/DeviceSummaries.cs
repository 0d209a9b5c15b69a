using Dapper;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Http;
using Npgsql;

namespace FirmwareManager.Api.Devices;

public sealed record DeviceSummary(
    long Id,
    long ProjectId,
    string? Name,
    string? Serial,
    string? CurrentFirmware,
    DateTime? CurrentFirmwareAt,
    DateTime? LastReportedAt,
    string? LastEventStatus,
    DateTime? LastEventAt,
    DateTime CreatedAt,
    DateTime? DecommissionedAt,
    string? DowngradedFrom,
    string? Hardware,
    string TagList)
{
    /// <summary>The tags: read as one comma-separated string (no tag holds a comma), since Dapper maps no array to a constructor.</summary>
    public string[] Tags => TagList.Length == 0 ? [] : TagList.Split(',');
}

/// <summary>
/// The filters of the devices list: the current firmware, the status of the newest event, no report since a time,
/// silent after an update (as <c>/firmware-versions</c> counts it), and an unexplained downgrade.
/// </summary>
public sealed record DeviceFilters(
    string? Firmware, string[] StatusOfLastEvent, DateTime? SilentSince, bool SilentAfterUpdate, bool UnexplainedDowngrade,
    string? Hardware = null, string[]? Tags = null)
{
    /// <summary>
    /// The filters as one canonical string: a cursor is valid only for the query that made it. The first three as
    /// <see cref="Firmware.EventFilters.Key"/> wrote them before the others existed, which join only when given, so
    /// that cursors handed out before them stay valid.
    /// </summary>
    public string Key =>
        new Firmware.EventFilters(SilentSince, null, StatusOfLastEvent, Firmware).Key
        + (SilentAfterUpdate ? "|silent_after_update" : "")
        + (UnexplainedDowngrade ? "|unexplained_downgrade" : "")
        + (Hardware is null ? "" : "|hardware=" + Hardware)
        + (Tags is null or [] ? "" : "|tags=" + string.Join(',', Tags));
}

/// <summary>The devices table, as the fleet views read it.</summary>
public sealed class DeviceSummaries(ReadRouting reads, DatabaseEngine engine, TimeProvider clock)
{
    // Devices in id order after the cursor. With a firmware filter this is a range of
    // devices_project_firmware_idx; without, of the primary key (project_id, id). Devices that never reported
    // count as silent.
    private const string PageSelectSql = """
        SELECT d.id AS Id,
               d.project_id AS ProjectId,
               d.name AS Name,
               d.serial AS Serial,
               d.current_firmware AS CurrentFirmware,
               d.current_firmware_at AS CurrentFirmwareAt,
               d.last_reported_at AS LastReportedAt,
               d.last_event_status AS LastEventStatus,
               d.last_event_at AS LastEventAt,
               d.created_at AS CreatedAt,
               d.decommissioned_at AS DecommissionedAt,
               d.downgraded_from AS DowngradedFrom,
               d.hardware AS Hardware,
               array_to_string(d.tags, ',') AS TagList
        FROM devices AS d
        WHERE d.project_id = @ProjectId
          AND d.id > @AfterId

        """;

    private const string FirmwareFilterSql = "  AND d.current_firmware = @Firmware\n";
    private const string StatusFilterSql = "  AND d.last_event_status = ANY(@Statuses)\n";
    private const string SilentFilterSql = "  AND (d.last_reported_at IS NULL OR d.last_reported_at < @SilentSince)\n";

    // As /firmware-versions counts them (FirmwareVersions.PageSql): through devices_silent_after_update_idx.
    private const string SilentAfterUpdateFilterSql = """
          AND d.last_event_status IN ('installed', 'updated')
          AND d.last_reported_at < @Now::timestamptz - make_interval(hours => (SELECT COALESCE(p.silent_after_hours, 24) FROM projects AS p WHERE p.id = @ProjectId))

        """;

    private const string DowngradeFilterSql = "  AND d.downgraded_from IS NOT NULL\n";

    // devices_project_hardware_idx; the tags through devices_tagged_idx (GIN, of the devices with tags: the second line
    // lets the planner use it; migration 0049): every tag given.
    private const string HardwareFilterSql = "  AND d.hardware = @Hardware\n";
    private const string TagsFilterSql = "  AND d.tags @> @Tags::text[]\n  AND d.tags <> '{}'\n";
    private const string PageOrderSql = "ORDER BY d.id\nLIMIT @Limit";

    // One statement per combination of the optional filters (128, all from the constants above), rather than
    // one with "@Firmware IS NULL OR ..." for each, and each on its generic plan: the index that serves the
    // filters given, read in id order, whatever the values. PostgreSQL had planned the page afresh at every
    // request, planning costing nearly what executing did (docs/performance.md), and still did with the
    // statements split, a firmware run by most of a project skewing its estimates.
    private static readonly string[] PageSql = Enumerable.Range(0, 128)
        .Select(filters => PageSelectSql
            + ((filters & 1) != 0 ? FirmwareFilterSql : "")
            + ((filters & 2) != 0 ? StatusFilterSql : "")
            + ((filters & 4) != 0 ? SilentFilterSql : "")
            + ((filters & 8) != 0 ? SilentAfterUpdateFilterSql : "")
            + ((filters & 16) != 0 ? DowngradeFilterSql : "")
            + ((filters & 32) != 0 ? HardwareFilterSql : "")
            + ((filters & 64) != 0 ? TagsFilterSql : "")
            + PageOrderSql)
        .ToArray();

    private readonly string[] _genericPageSql = PageSql.Select(sql => GenericPlan.ReadOnly(sql, engine)).ToArray();

    public async Task<IReadOnlyList<DeviceSummary>> PageAsync(
        long projectId, DeviceFilters filter, long afterId, int limit, ReadContext read, CancellationToken cancellationToken) =>
        await reads.RunAsync<IReadOnlyList<DeviceSummary>>(read, async connection =>
            (await connection.QueryAsync<DeviceSummary>(new CommandDefinition(
                _genericPageSql[Statement(filter)], Parameters(projectId, filter, afterId, limit), cancellationToken: cancellationToken))).AsList(),
            cancellationToken);

    /// <summary>Every device the filters select, in the pages' order: the page's statement without its bound (<c>LIMIT NULL</c>).</summary>
    public ExportQuery Export(long projectId, DeviceFilters filter) => new(PageSql[Statement(filter)], Parameters(projectId, filter, 0, null));

    private static int Statement(DeviceFilters filter) =>
        (filter.Firmware is null ? 0 : 1) | (filter.StatusOfLastEvent.Length == 0 ? 0 : 2) | (filter.SilentSince is null ? 0 : 4)
        | (filter.SilentAfterUpdate ? 8 : 0) | (filter.UnexplainedDowngrade ? 16 : 0) | (filter.Hardware is null ? 0 : 32)
        | (filter.Tags is null or [] ? 0 : 64);

    private object Parameters(long projectId, DeviceFilters filter, long afterId, int? limit) => new
    {
        ProjectId = projectId,
        AfterId = afterId,
        filter.Firmware,
        Statuses = filter.StatusOfLastEvent,
        filter.SilentSince,
        filter.Hardware,
        Tags = filter.Tags ?? [],
        Now = clock.GetUtcNow().UtcDateTime,
        Limit = limit,
    };

    private const string FindSql = """
        SELECT d.id AS Id,
               d.project_id AS ProjectId,
               d.name AS Name,
               d.serial AS Serial,
               d.current_firmware AS CurrentFirmware,
               d.current_firmware_at AS CurrentFirmwareAt,
               d.last_reported_at AS LastReportedAt,
               d.last_event_status AS LastEventStatus,
               d.last_event_at AS LastEventAt,
               d.created_at AS CreatedAt,
               d.decommissioned_at AS DecommissionedAt,
               d.downgraded_from AS DowngradedFrom,
               d.hardware AS Hardware,
               array_to_string(d.tags, ',') AS TagList
        FROM devices AS d
        WHERE d.id = @DeviceId
          AND d.project_id = @ProjectId
        """;

    /// <summary>The device when it is in the project; null otherwise.</summary>
    public Task<DeviceSummary?> FindAsync(long projectId, long deviceId, ReadContext read, CancellationToken cancellationToken) =>
        reads.RunAsync(read, connection => connection.QuerySingleOrDefaultAsync<DeviceSummary>(
            new CommandDefinition(FindSql, new { ProjectId = projectId, DeviceId = deviceId }, cancellationToken: cancellationToken)),
            cancellationToken);
}

/// <summary>
/// A device as the API shows it. Times are RFC 3339 in UTC, or null before the device reported.
/// <c>unexplained_downgrade_from</c>, only present when set: the version it came down from without a rolled_back report.
/// </summary>
public sealed record DeviceResponse(
    long Id,
    long ProjectId,
    string? Name,
    string? Serial,
    string? CurrentFirmware,
    string? CurrentFirmwareReportedAt,
    string? LastReportedAt,
    string? LastEventStatus,
    string? LastEventAt,
    string CreatedAt,
    string? DecommissionedAt,
    [property: System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    string? UnexplainedDowngradeFrom,
    string? Hardware,
    string[] Tags)
{
    public static DeviceResponse From(DeviceSummary d) => new(
        d.Id,
        d.ProjectId,
        d.Name,
        d.Serial,
        d.CurrentFirmware,
        Format(d.CurrentFirmwareAt),
        Format(d.LastReportedAt),
        d.LastEventStatus,
        Format(d.LastEventAt),
        Rfc3339.Format(d.CreatedAt),
        Format(d.DecommissionedAt),
        d.DowngradedFrom,
        d.Hardware,
        d.Tags);

    private static string? Format(DateTime? time) => time is { } t ? Rfc3339.Format(t) : null;
}
