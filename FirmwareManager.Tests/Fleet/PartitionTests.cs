using System.Net;
using System.Text.Json;
using Dapper;
using FirmwareManager.Api.Audit;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Firmware;
using FirmwareManager.Api.Upkeep;
using FirmwareManager.Api.Webhooks;
using FirmwareManager.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Npgsql;
using static FirmwareManager.Tests.Firmware.PagingHistoryTests;

namespace FirmwareManager.Tests.Fleet;

/// <summary>
/// firmware_events partitioned by month (migrations 0020-0023): on a fresh install, on a database that already
/// holds events, and kept by the upkeep job (<see cref="UpkeepService"/>), which makes partitions ahead and
/// drops whole months.
/// </summary>
public sealed class PartitionTests
{
    // The partition a row is in; on Citus, tableoid names the shard (firmware_events_default_102395): its table's name.
    private const string Partition = @"regexp_replace(tableoid::regclass::text, '_\d+$', '')";

    private static DateTime ThisMonth => new(DateTime.UtcNow.Year, DateTime.UtcNow.Month, 1, 0, 0, 0, DateTimeKind.Utc);

    [Fact]
    public async Task A_fresh_install_stores_events_by_month_made_ahead_and_far_off_clocks_in_the_default_partition()
    {
        var connectionString = await (await PostgresServer.SharedAsync()).CreateDatabaseAsync();
        await DatabaseMigrator.MigrateAsync(connectionString, applyDemoData: true, NullLogger.Instance);
        await using var service = new ServiceOnDatabase(connectionString);
        using var device = service.CreateClient();
        device.DefaultRequestHeaders.Add("api_key", FirmwareManagerApp.DeviceKey1);
        _ = service.Server;

        // The upkeep job runs at startup: the months after the boundary (the month after next), up to 3 ahead.
        var expected = Enumerable.Range(2, 2).Select(m => EventPartitions.NameOf(ThisMonth.AddMonths(m))).ToList();
        await WaitUntilAsync(async () => (await PartitionNamesAsync(connectionString)).Intersect(expected).Count() == expected.Count);

        var inThreeMonths = ThisMonth.AddMonths(3).AddDays(2);
        foreach (var at in new[] { inThreeMonths, new DateTime(2099, 1, 1, 0, 0, 0, DateTimeKind.Utc), DateTime.UtcNow.AddMinutes(-1) })
        {
            (await device.PostEventAsync(1, Event("5.0.0", "downloading", at))).StatusCode.Should().Be(HttpStatusCode.Created);
        }

        await using var connection = new NpgsqlConnection(connectionString);
        (await connection.ExecuteScalarAsync<string>("SELECT relkind::text FROM pg_class WHERE relname = 'firmware_events'")).Should().Be("p");
        var placed = (await connection.QueryAsync<(DateTime, string)>(
            $"SELECT occurred_at, {Partition} FROM firmware_events WHERE firmware = '5.0.0' ORDER BY occurred_at")).ToList();
        placed.Select(p => p.Item2).Should().Equal(
            "firmware_events_before_partitioning", EventPartitions.NameOf(ThisMonth.AddMonths(3)), "firmware_events_default");

        // A clock five months ahead is past the partitions made: default partition, until its month is made.
        var inFiveMonths = ThisMonth.AddMonths(5).AddDays(9);
        (await device.PostEventAsync(1, Event("5.0.1", "downloading", inFiveMonths))).StatusCode.Should().Be(HttpStatusCode.Created);
        (await connection.ExecuteScalarAsync<string>($"SELECT {Partition} FROM firmware_events WHERE firmware = '5.0.1'"))
            .Should().Be("firmware_events_default");
        var settings = new RetentionOptions { PartitionMonthsAhead = 6 };
        (await Upkeep(connectionString, settings).RunOnceAsync(settings, DateTime.UtcNow, CancellationToken.None)).Should().BeTrue();
        (await connection.ExecuteScalarAsync<string>($"SELECT {Partition} FROM firmware_events WHERE firmware = '5.0.1'"))
            .Should().Be(EventPartitions.NameOf(ThisMonth.AddMonths(5)), "the row moved to its month's partition when that was made");
        (await connection.ExecuteScalarAsync<long>("SELECT count(*) FROM firmware_events_default")).Should().Be(1, "the 2099 clock stays");

        // A device's history still comes newest first, across the partitions.
        using var member = service.CreateClient();
        member.DefaultRequestHeaders.Add("api_key", FirmwareManagerApp.MemberKey1);
        var history = await (await member.GetAsync("/firmware/1")).JsonAsync();
        history.EnumerateArray().Take(3).Select(e => e.GetProperty("timestamp").GetString()).Should().Equal(
            "2099-01-01T00:00:00.000000Z", Rfc3339(inFiveMonths), Rfc3339(inThreeMonths));
    }

