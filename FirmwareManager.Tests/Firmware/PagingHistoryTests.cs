using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using FirmwareManager.Tests.Infrastructure;

namespace FirmwareManager.Tests.Firmware;

public sealed class PagingHistoryTests(FirmwareManagerApp app) : ApiTest(app)
{
    private static readonly DateTime Start = new(2024, 1, 1, 0, 0, 0, DateTimeKind.Utc);

    [Fact]
    public async Task Paging_through_2500_events_with_limit_1000_returns_each_once_even_while_new_events_arrive()
    {
        var (deviceId, key) = await App.AddDeviceAsync(projectId: 1);
        using var device = App.ClientWithKey(key);
        await UploadAsync(device, deviceId, Enumerable.Range(0, 2500).Select(i => Event("1.0.0", "downloading", Start.AddMinutes(i))));
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);

        var seen = new List<long>();
        var pages = 0;
        string? next = $"/firmware/{deviceId}?limit=1000";
        while (next is not null)
        {
            var response = await member.GetAsync(next);
            response.StatusCode.Should().Be(HttpStatusCode.OK);
            var page = await response.JsonAsync();
            page.GetArrayLength().Should().BeLessThanOrEqualTo(1000);
            seen.AddRange(page.EnumerateArray().Select(e => e.GetProperty("id").GetInt64()));
            next = NextLink(response);
            pages++;

            // New reports between pages, newer and older than anything seen so far.
            await UploadAsync(device, deviceId, [Event("2.0.0", "installed", Start.AddYears(1).AddMinutes(pages)), Event("0.9.0", "installed", Start.AddYears(-1).AddMinutes(pages))]);
        }

