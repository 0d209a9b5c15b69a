using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;
using FirmwareManager.Tests.Infrastructure;

namespace FirmwareManager.Tests.Observability;

public sealed class MetricsTests(FirmwareManagerApp app) : ApiTest(app)
{
    [Fact]
    public async Task Metrics_count_ingested_events_by_status_and_outcome_and_requests_by_route_without_any_key()
    {
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        using var scraper = App.CreateClient();
        var before = await scraper.GetStringAsync("/metrics");
        var report = new { firmware = "4.0.0", status = "installed", timestamp = "2024-09-01T00:00:00Z" };

        (await device.PostEventAsync(1, report)).StatusCode.Should().Be(HttpStatusCode.Created);
        (await device.PostEventAsync(1, report)).StatusCode.Should().Be(HttpStatusCode.OK);
        (await device.PostEventAsync(1, report with { firmware = "not-semver" })).StatusCode.Should().Be(HttpStatusCode.BadRequest);
        (await device.PostEventAsync(1, report with { status = "exploded" })).StatusCode.Should().Be(HttpStatusCode.BadRequest);
        (await member.GetAsync("/firmware/1")).StatusCode.Should().Be(HttpStatusCode.OK);
        await Task.Delay(400); // the exporter may serve a scrape from the last 300 ms again
        var response = await scraper.GetAsync("/metrics");
        var after = await response.Content.ReadAsStringAsync();

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        response.Content.Headers.ContentType!.MediaType.Should().Be("text/plain");
        Increase(before, after, """firmware_manager_events_ingested_total{otel_scope_name="FirmwareManager",outcome="created",status="installed"}""").Should().Be(1);
        Increase(before, after, """firmware_manager_events_ingested_total{otel_scope_name="FirmwareManager",outcome="repeat",status="installed"}""").Should().Be(1);
        Increase(before, after, """firmware_manager_events_ingested_total{otel_scope_name="FirmwareManager",outcome="rejected",status="installed"}""").Should().Be(1);
        Increase(before, after, """firmware_manager_events_ingested_total{otel_scope_name="FirmwareManager",outcome="rejected",status="invalid"}""").Should().Be(1);
        after.Should().MatchRegex("""(?m)^http_server_request_duration_seconds_count\{.*http_request_method="POST",http_response_status_code="201",http_route="/firmware/\{device_id\}".*\} [1-9]""");
        after.Should().MatchRegex("""(?m)^http_server_request_duration_seconds_count\{.*http_request_method="GET",http_response_status_code="200",http_route="/firmware/\{device_id\}".*\} [1-9]""");
        Increase(before, after, """firmware_manager_api_key_cache_lookups_total{otel_scope_name="FirmwareManager",result="hit"}""").Should().BeGreaterThan(0);
        Increase(before, after, """firmware_manager_api_key_cache_lookups_total{otel_scope_name="FirmwareManager",result="miss"}""").Should().BeGreaterThan(0);
        // Each report that reached the group commit waited in its queue, and each group's transaction is timed; the two
        // reports above (created, then its repeat) at least. Every cache miss is a database lookup, timed.
        const string stage = "firmware_manager_ingest_stage_duration_seconds_count{otel_scope_name=\"FirmwareManager\",stage=";
        Increase(before, after, stage + "\"queued\"}").Should().BeGreaterThanOrEqualTo(2);
        Increase(before, after, stage + "\"transaction\"}").Should().BeGreaterThanOrEqualTo(1);
        Increase(before, after, stage + "\"key_lookup\"}").Should().Be(
            Increase(before, after, """firmware_manager_api_key_cache_lookups_total{otel_scope_name="FirmwareManager",result="miss"}"""));
        after.Should().Contain("""db_client_connection_count{otel_scope_name="Npgsql",otel_scope_version="0.1.0",db_client_connection_pool_name="firmware_manager",""");
        // What each request would pay for and the README does not list: routing's, authentication's, authorization's,
        // the rate limiter's and the memory pool's meters (a 401, 403 or 429 is a status of the requests' histogram).
        after.Should().NotMatchRegex("(?m)^aspnetcore_(routing|authentication|authorization|rate_limiting|memory_pool)_");
        new Npgsql.NpgsqlConnectionStringBuilder(App.ConnectionString).Password.Should().NotBeNullOrEmpty(
            "the test databases are reached with a password, so its absence from the pools' labels means something");
        after.Should().NotContainEquivalentOf("Password=");
        foreach (var secret in new[] { FirmwareManagerApp.DeviceKey1, FirmwareManagerApp.MemberKey1, "member_1@" })
        {
            after.Should().NotContain(secret);
        }
    }

    internal static double Increase(string before, string after, string series) => Value(after, series) - Value(before, series);

    private static double Value(string exposition, string series)
    {
        var match = Regex.Match(exposition, "^" + Regex.Escape(series) + " (\\S+)", RegexOptions.Multiline);
        return match.Success ? double.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture) : 0;
    }
}