    [Fact]
    public async Task A_history_page_enters_the_months_it_lies_in_newest_first_and_no_older_one()
    {
        var connectionString = await (await PostgresServer.SharedAsync()).CreateDatabaseAsync();
        await DatabaseMigrator.MigrateAsync(connectionString, applyDemoData: true, NullLogger.Instance);
        await using var service = new ServiceOnDatabase(connectionString);
        using var member = service.CreateClient();
        member.DefaultRequestHeaders.Add("api_key", FirmwareManagerApp.MemberKey1);
        _ = service.Server;

        // Device 1: ten events in each of the two months made after the boundary, five before it, one in 2099.
        var (older, newer) = (ThisMonth.AddMonths(2), ThisMonth.AddMonths(3));
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.ExecuteAsync("""
            INSERT INTO firmware_events (device_id, project_id, firmware, status, occurred_at)
            SELECT 1, 1, '8.' || g, 'downloading', m + g * interval '1 hour'
            FROM unnest(@Months) AS m, generate_series(1, 10) AS g
            UNION ALL
            SELECT 1, 1, '7.' || g, 'installed', now() - g * interval '1 day' FROM generate_series(1, 5) AS g
            UNION ALL
            SELECT 1, 1, '9.0', 'updated', '2099-01-01'
            """, new { Months = new[] { older, newer } });

        // The first page (the 2099 event and nine of the newest month) reads the newest month's index only: the
        // older month and the partition before the boundary are never entered (an ordered Append, not a merge).
        // So does the statement with the filters' conditions, with a filter that selects every event.
        var unfiltered = new EventFilters(null, null, [], null);
        var filtered = new EventFilters(new DateTime(2000, 1, 1, 0, 0, 0, DateTimeKind.Utc), null, [], null);
        foreach (var filters in new[] { unfiltered, filtered })
        {
            var sql = service.Services.GetRequiredService<DeviceHistory>().Statement(filters);
            var plan = string.Join('\n', await connection.QueryAsync<string>("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + sql, new
            {
                DeviceId = 1L,
                ProjectId = 1L,
                filters.Since,
                filters.Until,
                AfterOccurredAt = (DateTime?)null,
                AfterFirmware = (string?)null,
                AfterStatus = (string?)null,
                filters.Statuses,
                filters.Firmware,
                filters.ErrorCode,
                Limit = 10,
            }));
            string ScanOf(string partition) => plan.Split('\n').Single(line => line.Contains($" on {partition}", StringComparison.Ordinal) && line.Contains("Index Scan", StringComparison.Ordinal)
                && !line.Contains("firmware_events_default", StringComparison.Ordinal));
            ScanOf(EventPartitions.NameOf(newer)).Should().NotContain("never executed", plan);
            ScanOf(EventPartitions.NameOf(older)).Should().Contain("never executed", plan);
            ScanOf("firmware_events_before_partitioning").Should().Contain("never executed", plan);
            if (filters.IsEmpty)
            {
                sql.Should().NotContain("@Since").And.NotContain("@Statuses", "a page without filters carries no filter's condition");
            }
            else
            {
                sql.Should().Contain("@Since").And.Contain("@Statuses").And.Contain("@ErrorCode");
            }
        }

        // And the pages through the API: every event once, newest first, across the default partition, both months and the partition before.
        var seen = new List<string>();
        for (var next = "/firmware/1?limit=7"; next is not null;)
        {
            var response = await member.GetAsync(next);
            response.StatusCode.Should().Be(HttpStatusCode.OK);
            seen.AddRange((await response.JsonAsync()).EnumerateArray().Select(e => e.GetProperty("timestamp").GetString()!));
            next = response.Headers.TryGetValues("Link", out var links) ? links.Single().Split('<', '>')[1] : null;
        }

        var stored = await connection.ExecuteScalarAsync<long>("SELECT count(*) FROM firmware_events WHERE device_id = 1 AND project_id = 1");
        seen.Should().HaveCount((int)stored).And.HaveCountGreaterThan(26).And.OnlyHaveUniqueItems();
        seen.Should().BeInDescendingOrder(StringComparer.Ordinal);
        seen[0].Should().StartWith("2099-01-0");
    }

