using System.Net;
using System.Net.Http.Json;
using CsCheck;
using Dapper;
using FirmwareManager.Api.Firmware;
using FirmwareManager.Api.Versions;
using FirmwareManager.Tests.Infrastructure;
using FirmwareManager.Tests.Versions;

namespace FirmwareManager.Tests.Fleet;

/// <summary><c>/firmware-versions</c> is paged in SemVer precedence order, which the database computes (migration 0010).</summary>
public sealed class VersionPagingTests(FirmwareManagerApp app) : ApiTest(app)
{
    private static Gen<T> Pick<T>(params T[] values) => Gen.Int[0, values.Length - 1].Select(i => values[i]);

    private static readonly Gen<string> Identifier = Gen.OneOf(
        Gen.Int[0, 30].Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture)),
        Pick("alpha", "beta", "rc", "x-y", "a", "A", "z9", "0a", "-", "--", "999999999999999999999", "1a"),
        Gen.String[Gen.Char["abcXYZ-"], 1, 4]);

    /// <summary>Versions that share cores often, so that pre-release and build rules decide.</summary>
    private static readonly Gen<string> Version = Gen.Select(
        Pick("0", "1", "2", "10", "12345678901234567890"), Pick("0", "1", "9", "10"), Pick("0", "1", "2"),
        Identifier.Array[0, 3], Pick("", "+build.5", "+001", "+a.b"),
        (major, minor, patch, pre, build) =>
            $"{major}.{minor}.{patch}{(pre.Length == 0 ? "" : "-" + string.Join('.', pre))}{build}");

    [Fact]
    public async Task The_databases_precedence_key_orders_generated_versions_exactly_as_SemVer_precedence()
    {
        await using var connection = App.OpenConnection();

        await Version.Array[2, 40].SampleAsync(async versions =>
        {
            versions.Should().OnlyContain(v => SemanticVersion.IsValid(v));
            var byDatabase = (await connection.QueryAsync<string>(
                "SELECT v FROM unnest(@versions) AS v ORDER BY firmware_precedence_key(v)", new { versions })).ToList();

            byDatabase.Should().Equal(versions.Order(SemVerOrder.Instance), string.Join(" ", versions));
        }, iter: 400, threads: 1);
    }

    [Fact]
    public async Task Thousands_of_versions_come_in_bounded_pages_in_precedence_order_each_once()
    {
        // A device can make a version a report: a failed update to each of 2,500 versions.
        var versions = Enumerable.Range(0, 2500)
            .Select(i => i % 3 == 0 ? $"1.{i % 50}.{i}" : i % 3 == 1 ? $"1.{i % 50}.0-rc.{i}" : $"2.0.0-build{i}")
            .ToList();
        var (deviceId, key) = await App.AddDeviceAsync(projectId: 1);
        using var device = App.ClientWithKey(key);
        foreach (var chunk in versions.Chunk(1000))
        {
            (await device.PostAsJsonAsync($"/firmware/{deviceId}/batch", chunk.Select(v => new { firmware = v, status = "failed" })))
                .StatusCode.Should().Be(HttpStatusCode.OK);
        }

        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var seen = new List<string>();
        var next = "/firmware-versions?limit=1000";
        var pages = 0;
        while (next is not null)
        {
            using var response = await member.GetAsync(next);
            response.StatusCode.Should().Be(HttpStatusCode.OK);
            var page = (await response.JsonAsync()).EnumerateArray().Select(v => v.GetProperty("firmware").GetString()!).ToList();
            page.Count.Should().BeLessThanOrEqualTo(1000);
            seen.AddRange(page);
            pages++;
            next = response.Headers.TryGetValues("Link", out var links)
                ? links.Single()[1..links.Single().IndexOf('>', StringComparison.Ordinal)]
                : null;
        }

        var expected = versions.Concat(["1.0.0", "1.0.1"]).Distinct().Order(SemVerOrder.Instance).ToList();
        seen.Should().Equal(expected, "every version once, in SemVer precedence order across pages");
        pages.Should().Be(3);
        using var firstPage = await member.GetAsync("/firmware-versions");
        (await firstPage.JsonAsync()).GetArrayLength().Should().Be(100, "the default page");
    }

    [Fact]
    public async Task A_versions_cursor_of_another_project_or_altered_is_400()
    {
        using var member1 = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        using var member3 = App.ClientWithKey(FirmwareManagerApp.MemberKey3);
        var link = (await member1.GetAsync("/firmware-versions?limit=1")).Headers.GetValues("Link").Single();
        var cursor = link[(link.IndexOf("cursor=", StringComparison.Ordinal) + 7)..link.IndexOf('>', StringComparison.Ordinal)];

        (await member1.GetAsync($"/firmware-versions?limit=1&cursor={cursor}")).StatusCode.Should().Be(HttpStatusCode.OK);
        (await member3.GetAsync($"/firmware-versions?limit=1&cursor={cursor}")).StatusCode.Should().Be(HttpStatusCode.BadRequest);
        (await member1.GetAsync($"/firmware-versions?limit=1&cursor={cursor}x")).StatusCode.Should().Be(HttpStatusCode.BadRequest);
        (await member1.GetAsync("/firmware-versions?limit=0")).StatusCode.Should().Be(HttpStatusCode.BadRequest);
    }
}
