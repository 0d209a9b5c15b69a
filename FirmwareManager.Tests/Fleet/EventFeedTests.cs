using System.Net;
using System.Net.Http.Json;
using Dapper;
using FirmwareManager.Tests.Infrastructure;
using static FirmwareManager.Tests.Firmware.PagingHistoryTests;

namespace FirmwareManager.Tests.Fleet;

public sealed class EventFeedTests(FirmwareManagerApp app) : ApiTest(app)
{
    private static readonly DateTime Start = new(2024, 9, 1, 0, 0, 0, DateTimeKind.Utc);

    [Fact]
    public async Task The_feed_lists_the_projects_events_newest_arrival_first_in_pages()
    {
        using var device1 = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        await UploadAsync(device1, 1, Enumerable.Range(0, 5).Select(i => Event("3.0.0", "downloading", Start.AddMinutes(-i))));
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);

        var ids = new List<long>();
        for (string? next = "/events?limit=3"; next is not null;)
        {
            var response = await member.GetAsync(next);
            ids.AddRange((await response.JsonAsync()).EnumerateArray().Select(e => e.GetProperty("id").GetInt64()));
            next = NextLink(response);
        }

        ids.Should().HaveCount(9, "the 4 demo events of project 1 (one is device 3's, from before it moved) and the 5 new ones").And.OnlyHaveUniqueItems();
        ids.Take(5).Should().BeInDescendingOrder("the newest arrivals come first");
        ids.Skip(5).Should().Equal(4, 3, 2, 1);
    }

    [Fact]
    public async Task A_poller_following_next_links_gets_every_event_once_including_late_ones_with_old_timestamps()
    {
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        using var device2 = App.ClientWithKey(FirmwareManagerApp.DeviceKey2);

        var first = await member.GetAsync("/events?after=beginning&limit=2");
        var next = NextLink(first);
        var seen = (await first.JsonAsync()).EnumerateArray().Select(e => e.GetProperty("id").GetInt64()).ToList();
        while (true)
        {
            var page = await member.GetAsync(next);
            var ids = (await page.JsonAsync()).EnumerateArray().Select(e => e.GetProperty("id").GetInt64()).ToList();
            NextLink(page).Should().NotBeNull("a poller always gets a position to come back to");
            next = NextLink(page);
            if (ids.Count == 0)
            {
                break;
            }

            seen.AddRange(ids);
        }

        seen.Should().Equal(1, 2, 3, 4);
        await device2.PostEventAsync(2, Event("1.0.2", "updated", Start));
        await device2.PostEventAsync(2, Event("0.1.0", "installed", new DateTime(2001, 1, 1, 0, 0, 0, DateTimeKind.Utc)));

        var later = await (await member.GetAsync(next)).JsonAsync();

        later.EnumerateArray().Select(e => e.GetProperty("firmware").GetString()).Should().Equal("1.0.2", "0.1.0");
    }

    [Fact]
    public async Task Polling_from_latest_serves_only_what_arrives_afterwards_filters_included()
    {
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        using var device2 = App.ClientWithKey(FirmwareManagerApp.DeviceKey2);

        var start = await member.GetAsync("/events?after=latest&limit=50");
        var failedOnly = NextLink(await member.GetAsync("/events?after=latest&status=failed"));
        var emptyProject = NextLink(await App.ClientWithKey(FirmwareManagerApp.MemberKey3).GetAsync("/events?after=latest&device_id=1"));

        (await start.JsonAsync()).EnumerateArray().Should().BeEmpty("the 4 demo events came before");
        await device2.PostEventAsync(2, Event("1.0.2", "updated", Start));
        await device2.PostEventAsync(2, Event("1.0.3", "failed", new DateTime(2001, 1, 1, 0, 0, 0, DateTimeKind.Utc)));

        var polled = await (await member.GetAsync(NextLink(start))).JsonAsync();
        polled.EnumerateArray().Select(e => e.GetProperty("firmware").GetString()).Should().Equal("1.0.2", "1.0.3");
        var failed = await (await member.GetAsync(failedOnly)).JsonAsync();
        failed.EnumerateArray().Select(e => e.GetProperty("firmware").GetString()).Should().Equal("1.0.3");
        emptyProject.Should().NotBeNull("a project with no such event yet polls from the beginning");
    }

    [Fact]
    public async Task A_poller_never_passes_an_event_whose_transaction_is_still_open()
    {
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        using var device1 = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        var next = NextLink(await member.GetAsync("/events?after=beginning&limit=1000"));

        // Another writer's transaction, as ingest writes: the project's next feed number, then the event.
        await using var slow = App.OpenConnection();
        await using var transaction = await slow.BeginTransactionAsync();
        await slow.ExecuteAsync(StoreEventLikeIngestSql, new { ProjectId = 1, DeviceId = 2, Firmware = "5.0.0" }, transaction);
        var report = device1.PostEventAsync(1, Event("5.0.1", "installed", Start));
        await App.WaitUntilASessionWaitsForALockAsync();

        var whileOpen = await member.GetAsync(next);
        (await whileOpen.JsonAsync()).GetArrayLength().Should().Be(0, "the slow transaction started first and may still commit an earlier event");
        await transaction.CommitAsync();
        (await report).StatusCode.Should().Be(HttpStatusCode.Created);
        var afterCommit = await (await member.GetAsync(NextLink(whileOpen))).JsonAsync();

        afterCommit.EnumerateArray().Select(e => e.GetProperty("firmware").GetString()).Should().Equal("5.0.0", "5.0.1");
    }

    [Fact]
    public async Task Another_projects_open_transaction_holds_back_nothing()
    {
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        using var device1 = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        var next = NextLink(await member.GetAsync("/events?after=beginning&limit=1000"));

        await using var slow = App.OpenConnection();
        await using var transaction = await slow.BeginTransactionAsync();
        await slow.ExecuteAsync(StoreEventLikeIngestSql, new { ProjectId = 2, DeviceId = 3, Firmware = "5.0.0" }, transaction);
        (await device1.PostEventAsync(1, Event("5.0.1", "installed", Start))).StatusCode.Should().Be(HttpStatusCode.Created);

        var whileOpen = await (await member.GetAsync(next)).JsonAsync();

        whileOpen.EnumerateArray().Select(e => e.GetProperty("firmware").GetString()).Should().Equal(
            ["5.0.1"], "project 2's open transaction has nothing to do with project 1's feed");
        await transaction.RollbackAsync();
    }

    [Fact]
    public async Task Concurrent_writers_and_a_poller_every_acknowledged_event_is_delivered_exactly_once()
    {
        var devices = new List<(long DeviceId, string Key)>();
        for (var i = 0; i < 8; i++)
        {
            devices.Add(await App.AddDeviceAsync(projectId: 1));
        }

        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var next = NextLink(await member.GetAsync("/events?after=beginning&limit=1000"));
        var acknowledged = new System.Collections.Concurrent.ConcurrentBag<long>();
        var writing = true;
        var writers = devices.Select(async (device, w) =>
        {
            using var client = App.ClientWithKey(device.Key);
            for (var i = 0; i < 40; i++)
            {
                var response = i % 4 == 0
                    ? await client.PostAsJsonAsync($"/firmware/{device.DeviceId}/batch",
                        new[] { Event("6.0.0", "downloading", Start.AddMinutes(i)), Event("6.0.0", "installing", Start.AddMinutes(i).AddSeconds(1)) })
                    : await client.PostEventAsync(device.DeviceId, Event("6.0.0", "downloaded", Start.AddMinutes(i)));
                response.IsSuccessStatusCode.Should().BeTrue();
                if (i % 4 != 0)
                {
                    acknowledged.Add((await response.JsonAsync()).GetProperty("id").GetInt64());
                }
            }
        }).ToList();

        // And a writer whose transactions stay open a while after storing, as a slow ingest transaction would:
        // events stored in an order other than they commit in, unless the feed's numbers follow commit order.
        var (slowDevice, _) = await App.AddDeviceAsync(projectId: 1);
        writers.Add(Task.Run(async () =>
        {
            await using var connection = App.OpenConnection();
            for (var i = 0; i < 30; i++)
            {
                await using var transaction = await connection.BeginTransactionAsync();
                await connection.ExecuteAsync(StoreEventLikeIngestSql, new { ProjectId = 1, DeviceId = slowDevice, Firmware = $"7.0.{i}" }, transaction);
                await Task.Delay(Random.Shared.Next(1, 15));
                await transaction.CommitAsync();
            }
        }));

        var delivered = new List<long>();
        var poller = Task.Run(async () =>
        {
            while (Volatile.Read(ref writing) || delivered.Count == 0)
            {
                var page = await member.GetAsync(next);
                delivered.AddRange((await page.JsonAsync()).EnumerateArray().Select(e => e.GetProperty("id").GetInt64()));
                next = NextLink(page);
            }
        });
        await Task.WhenAll(writers);
        Volatile.Write(ref writing, false);
        await poller;
        for (var drained = false; !drained;)
        {
            var page = await member.GetAsync(next);
            var ids = (await page.JsonAsync()).EnumerateArray().Select(e => e.GetProperty("id").GetInt64()).ToList();
            delivered.AddRange(ids);
            next = NextLink(page);
            drained = ids.Count == 0;
        }

        delivered.Should().OnlyHaveUniqueItems("no event is delivered twice");
        delivered.Should().Contain(acknowledged, "every acknowledged report is delivered");
        await using var connection = App.OpenConnection();
        var stored = (await connection.QueryAsync<long>(
            "SELECT id FROM firmware_events WHERE project_id = 1 AND device_id = ANY(@Ids)",
            new { Ids = devices.Select(d => d.DeviceId).Append(slowDevice).ToArray() })).ToList();
        stored.Should().HaveCount(8 * (30 + 2 * 10) + 30);
        delivered.Should().BeEquivalentTo(stored, "the feed delivers exactly the events stored in the project");
    }

    // What ingest does for one event (FirmwareEvents.RecordEventsSql): the project's next feed number, locked
    // until the transaction ends, and the event with it.
    private const string StoreEventLikeIngestSql = """
        WITH arrival AS (
            INSERT INTO project_event_arrivals AS a (project_id, last_arrival)
            VALUES (@ProjectId, 1)
            ON CONFLICT (project_id) DO UPDATE SET last_arrival = a.last_arrival + 1
            RETURNING a.last_arrival
        )
        INSERT INTO firmware_events (device_id, project_id, firmware, status, occurred_at, arrival)
        SELECT @DeviceId, @ProjectId, @Firmware, 'installed', now(), last_arrival
        FROM arrival
        """;

    [Fact]
    public async Task The_feed_takes_the_history_filters_and_a_device()
    {
        using var device1 = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        using var device2 = App.ClientWithKey(FirmwareManagerApp.DeviceKey2);
        await UploadAsync(device1, 1, [Event("2.0.0", "failed", Start), Event("2.0.0", "failed", Start.AddDays(10)), Event("2.0.0", "updated", Start.AddDays(1))]);
        await UploadAsync(device2, 2, [Event("2.0.0", "failed", Start.AddDays(1))]);
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);

        var found = await (await member.GetAsync("/events?status=failed&firmware=2.0.0&since=2024-09-01T00:00:00Z&until=2024-09-05T00:00:00Z")).JsonAsync();
        var ofDevice2 = await (await member.GetAsync("/events?device_id=2&status=failed")).JsonAsync();

        found.EnumerateArray().Select(e => (e.GetProperty("device_id").GetInt64(), e.GetProperty("timestamp").GetString()))
            .Should().BeEquivalentTo([(1L, "2024-09-01T00:00:00.000000Z"), (2L, "2024-09-02T00:00:00.000000Z")]);
        ofDevice2.EnumerateArray().Should().ContainSingle().Which.GetProperty("device_id").GetInt64().Should().Be(2);
        (await (await member.GetAsync("/events?device_id=two")).ShouldBeValidationProblemAsync()).Should().ContainKey("device_id");
        (await (await member.GetAsync("/events?after=beginning&cursor=x")).ShouldBeValidationProblemAsync()).Should().ContainKey("after");
        (await (await member.GetAsync("/events?after=somewhere")).ShouldBeValidationProblemAsync()).Should().ContainKey("after");
    }
}