        pages.Should().BeGreaterThanOrEqualTo(3);
        seen.Should().OnlyHaveUniqueItems();
        var original = await OriginalIdsAsync(deviceId);
        seen.Should().Contain(original);
        original.Should().HaveCount(2500);
    }

    [Fact]
    public async Task A_page_ends_with_a_next_link_only_while_more_remain_and_the_default_limit_is_100()
    {
        var (deviceId, key) = await App.AddDeviceAsync(projectId: 1);
        using var device = App.ClientWithKey(key);
        await UploadAsync(device, deviceId, Enumerable.Range(0, 150).Select(i => Event("1.0.0", "downloading", Start.AddSeconds(i))));

        var first = await device.GetAsync($"/firmware/{deviceId}");
        var second = await device.GetAsync(NextLink(first));

        (await first.JsonAsync()).GetArrayLength().Should().Be(100);
        NextLink(first).Should().StartWith($"/firmware/{deviceId}?cursor=");
        (await second.JsonAsync()).GetArrayLength().Should().Be(50);
        second.Headers.Contains("Link").Should().BeFalse();
        (await second.JsonAsync())[49].GetProperty("timestamp").GetString().Should().Be("2024-01-01T00:00:00.000000Z");
    }

    [Fact]
    public async Task Filters_combine_and_the_next_link_keeps_them()
    {
        var (deviceId, key) = await App.AddDeviceAsync(projectId: 1);
        using var device = App.ClientWithKey(key);
        var events = new List<object>();
        for (var day = 0; day < 10; day++)
        {
            events.Add(Event("2.0.0", "failed", Start.AddDays(day)));
            events.Add(Event("2.0.0", "rolled_back", Start.AddDays(day).AddHours(1)));
            events.Add(Event("1.0.0", "failed", Start.AddDays(day).AddHours(2)));
            events.Add(Event("2.0.0", "downloading", Start.AddDays(day).AddHours(3)));
        }

        await UploadAsync(device, deviceId, events);

        var url = $"/firmware/{deviceId}?since=2024-01-03T00:00:00Z&until=2024-01-08T00:00:00Z&status=failed,rolled_back&firmware=2.0.0&limit=4";
        var all = new List<JsonElement>();
        var links = new List<string>();
        for (string? next = url; next is not null; next = NextLink(await device.GetAsync(next)))
        {
            all.AddRange((await (await device.GetAsync(next)).JsonAsync()).EnumerateArray());
            links.Add(next);
        }

        links.Should().HaveCount(3);
        links[1].Should().Contain("status=failed,rolled_back").And.Contain("firmware=2.0.0").And.Contain("since=").And.Contain("until=");
        all.Should().HaveCount(10, "5 days of one failed and one rolled_back report of 2.0.0");
        all.Should().OnlyContain(e => e.GetProperty("firmware").GetString() == "2.0.0");
        all.Select(e => e.GetProperty("status").GetString()).Should().OnlyContain(s => s == "failed" || s == "rolled_back");
        all.Select(e => e.GetProperty("timestamp").GetString()).Should().OnlyContain(t =>
            string.CompareOrdinal(t, "2024-01-03") >= 0 && string.CompareOrdinal(t, "2024-01-08") < 0);
        all.Select(e => e.GetProperty("timestamp").GetString()).Should().BeInDescendingOrder(StringComparer.Ordinal);
    }

    [Fact]
    public async Task A_forged_or_borrowed_cursor_is_400()
    {
        var (deviceId, key) = await App.AddDeviceAsync(projectId: 1);
        using var device = App.ClientWithKey(key);
        await UploadAsync(device, deviceId, Enumerable.Range(0, 5).Select(i => Event("1.0.0", "installed", Start.AddDays(i))));
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var cursor = System.Web.HttpUtility.ParseQueryString(new Uri("http://x" + NextLink(await member.GetAsync($"/firmware/{deviceId}?limit=2"))).Query)["cursor"]!;
        var tampered = cursor[..5] + (cursor[5] == 'A' ? 'B' : 'A') + cursor[6..];

        (await member.GetAsync($"/firmware/{deviceId}?limit=2&cursor={cursor}")).StatusCode.Should().Be(HttpStatusCode.OK);
        foreach (var url in new[]
                 {
                     $"/firmware/{deviceId}?limit=2&cursor={tampered}",
                     $"/firmware/{deviceId}?limit=2&cursor=not-a-cursor",
                     $"/firmware/{deviceId}?limit=2&cursor={cursor}&status=installed",
                     $"/firmware/1?limit=2&cursor={cursor}",
                     $"/events?cursor={cursor}",
                 })
        {
            var errors = await (await member.GetAsync(url)).ShouldBeValidationProblemAsync();
            errors.Should().ContainKey("cursor", url);
        }
    }

    [Theory]
    [InlineData("limit=0", "limit")]
    [InlineData("limit=-1", "limit")]
    [InlineData("limit=1001", "limit")]
    [InlineData("limit=99999999999", "limit")]
    [InlineData("limit=ten", "limit")]
    [InlineData("since=yesterday", "since")]
    [InlineData("until=2024-01-01", "until")]
    [InlineData("since=2024-02-01T00:00:00Z&until=2024-01-01T00:00:00Z", "since")]
    [InlineData("status=exploded", "status")]
    [InlineData("status=failed&status=nope", "status")]
    [InlineData("firmware=v1", "firmware")]
    [InlineData("cursor=", "cursor")]
    public async Task A_bad_query_parameter_is_400_naming_it(string query, string parameter)
    {
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);

        var errors = await (await member.GetAsync($"/firmware/1?{query}")).ShouldBeValidationProblemAsync();

        errors.Should().ContainKey(parameter);
    }

    internal static object Event(string firmware, string status, DateTime at) =>
        new { firmware, status, timestamp = at.ToString("yyyy-MM-dd'T'HH:mm:ss.ffffff'Z'", System.Globalization.CultureInfo.InvariantCulture) };

    internal static async Task UploadAsync(HttpClient device, long deviceId, IEnumerable<object> events)
    {
        foreach (var chunk in events.Chunk(1000))
        {
            var response = await device.PostAsJsonAsync($"/firmware/{deviceId}/batch", chunk);
            response.StatusCode.Should().Be(HttpStatusCode.OK, await response.Content.ReadAsStringAsync());
        }
    }

    internal static string NextLink(HttpResponseMessage response)
    {
        if (!response.Headers.TryGetValues("Link", out var values))
        {
            return null!;
        }

        var link = values.Single();
        link.Should().EndWith(">; rel=\"next\"");
        return link[1..link.IndexOf('>', StringComparison.Ordinal)];
    }

    private async Task<List<long>> OriginalIdsAsync(long deviceId)
    {
        await using var connection = App.OpenConnection();
        return (await Dapper.SqlMapper.QueryAsync<long>(connection,
            "SELECT id FROM firmware_events WHERE device_id = @deviceId AND firmware = '1.0.0'", new { deviceId })).ToList();
    }
}