    [Fact]
    public async Task A_row_moved_out_of_the_default_partition_keeps_every_column_the_table_has()
    {
        var connectionString = await (await PostgresServer.SharedAsync()).CreateDatabaseAsync();
        await DatabaseMigrator.MigrateAsync(connectionString, applyDemoData: true, NullLogger.Instance);
        await using var service = new ServiceOnDatabase(connectionString);
        using var device = service.CreateClient();
        device.DefaultRequestHeaders.Add("api_key", FirmwareManagerApp.DeviceKey1);
        using var member = service.CreateClient();
        member.DefaultRequestHeaders.Add("api_key", FirmwareManagerApp.MemberKey1);

        // A failure seven months ahead, past the partitions made at startup (3 ahead): the default partition.
        var at = ThisMonth.AddMonths(7).AddDays(3);
        var created = await device.PostEventAsync(1, new
        {
            firmware = "2.0.0",
            status = "failed",
            timestamp = at,
            from_firmware = "1.0.0",
            error_code = "E_SIG_VERIFY",
            detail = "slot B",
        });
        created.StatusCode.Should().Be(HttpStatusCode.Created);
        var id = (await created.JsonAsync()).GetProperty("id").GetInt64();
        await using var connection = new NpgsqlConnection(connectionString);
        const string whole = "SELECT to_jsonb(e)::text FROM firmware_events AS e WHERE project_id = 1 AND id = @Id";
        (await connection.ExecuteScalarAsync<string>($"SELECT {Partition} FROM firmware_events WHERE project_id = 1 AND id = @Id", new { Id = id }))
            .Should().Be("firmware_events_default");
        var before = JsonDocument.Parse((await connection.ExecuteScalarAsync<string>(whole, new { Id = id }))!).RootElement.Clone();
        var answerBefore = await (await member.GetAsync($"/firmware/1/events/{id}")).Content.ReadAsStringAsync();

        var settings = new RetentionOptions { PartitionMonthsAhead = 12 };
        (await Upkeep(connectionString, settings).RunOnceAsync(settings, DateTime.UtcNow, CancellationToken.None)).Should().BeTrue();

        (await connection.ExecuteScalarAsync<string>($"SELECT {Partition} FROM firmware_events WHERE project_id = 1 AND id = @Id", new { Id = id }))
            .Should().Be(EventPartitions.NameOf(ThisMonth.AddMonths(7)), "the row moved to its month's partition when that was made");
        var after = JsonDocument.Parse((await connection.ExecuteScalarAsync<string>(whole, new { Id = id }))!).RootElement;
        // Every column the catalog lists now, so that a column added later is checked without touching this test;
        // each must have a value here, or the comparison would prove nothing for it.
        var columns = (await connection.QueryAsync<string>("""
            SELECT attname
            FROM pg_attribute
            WHERE attrelid = 'firmware_events'::regclass
              AND attnum > 0
              AND NOT attisdropped
            ORDER BY attnum
            """)).ToList();
        columns.Should().Contain(["from_firmware", "error_code", "detail"]);
        foreach (var column in columns)
        {
            before.GetProperty(column).ValueKind.Should().NotBe(JsonValueKind.Null,
                $"the report sets {column}: give it a value here when a column is added, so that its move is checked");
            after.GetProperty(column).GetRawText().Should().Be(before.GetProperty(column).GetRawText(), $"{column} is moved as it was");
        }

        (await (await member.GetAsync($"/firmware/1/events/{id}")).Content.ReadAsStringAsync()).Should().Be(answerBefore);
    }

