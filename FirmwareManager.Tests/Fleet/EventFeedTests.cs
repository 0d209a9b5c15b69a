using System.Net;
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
    public async Task A_poller_never_passes_an_event_whose_transaction_is_still_open()
    {
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        using var device1 = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        var next = NextLink(await member.GetAsync("/events?after=beginning&limit=1000"));

        await using var slow = App.OpenConnection();
        await using var transaction = await slow.BeginTransactionAsync();
        await slow.ExecuteAsync(
            "INSERT INTO firmware_events (device_id, project_id, firmware, status, occurred_at) VALUES (2, 1, '5.0.0', 'installed', now())",
            transaction: transaction);
        (await device1.PostEventAsync(1, Event("5.0.1", "installed", Start))).StatusCode.Should().Be(HttpStatusCode.Created);

        var whileOpen = await member.GetAsync(next);
        (await whileOpen.JsonAsync()).GetArrayLength().Should().Be(0, "the slow transaction started first and may still commit an earlier event");
        await transaction.CommitAsync();
        var afterCommit = await (await member.GetAsync(NextLink(whileOpen))).JsonAsync();

        afterCommit.EnumerateArray().Select(e => e.GetProperty("firmware").GetString()).Should().Equal("5.0.0", "5.0.1");
    }

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
