using Dapper;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Http;

namespace FirmwareManager.Api.FleetHealth;

/// <summary>An error code and the devices whose update of a transition failed or was rolled back with it.</summary>
public sealed record ErrorCodeCount(string ErrorCode, long Devices);

/// <summary>
/// One from -> to pair: the devices that attempted it (reported on the target version while coming from the other),
/// and by the newest report of each: succeeded (installed or updated), failed, rolled back, or still in progress.
/// <c>from_firmware</c> is null when the devices did not say and the service could not tell.
/// </summary>
public sealed record FirmwareTransition(
    string? FromFirmware, string ToFirmware, long Attempted, long Succeeded, long Failed, long RolledBack, long InProgress,
    IReadOnlyList<ErrorCodeCount> TopErrorCodes);

/// <summary>The firmware_transition_counts and firmware_transition_errors tables (migration 0027), kept by ingest.</summary>
public sealed class FirmwareTransitions(ReadRouting reads)
{
    /// <summary>How many error codes a transition lists, most devices first.</summary>
    public const int TopErrorCodes = 5;

    private sealed record Row(string ToFirmware, string FromFirmware, long Attempted, long Succeeded, long Failed, long RolledBack);

    private sealed record ErrorRow(string ToFirmware, string FromFirmware, string ErrorCode, long Devices);

    // A page in (to, from) order after the cursor: a range of the table's primary key, narrowed by the filters.
    private const string PageSql = """
        SELECT t.to_firmware AS ToFirmware,
               t.from_firmware AS FromFirmware,
               t.attempted AS Attempted,
               t.succeeded AS Succeeded,
               t.failed AS Failed,
               t.rolled_back AS RolledBack
        FROM firmware_transition_counts AS t
        WHERE t.project_id = @ProjectId
          AND (t.to_firmware, t.from_firmware) > (@AfterTo, @AfterFrom)
          AND (@To::text IS NULL OR t.to_firmware = @To)
          AND (@From::text IS NULL OR t.from_firmware = @From)
          AND t.attempted > 0
        ORDER BY t.to_firmware,
                 t.from_firmware
        LIMIT @Limit
        """;

    // The page's error codes, each pair's most frequent first.
    private const string TopErrorsSql = """
        SELECT ranked.to_firmware AS ToFirmware,
               ranked.from_firmware AS FromFirmware,
               ranked.error_code AS ErrorCode,
               ranked.devices AS Devices
        FROM (
            SELECT e.to_firmware,
                   e.from_firmware,
                   e.error_code,
                   e.devices,
                   row_number() OVER (PARTITION BY e.to_firmware, e.from_firmware ORDER BY e.devices DESC, e.error_code) AS rank
            FROM firmware_transition_errors AS e
            WHERE e.project_id = @ProjectId
              AND e.to_firmware = ANY(@Tos)
              AND e.devices > 0
        ) AS ranked
        WHERE ranked.rank <= @Top
        ORDER BY ranked.to_firmware,
                 ranked.from_firmware,
                 ranked.rank
        """;

    // With a hardware or tag filter, from the devices' own states (device_transition_status) of the devices that match,
    // through the devices' hardware and tag indexes: in time proportional to those devices, as /firmware-versions?tag=.
    // The same figures the counters give, by the same rules. The index of tags holds only tagged devices (migration
    // 0049): with a tag given, the planner folds the second tag condition (planned with its values) into
    // `d.tags <> '{}'`, which lets it use that index; with none (a hardware filter alone) the condition is true.
    private const string FilteredPageSql = """
        SELECT t.to_firmware AS ToFirmware,
               COALESCE(t.from_firmware, '') AS FromFirmware,
               count(*) AS Attempted,
               count(*) FILTER (WHERE t.status IN ('installed', 'updated')) AS Succeeded,
               count(*) FILTER (WHERE t.status = 'failed') AS Failed,
               count(*) FILTER (WHERE t.status = 'rolled_back') AS RolledBack
        FROM device_transition_status AS t
        JOIN devices AS d ON d.project_id = t.project_id AND d.id = t.device_id
        WHERE t.project_id = @ProjectId
          AND d.project_id = @ProjectId
          AND (@Hardware::text IS NULL OR d.hardware = @Hardware)
          AND d.tags @> @Tags::text[]
          AND (d.tags <> '{}' OR cardinality(@Tags::text[]) = 0)
          AND (@To::text IS NULL OR t.to_firmware = @To)
          AND (@From::text IS NULL OR t.from_firmware = @From)
          AND (t.to_firmware, COALESCE(t.from_firmware, '')) > (@AfterTo, @AfterFrom)
        GROUP BY t.to_firmware, COALESCE(t.from_firmware, '')
        ORDER BY t.to_firmware,
                 COALESCE(t.from_firmware, '')
        LIMIT @Limit
        """;