    [Fact]
    public async Task A_report_routed_to_the_default_partition_while_its_month_is_attached_is_stored_in_that_month()
    {
        var connectionString = await (await PostgresServer.SharedAsync()).CreateDatabaseAsync();
        await DatabaseMigrator.MigrateAsync(connectionString, applyDemoData: true, NullLogger.Instance);
        await using var service = new ServiceOnDatabase(connectionString);
        using var device = service.CreateClient();
        device.DefaultRequestHeaders.Add("api_key", FirmwareManagerApp.DeviceKey1);
        (await device.PostEventAsync(1, Event("1.0.0", "installed", DateTime.UtcNow))).StatusCode.Should().Be(HttpStatusCode.Created);

        // What the upkeep job does to make a month, held open between its lock and its ATTACH (as a slow move would
        // be), while a report of that month is routed to the default partition and waits for the lock.
        var month = ThisMonth.AddMonths(8);
        var name = EventPartitions.NameOf(month);
        await using var upkeep = await new MaintenanceConnection(connectionString).OpenAsync(CancellationToken.None);
        await using var transaction = await upkeep.BeginTransactionAsync();
        await upkeep.ExecuteAsync($"CREATE TABLE {name} (LIKE firmware_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)", transaction: transaction);
        if (PostgresServer.IsCitus)
        {
            await upkeep.ExecuteAsync("SET LOCAL citus.multi_shard_modify_mode = 'sequential'", transaction: transaction);
            await upkeep.ExecuteAsync($"SELECT create_distributed_table('{name}', 'project_id', colocate_with => 'firmware_events')", transaction: transaction);
        }

        await upkeep.ExecuteAsync("LOCK TABLE firmware_events_default IN SHARE ROW EXCLUSIVE MODE", transaction: transaction);
        var report = device.PostEventAsync(1, Event("8.0.0", "downloading", month.AddDays(4)));
        await using var observer = new NpgsqlConnection(connectionString);
        await WaitUntilAsync(async () => await observer.ExecuteScalarAsync<bool>(
            "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%firmware_events%')") || report.IsCompleted);
        report.IsCompleted.Should().BeFalse("the report waits for the default partition's lock");
        await upkeep.ExecuteAsync(
            string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"ALTER TABLE firmware_events ATTACH PARTITION {name} FOR VALUES FROM ('{month:yyyy-MM-dd}+00') TO ('{month.AddMonths(1):yyyy-MM-dd}+00')"),
            transaction: transaction);
        await transaction.CommitAsync();

