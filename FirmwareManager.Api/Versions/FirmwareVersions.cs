using System.Collections.Concurrent;
using Dapper;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Http;
using Npgsql;

namespace FirmwareManager.Api.Versions;

/// <summary>
/// One version in a project: devices running it; devices whose newest event for it is failed or rolled_back; devices
/// running it whose newest event is installed or updated and that have reported nothing for longer than the project's
/// <c>silent_after_hours</c>; devices that came down to it from a higher version without a rolled_back report.
/// </summary>
public sealed record FirmwareVersionCount(
    string Firmware, long Devices, long Failed, long RolledBack, long SilentAfterUpdate, long UnexplainedDowngrades,
    [property: System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    IReadOnlyList<HardwareCount>? ByHardware = null);

/// <summary>A version's counts for one hardware revision (null: devices without one).</summary>
public sealed record HardwareCount(string? Hardware, long Devices, long Failed, long RolledBack, long SilentAfterUpdate, long UnexplainedDowngrades);

/// <summary>
/// The filters of <c>/firmware-versions</c>: devices of one hardware revision; devices with every one of some tags;
/// and whether each version is broken down by hardware.
/// </summary>
public sealed record VersionFilters(string? Hardware, string[] Tags, bool ByHardware)
{
    /// <summary>No filter: the page as it was before there were filters.</summary>
    public bool IsNone => Hardware is null && Tags.Length == 0 && !ByHardware;

    public string Key => string.Join('|', Hardware, string.Join(',', Tags), ByHardware);
}

/// <summary>A page of versions, and the precedence key of its last one (where the next page starts).</summary>
/// <summary>Where a page of versions ends: the last version's precedence key (its SemVer order as bytes).</summary>
public sealed record FirmwareVersionPosition(byte[] Key) : IPagePosition<FirmwareVersionPosition>
{
    public static readonly FirmwareVersionPosition First = new([]);

    public void WriteTo(BinaryWriter writer)
    {
        writer.Write(Key.Length);
        writer.Write(Key);
    }

    public static FirmwareVersionPosition? ReadFrom(BinaryReader reader)
    {
        var length = reader.ReadInt32();
        return length is < 1 or > 1024 ? null : reader.ReadBytes(length) is { } key && key.Length == length ? new(key) : null;
    }
}

/// <summary>The firmware_version_counts table, kept up to date by ingest.</summary>
/// <remarks>
/// A fleet dashboard polled by many operators asks the same question of the same project again and again:
/// requests that arrive together share one query (<see cref="SharedReads{TKey, T}"/>), each answered by a query
/// that started after it arrived, so never without its caller's own writes; nothing is kept once given.
/// </remarks>
public sealed class FirmwareVersions(ReadRouting reads, TimeProvider clock)
{
    private readonly SharedReads<(long ProjectId, string Filters, string After, int Limit, bool PrimaryOnly, ulong Floor, long? ProjectionOf, long MinProjected), (KeysetRows<FirmwareVersionCount, FirmwareVersionPosition> Page, ulong Seen, long? Projected)> _shared = new();

    private sealed record Row(
        string Firmware, long Devices, long Failed, long RolledBack, long SilentAfterUpdate, long UnexplainedDowngrades, byte[] PrecedenceKey);

    private sealed record HardwareRow(
        string Firmware, string Hardware, long Devices, long Failed, long RolledBack, long SilentAfterUpdate, long UnexplainedDowngrades);

    // One page in SemVer precedence order (migration 0010's precedence_key), from the key after which it starts:
    // a range of firmware_version_counts_precedence_idx, the stripes of each version added up. Bounded by the
    // page, however many versions a project's devices have reported.
    // With a hardware filter (migration 0031), the counters of that hardware only.
    // Silent after update (migration 0027): the devices counted by the UTC hour of their last report, for the hours
    // before the cutoff's own, plus those that last reported within that hour before the cutoff, counted through
    // devices_silent_after_update_idx (migration 0028). The cutoff is @Now less the project's silent_after_hours.
    private const string PageSql = """
        SELECT v.firmware AS Firmware,
               v.devices AS Devices,
               v.failed AS Failed,
               v.rolled_back AS RolledBack,
               COALESCE((SELECT sum(s.devices)
                         FROM firmware_silence_counts AS s
                         WHERE s.project_id = @ProjectId
                           AND s.firmware = v.firmware
                           AND (@Hardware::text IS NULL OR s.hardware = @Hardware)
                           AND s.reported_hour < cutoff.hour), 0)::bigint
               + (SELECT count(*)
                  FROM devices AS d
                  WHERE d.project_id = @ProjectId
                    AND d.current_firmware = v.firmware
                    AND (@Hardware::text IS NULL OR d.hardware = @Hardware)
                    AND d.last_event_status IN ('installed', 'updated')
                    AND d.last_reported_at >= cutoff.hour
                    AND d.last_reported_at < cutoff.at) AS SilentAfterUpdate,
               v.unexplained_downgrades AS UnexplainedDowngrades,
               v.precedence_key AS PrecedenceKey
        FROM (
            SELECT c.firmware,
                   sum(c.devices)::bigint AS devices,
                   sum(c.failed)::bigint AS failed,
                   sum(c.rolled_back)::bigint AS rolled_back,
                   sum(c.unexplained_downgrades)::bigint AS unexplained_downgrades,
                   c.precedence_key
            FROM firmware_version_counts AS c
            WHERE c.project_id = @ProjectId
              AND c.precedence_key > @After
              AND (@Hardware::text IS NULL OR c.hardware = @Hardware)
            GROUP BY c.precedence_key, c.firmware
            HAVING sum(c.devices) > 0 OR sum(c.failed) > 0 OR sum(c.rolled_back) > 0
            ORDER BY c.precedence_key
            LIMIT @Limit
        ) AS v
        CROSS JOIN (
            SELECT cut.at,
                   date_trunc('hour', cut.at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour
            FROM (
                SELECT @Now::timestamptz - make_interval(hours => COALESCE(p.silent_after_hours, 24)) AS at
                FROM projects AS p
                WHERE p.id = @ProjectId
            ) AS cut
        ) AS cutoff
        ORDER BY v.precedence_key
        """;

    // Devices with some tags have no counters (a device has a set of tags): their versions are counted from the
    // devices themselves, found through devices_tagged_idx (of the devices with tags, hence `d.tags <> '{}'`: migration
    // 0049), and their statuses per version; this costs in proportion to the devices with those tags. The same figures
    // as the counters give, by the same rules.
    private const string TaggedPageSql = """
        SELECT v.firmware AS Firmware,
               sum(v.devices)::bigint AS Devices,
               sum(v.failed)::bigint AS Failed,
               sum(v.rolled_back)::bigint AS RolledBack,
               sum(v.silent)::bigint AS SilentAfterUpdate,
               sum(v.downgrades)::bigint AS UnexplainedDowngrades,
               firmware_precedence_key(v.firmware) AS PrecedenceKey
        FROM (
            SELECT d.current_firmware AS firmware,
                   1 AS devices,
                   0 AS failed,
                   0 AS rolled_back,
                   (d.last_event_status IN ('installed', 'updated') AND d.last_reported_at < cutoff.at)::int AS silent,
                   (d.downgraded_from IS NOT NULL)::int AS downgrades
            FROM devices AS d
            CROSS JOIN (
                SELECT @Now::timestamptz - make_interval(hours => COALESCE(p.silent_after_hours, 24)) AS at
                FROM projects AS p
                WHERE p.id = @ProjectId
            ) AS cutoff
            WHERE d.project_id = @ProjectId
              AND d.tags @> @Tags::text[]
              AND d.tags <> '{}'
              AND (@Hardware::text IS NULL OR d.hardware = @Hardware)
              AND d.current_firmware IS NOT NULL
            UNION ALL
            SELECT s.firmware, 0, (s.status = 'failed')::int, (s.status = 'rolled_back')::int, 0, 0
            FROM device_firmware_status AS s
            JOIN devices AS d ON d.project_id = s.project_id AND d.id = s.device_id
            WHERE s.project_id = @ProjectId
              AND d.project_id = @ProjectId
              AND d.tags @> @Tags::text[]
              AND d.tags <> '{}'
              AND (@Hardware::text IS NULL OR d.hardware = @Hardware)
              AND s.status IN ('failed', 'rolled_back')
        ) AS v
        WHERE firmware_precedence_key(v.firmware) > @After
        GROUP BY v.firmware
        ORDER BY firmware_precedence_key(v.firmware)
        LIMIT @Limit
        """;

    // A page's versions by hardware ('' for devices without one), silence after update counted as PageSql counts it,
    // for each hardware.
    private const string ByHardwareSql = """
        SELECT v.firmware AS Firmware,
               v.hardware AS Hardware,
               v.devices AS Devices,
               v.failed AS Failed,
               v.rolled_back AS RolledBack,
               COALESCE((SELECT sum(s.devices)
                         FROM firmware_silence_counts AS s
                         WHERE s.project_id = @ProjectId
                           AND s.firmware = v.firmware
                           AND s.hardware = v.hardware
                           AND s.reported_hour < cutoff.hour), 0)::bigint
               + (SELECT count(*)
                  FROM devices AS d
                  WHERE d.project_id = @ProjectId
                    AND d.current_firmware = v.firmware
                    AND COALESCE(d.hardware, '') = v.hardware
                    AND d.last_event_status IN ('installed', 'updated')
                    AND d.last_reported_at >= cutoff.hour
                    AND d.last_reported_at < cutoff.at) AS SilentAfterUpdate,
               v.unexplained_downgrades AS UnexplainedDowngrades
        FROM (
            SELECT c.firmware,
                   c.hardware,
                   sum(c.devices)::bigint AS devices,
                   sum(c.failed)::bigint AS failed,
                   sum(c.rolled_back)::bigint AS rolled_back,
                   sum(c.unexplained_downgrades)::bigint AS unexplained_downgrades
            FROM firmware_version_counts AS c
            WHERE c.project_id = @ProjectId
              AND c.firmware = ANY(@Firmwares)
              AND (@Hardware::text IS NULL OR c.hardware = @Hardware)
            GROUP BY c.firmware, c.hardware
            HAVING sum(c.devices) > 0 OR sum(c.failed) > 0 OR sum(c.rolled_back) > 0
        ) AS v
        CROSS JOIN (
            SELECT cut.at,
                   date_trunc('hour', cut.at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour
            FROM (
                SELECT @Now::timestamptz - make_interval(hours => COALESCE(p.silent_after_hours, 24)) AS at
                FROM projects AS p
                WHERE p.id = @ProjectId
            ) AS cut
        ) AS cutoff
        ORDER BY v.firmware, v.hardware
        """;

    /// <summary>
    /// Up to <paramref name="limit"/> of the project's versions in SemVer precedence order, lowest first, after
    /// the version at <paramref name="after"/> (<see cref="FirmwareVersionPosition.First"/>: from the first), and where the
    /// next page starts when more may follow.
    /// </summary>
    public async Task<KeysetRows<FirmwareVersionCount, FirmwareVersionPosition>> PageAsync(
        long projectId, VersionFilters filters, FirmwareVersionPosition after, int limit, ReadContext read, CancellationToken cancellationToken)
    {
        // Requests share a query only when any node that may serve one may serve the other.
        var key = (projectId, filters.Key, Convert.ToHexString(after.Key), limit, read.PrimaryOnly, read.Floor, read.ProjectionOf, read.MinProjected);
        var (primaryOnly, floor, projectionOf, minProjected) = (read.PrimaryOnly, read.Floor, read.ProjectionOf, read.MinProjected);
        var (page, seen, projected) = await _shared.RunAsync(
            key, token => QueryPageAsync(projectId, filters, after, limit, primaryOnly, floor, projectionOf, minProjected, token), cancellationToken);
        read.Seen = seen;
        read.Projected = projected;
        return page;
    }

    private async Task<(KeysetRows<FirmwareVersionCount, FirmwareVersionPosition>, ulong, long?)> QueryPageAsync(
        long projectId, VersionFilters filters, FirmwareVersionPosition after, int limit, bool primaryOnly, ulong floor, long? projectionOf, long minProjected,
        CancellationToken cancellationToken)
    {
        var read = new ReadContext { PrimaryOnly = primaryOnly, ProjectionOf = projectionOf, MinProjected = minProjected };
        read.AtLeast(floor);
        var parameters = new
        {
            ProjectId = projectId,
            After = after.Key,
            Limit = limit + 1,
            Now = clock.GetUtcNow().UtcDateTime,
            filters.Hardware,
            filters.Tags,
        };
        var (rows, byHardware) = await reads.RunAsync(read, async connection =>
        {
            var rows = (await connection.QueryAsync<Row>(new CommandDefinition(
                filters.Tags.Length > 0 ? TaggedPageSql : PageSql, parameters, cancellationToken: cancellationToken))).AsList();
            var byHardware = !filters.ByHardware || rows.Count == 0 ? [] : (await connection.QueryAsync<HardwareRow>(new CommandDefinition(
                ByHardwareSql, new { ProjectId = projectId, Firmwares = rows.Select(r => r.Firmware).ToArray(), filters.Hardware, parameters.Now },
                cancellationToken: cancellationToken))).AsList();
            return (rows, byHardware);
        }, cancellationToken);
        var breakdown = byHardware.ToLookup(h => h.Firmware);
        var page = rows.Take(limit)
            .Select(r => new FirmwareVersionCount(r.Firmware, r.Devices, r.Failed, r.RolledBack, r.SilentAfterUpdate, r.UnexplainedDowngrades,
                filters.ByHardware
                    ? breakdown[r.Firmware].Select(h => new HardwareCount(h.Hardware.Length == 0 ? null : h.Hardware, h.Devices, h.Failed, h.RolledBack, h.SilentAfterUpdate, h.UnexplainedDowngrades)).ToList()
                    : null))
            .ToList();
        var next = rows.Count > limit ? new FirmwareVersionPosition(rows[limit - 1].PrecedenceKey) : null;
        return (new KeysetRows<FirmwareVersionCount, FirmwareVersionPosition>(page, next), read.Seen, read.Projected);
    }
}