    private const string FilteredTopErrorsSql = """
        SELECT ranked.to_firmware AS ToFirmware,
               ranked.from_firmware AS FromFirmware,
               ranked.error_code AS ErrorCode,
               ranked.devices AS Devices
        FROM (
            SELECT counted.to_firmware,
                   counted.from_firmware,
                   counted.error_code,
                   counted.devices,
                   row_number() OVER (PARTITION BY counted.to_firmware, counted.from_firmware ORDER BY counted.devices DESC, counted.error_code) AS rank
            FROM (
                SELECT t.to_firmware,
                       COALESCE(t.from_firmware, '') AS from_firmware,
                       t.error_code,
                       count(*) AS devices
                FROM device_transition_status AS t
                JOIN devices AS d ON d.project_id = t.project_id AND d.id = t.device_id
                WHERE t.project_id = @ProjectId
                  AND d.project_id = @ProjectId
                  AND (@Hardware::text IS NULL OR d.hardware = @Hardware)
                  AND d.tags @> @Tags::text[]
                  AND (d.tags <> '{}' OR cardinality(@Tags::text[]) = 0)
                  AND t.to_firmware = ANY(@Tos)
                  AND t.status IN ('failed', 'rolled_back')
                  AND t.error_code IS NOT NULL
                GROUP BY t.to_firmware, COALESCE(t.from_firmware, ''), t.error_code
            ) AS counted
        ) AS ranked
        WHERE ranked.rank <= @Top
        ORDER BY ranked.to_firmware,
                 ranked.from_firmware,
                 ranked.rank
        """;

    /// <summary>A position in the transitions' order: the last pair served.</summary>
    public sealed record Position(string To, string From) : IPagePosition<Position>
    {
        public void WriteTo(BinaryWriter writer)
        {
            writer.Write(To);
            writer.Write(From);
        }

        public static Position ReadFrom(BinaryReader reader) => new(reader.ReadString(), reader.ReadString());
    }

    /// <summary>Transitions of the devices of a hardware revision and with every one of some tags, when given.</summary>
    public sealed record DeviceFilter(string? Hardware, string[] Tags)
    {
        public bool IsNone => Hardware is null && Tags.Length == 0;
    }

    public async Task<KeysetRows<FirmwareTransition, Position>> PageAsync(
        long projectId, string? to, string? from, DeviceFilter devices, Position? after, int limit, ReadContext read,
        CancellationToken cancellationToken)
    {
        return await reads.RunAsync(read, async connection =>
        {
            var rows = (await connection.QueryAsync<Row>(new CommandDefinition(devices.IsNone ? PageSql : FilteredPageSql, new
            {
                ProjectId = projectId,
                AfterTo = after?.To ?? "",
                AfterFrom = after?.From ?? "",
                To = to,
                From = from,
                devices.Hardware,
                devices.Tags,
                Limit = limit + 1,
            }, cancellationToken: cancellationToken))).AsList();
            var page = rows.Take(limit).ToList();
            var errors = page.Count == 0 ? [] : (await connection.QueryAsync<ErrorRow>(new CommandDefinition(devices.IsNone ? TopErrorsSql : FilteredTopErrorsSql, new
            {
                ProjectId = projectId,
                Tos = page.Select(r => r.ToFirmware).Distinct().ToArray(),
                devices.Hardware,
                devices.Tags,
                Top = TopErrorCodes,
            }, cancellationToken: cancellationToken))).AsList();
            var byPair = errors.ToLookup(e => (e.ToFirmware, e.FromFirmware));
            IReadOnlyList<FirmwareTransition> transitions = page.Select(r => new FirmwareTransition(
                r.FromFirmware.Length == 0 ? null : r.FromFirmware, r.ToFirmware, r.Attempted, r.Succeeded, r.Failed, r.RolledBack,
                r.Attempted - r.Succeeded - r.Failed - r.RolledBack,
                byPair[(r.ToFirmware, r.FromFirmware)].Select(e => new ErrorCodeCount(e.ErrorCode, e.Devices)).ToList())).ToList();
            return new KeysetRows<FirmwareTransition, Position>(
                transitions, rows.Count > limit ? new Position(page[^1].ToFirmware, page[^1].FromFirmware) : null);
        }, cancellationToken);
    }
}