        var answer = await report;
        answer.StatusCode.Should().Be(HttpStatusCode.Created, "the report is tried again and routed to its month: " + await answer.Content.ReadAsStringAsync());
        await using var connection = new NpgsqlConnection(connectionString);
        (await connection.ExecuteScalarAsync<string>($"SELECT {Partition} FROM firmware_events WHERE firmware = '8.0.0'")).Should().Be(name);
    }

    [Fact]
    public async Task Migrating_a_database_full_of_events_partitions_it_and_keeps_every_event_and_id()
    {
        var connectionString = await (await PostgresServer.SharedAsync()).CreateDatabaseAsync();
        // The schema as it was before partitioning, with the demo data and 30,000 more events, clocks far off included.
        await DatabaseMigrator.MigrateAsync(connectionString, applyDemoData: true, NullLogger.Instance, throughScript: 19);
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.ExecuteAsync("""
            INSERT INTO firmware_events (device_id, project_id, firmware, status, occurred_at, arrival)
            SELECT 1 + g % 2, 1, '3.' || g || '.0', 'installed',
                   CASE WHEN g % 1000 = 0 THEN timestamptz '2099-06-01' + g * interval '1 s'
                        WHEN g % 1000 = 1 THEN timestamptz '1970-01-01' + g * interval '1 s'
                        ELSE now() - g * interval '10 minutes' END,
                   g
            FROM generate_series(1, 30000) AS g
            """);
        const string everything = """
            SELECT string_agg(concat_ws('|', id, device_id, project_id, firmware, status, occurred_at, received_at, arrival), ',' ORDER BY id)
            FROM firmware_events
            """;
        var before = await connection.ExecuteScalarAsync<string>(everything);
        var lastId = await connection.ExecuteScalarAsync<long>("SELECT max(id) FROM firmware_events");

        await DatabaseMigrator.MigrateAsync(connectionString, applyDemoData: false, NullLogger.Instance);

        (await connection.ExecuteScalarAsync<string>("SELECT relkind::text FROM pg_class WHERE relname = 'firmware_events'")).Should().Be("p");
        (await connection.ExecuteScalarAsync<string>(everything)).Should().Be(before, "every event is kept as it was");
        (await connection.ExecuteScalarAsync<long>("SELECT count(*) FROM firmware_events_default")).Should().Be(30,
            "the 30 clocks in 2099, after the boundary, were moved to the default partition");
        (await connection.ExecuteScalarAsync<long>("SELECT count(*) FROM firmware_events_before_partitioning WHERE occurred_at < '2099-01-01'"))
            .Should().Be(await connection.ExecuteScalarAsync<long>("SELECT count(*) FROM firmware_events WHERE occurred_at < '2099-01-01'"),
                "every other event stayed where it was: the old table is the partition of everything before the boundary");
        (await PartitionNamesAsync(connectionString)).Should().Contain(["firmware_events_before_partitioning", "firmware_events_default"]);

        // The service starts on it, makes its partitions, and ingest and history work; ids go on from the old ones.
        await using var service = new ServiceOnDatabase(connectionString);
        using var device = service.CreateClient();
        device.DefaultRequestHeaders.Add("api_key", FirmwareManagerApp.DeviceKey1);
        var created = await device.PostEventAsync(1, Event("4.0.0", "updated", DateTime.UtcNow));
        created.StatusCode.Should().Be(HttpStatusCode.Created);
        (await created.JsonAsync()).GetProperty("id").GetInt64().Should().BeGreaterThan(lastId);
        var repeat = await device.PostEventAsync(1, Event("3.2.0", "installed", await connection.ExecuteScalarAsync<DateTime>(
            "SELECT occurred_at FROM firmware_events WHERE firmware = '3.2.0'")));
        repeat.StatusCode.Should().Be(HttpStatusCode.OK, "a repeat of an event stored before partitioning is still found");
        var history = await (await device.GetAsync("/firmware/1?limit=3")).JsonAsync();
        history[0].GetProperty("firmware").GetString().Should().StartWith("3.", "the far-future clocks come first");
    }

    [Fact]
    public async Task Retention_drops_whole_months_and_deletes_row_by_row_only_in_the_month_of_the_cutoff()
    {
        var connectionString = await (await PostgresServer.SharedAsync()).CreateDatabaseAsync();
        await DatabaseMigrator.MigrateAsync(connectionString, applyDemoData: true, NullLogger.Instance);
        var settings = new RetentionOptions { PartitionMonthsAhead = 6 };
        var upkeep = Upkeep(connectionString, settings);
        (await upkeep.RunOnceAsync(settings, DateTime.UtcNow, CancellationToken.None)).Should().BeTrue();
        await using var connection = new NpgsqlConnection(connectionString);
        // Device 1 reports once a day for the next six months.
        await connection.ExecuteAsync("""
            INSERT INTO firmware_events (device_id, project_id, firmware, status, occurred_at)
            SELECT 1, 1, '9.' || g, 'downloading', date_trunc('day', now()) + g * interval '1 day' FROM generate_series(0, 180) AS g
            """);
        var state = await StateAsync(connection);

        // Five months on, with a 30-day retention: the cutoff is in the fourth month from now.
        var later = DateTime.UtcNow.AddDays(150);
        var cutoff = later.AddDays(-30);
        settings.MaxAgeDays = 30;
        settings.BatchSize = 100;
        (await upkeep.RunOnceAsync(settings, later, CancellationToken.None)).Should().BeTrue();

        var partitions = await PartitionNamesAsync(connectionString);
        partitions.Should().NotContain("firmware_events_before_partitioning", "its every time is older than the cutoff");
        await using (var owner = await new MaintenanceConnection(connectionString).OpenAsync(CancellationToken.None))
        {
            // What a history page then splits its reads at: the oldest month left, up to the newest made.
            var span = EventPartitionSpan.Of(await EventPartitions.ListAsync(owner, CancellationToken.None));
            var oldest = new DateTime(cutoff.Year, cutoff.Month, 1, 0, 0, 0, DateTimeKind.Utc);
            span.Should().Be(new EventPartitionSpan.Span(oldest, new DateTime(later.Year, later.Month, 1, 0, 0, 0, DateTimeKind.Utc).AddMonths(7)));
        }

        partitions.Should().Contain(EventPartitions.NameOf(new DateTime(cutoff.Year, cutoff.Month, 1, 0, 0, 0, DateTimeKind.Utc)));
        (await connection.ExecuteScalarAsync<long>("SELECT count(*) FROM firmware_events WHERE occurred_at < @Cutoff", new { Cutoff = cutoff }))
            .Should().Be(0);
        (await connection.ExecuteScalarAsync<long>("SELECT count(*) FROM firmware_events WHERE occurred_at >= @Cutoff", new { Cutoff = cutoff }))
            .Should().BeGreaterThan(40, "the events of the last 30 days and later stay");
        (await StateAsync(connection)).Should().Be(state, "current firmware, device summaries and counts are kept as they are");

        // A clock from before the oldest month left is stored in the default partition, and a history page still has
        // it, last, below the months (the page statement's first part, with the clocks after them); and so do pages
        // of 7 that walk the whole history through their cursors, each event once.
        await connection.ExecuteAsync("INSERT INTO firmware_events (device_id, project_id, firmware, status, occurred_at) VALUES (1, 1, '0.1', 'installed', '2019-05-01Z')");
        await using (var service = new ServiceOnDatabase(connectionString))
        {
            using var member = service.CreateClient();
            member.DefaultRequestHeaders.Add("api_key", FirmwareManagerApp.MemberKey1);
            var history = (await (await member.GetAsync("/firmware/1?limit=1000")).JsonAsync()).EnumerateArray()
                .Select(e => e.GetProperty("timestamp").GetString()!).ToList();
            history.Should().HaveCount((int)await connection.ExecuteScalarAsync<long>("SELECT count(*) FROM firmware_events WHERE device_id = 1 AND project_id = 1"));
            history.Should().BeInDescendingOrder(StringComparer.Ordinal);
            history[^1].Should().Be("2019-05-01T00:00:00.000000Z");

            var paged = new List<string>();
            for (var next = "/firmware/1?limit=7"; next is not null;)
            {
                var response = await member.GetAsync(next);
                paged.AddRange((await response.JsonAsync()).EnumerateArray().Select(e => e.GetProperty("timestamp").GetString()!));
                next = response.Headers.TryGetValues("Link", out var link) ? link.Single().Split('<', '>')[1] : null;
            }

            paged.Should().Equal(history);
        }
    }

    private static string Rfc3339(DateTime at) =>
        at.ToString("yyyy-MM-dd'T'HH:mm:ss.ffffff'Z'", System.Globalization.CultureInfo.InvariantCulture);

    internal static UpkeepService Upkeep(string connectionString, RetentionOptions settings)
    {
        var engine = new DatabaseEngine(PostgresServer.IsCitus);
        IUpkeepStep[] steps =
        [
            new EventUpkeep(engine, new EventPartitionSpan(), NullLogger<EventUpkeep>.Instance),
            new AuditRetention(NullLogger<AuditRetention>.Instance),
            new DeliveryRetention(NullLogger<DeliveryRetention>.Instance),
        ];
        return new UpkeepService(new MaintenanceConnection(connectionString), engine, steps, Options.Create(settings), NullLogger<UpkeepService>.Instance);
    }

    internal static async Task<string> StateAsync(NpgsqlConnection connection) => await connection.ExecuteScalarAsync<string>("""
        SELECT (SELECT string_agg(concat_ws(':', id, current_firmware, last_event_status, last_event_at), ',' ORDER BY id) FROM devices)
            || ' | ' ||
               (SELECT string_agg(project_id || ':' || firmware || ':' || devices || '/' || failed || '/' || rolled_back, ',' ORDER BY project_id, firmware, stripe)
                FROM firmware_version_counts)
        """) ?? "";

    private static async Task<List<string>> PartitionNamesAsync(string connectionString)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        return (await connection.QueryAsync<string>(
            "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid WHERE i.inhparent = 'firmware_events'::regclass")).ToList();
    }

    private static async Task WaitUntilAsync(Func<Task<bool>> condition)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (!await condition())
        {
            DateTime.UtcNow.Should().BeBefore(deadline);
            await Task.Delay(100);
        }
    }
}
