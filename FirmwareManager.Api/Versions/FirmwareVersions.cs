using System.Collections.Concurrent;
using Dapper;
using FirmwareManager.Api.Database;
using Npgsql;

namespace FirmwareManager.Api.Versions;

/// <summary>
/// One version in a project: devices running it; devices whose newest event for it is failed or rolled_back; devices
/// running it whose newest event is installed or updated and that have reported nothing for longer than the project's
/// <c>silent_after_hours</c>; devices that came down to it from a higher version without a rolled_back report.
/// </summary>
public sealed record FirmwareVersionCount(
    string Firmware, long Devices, long Failed, long RolledBack, long SilentAfterUpdate, long UnexplainedDowngrades);

/// <summary>A page of versions, and the precedence key of its last one (where the next page starts).</summary>
public sealed record FirmwareVersionPage(IReadOnlyList<FirmwareVersionCount> Versions, byte[]? LastKey);

/// <summary>The firmware_version_counts table, kept up to date by ingest.</summary>
/// <remarks>
/// A fleet dashboard polled by many operators asks the same question of the same project again and again:
/// requests that arrive while the same page's query is running share its answer instead of each running it
/// again. An answer is therefore never older than the query that produced it; nothing is kept once given.
/// </remarks>
public sealed class FirmwareVersions(ReadRouting reads, TimeProvider clock)
{
    private readonly ConcurrentDictionary<(long ProjectId, string After, int Limit, bool PrimaryOnly, ulong Floor), Lazy<Task<(FirmwareVersionPage Page, ulong Seen)>>> _running = new();

    private sealed record Row(
        string Firmware, long Devices, long Failed, long RolledBack, long SilentAfterUpdate, long UnexplainedDowngrades, byte[] PrecedenceKey);

    // One page in SemVer precedence order (migration 0010's precedence_key), from the key after which it starts:
    // a range of firmware_version_counts_precedence_idx, the stripes of each version added up. Bounded by the
    // page, however many versions a project's devices have reported.
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
                           AND s.reported_hour < cutoff.hour), 0)::bigint
               + (SELECT count(*)
                  FROM devices AS d
                  WHERE d.project_id = @ProjectId
                    AND d.current_firmware = v.firmware
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

    /// <summary>
    /// Up to <paramref name="limit"/> of the project's versions in SemVer precedence order, lowest first, after
    /// the version whose key is <paramref name="after"/> (empty: from the first); <see cref="FirmwareVersionPage.LastKey"/>
    /// is set when more may follow.
    /// </summary>
    public async Task<FirmwareVersionPage> PageAsync(long projectId, byte[] after, int limit, ReadContext read, CancellationToken cancellationToken)
    {
        // Requests share a query only when any node that may serve one may serve the other.
        var key = (projectId, Convert.ToHexString(after), limit, read.PrimaryOnly, read.Floor);
        var query = new Lazy<Task<(FirmwareVersionPage Page, ulong Seen)>>(() => QueryPageAsync(projectId, after, limit, read.PrimaryOnly, read.Floor));
        var running = _running.GetOrAdd(key, query);
        if (ReferenceEquals(running, query))
        {
            // This request started the query: once it ends, the next request starts a new one.
            _ = query.Value.ContinueWith(
                _ => _running.TryRemove(KeyValuePair.Create(key, query)), CancellationToken.None,
                TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }

        // Only this request's wait is cancelled: the query is shared.
        var (page, seen) = await running.Value.WaitAsync(cancellationToken);
        read.Seen = seen;
        return page;
    }

    private async Task<(FirmwareVersionPage, ulong)> QueryPageAsync(long projectId, byte[] after, int limit, bool primaryOnly, ulong floor)
    {
        var read = new ReadContext { PrimaryOnly = primaryOnly };
        read.AtLeast(floor);
        var rows = await reads.RunAsync(read, async connection => (await connection.QueryAsync<Row>(new CommandDefinition(
            PageSql, new { ProjectId = projectId, After = after, Limit = limit + 1, Now = clock.GetUtcNow().UtcDateTime }))).AsList(), CancellationToken.None);
        var page = rows.Take(limit)
            .Select(r => new FirmwareVersionCount(r.Firmware, r.Devices, r.Failed, r.RolledBack, r.SilentAfterUpdate, r.UnexplainedDowngrades))
            .ToList();
        return (new FirmwareVersionPage(page, rows.Count > limit ? rows[limit - 1].PrecedenceKey : null), read.Seen);
    }
}
