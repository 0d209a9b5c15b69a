using System.IO.Compression;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Dapper;
using FirmwareManager.Tests.Infrastructure;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using static FirmwareManager.Tests.Firmware.PagingHistoryTests;

namespace FirmwareManager.Tests.Fleet;

/// <summary>
/// Exports by content negotiation (<c>Accept: text/csv</c> or <c>application/x-ndjson</c>) of the list endpoints: every
/// row the filters select, in the pages' order and with their fields, in one snapshot, never truncated unnoticed.
/// </summary>
public sealed class ExportTests(FirmwareManagerApp app) : ApiTest(app)
{
    private static readonly DateTime Start = new(2024, 9, 1, 0, 0, 0, DateTimeKind.Utc);

    // Names a CSV writer must quote (a comma, a quote, a line break) or keep as UTF-8, set where no API checks them.
    private static readonly string[] HostileNames = ["plain", "with, comma", "with \"quotes\"", "line\nbreak\r\nand more", "ünïcødé ✓", " spaced ", "=1+2"];

    [Fact]
    public async Task Devices_as_csv_and_ndjson_are_the_json_pages_row_for_row_filters_included()
    {
        await AddDevicesAsync(1, HostileNames.Length * 40);
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey2);

        foreach (var filter in new[] { "", "?tag=pilot", "?hardware=board-a&limit=3" })
        {
            var pages = await JsonPagesAsync(member, "/devices" + filter);
            pages.Should().NotBeEmpty();

            var csv = await member.SendAsync(Get("/devices" + filter, "text/csv"));
            csv.StatusCode.Should().Be(HttpStatusCode.OK);
            csv.Content.Headers.ContentType!.MediaType.Should().Be("text/csv");
            var table = ParseCsv(await csv.Content.ReadAsStringAsync());
            // The JSON leaves out unexplained_downgrade_from when it is null; the CSV has its column always.
            table[0].Where(n => n != "unexplained_downgrade_from").Should().Equal(
                pages[0].EnumerateObject().Select(p => p.Name).Where(n => n != "unexplained_downgrade_from"), "the header row names the JSON fields");
            table[0].Should().Contain("unexplained_downgrade_from");
            table.Skip(1).Select(row => row.ToList()).Should().BeEquivalentTo(
                pages.Select(device => table[0].Select(name => CsvOf(device, name)).ToList()), o => o.WithStrictOrdering(), filter);

            var ndjson = await member.SendAsync(Get("/devices" + filter, "application/x-ndjson"));
            ndjson.Content.Headers.ContentType!.MediaType.Should().Be("application/x-ndjson");
            Lines(await ndjson.Content.ReadAsStringAsync()).Should().Equal(pages.Select(p => p.GetRawText()), filter);
        }
    }

    [Fact]
    public async Task An_events_export_reads_one_snapshot_and_its_link_polls_exactly_what_it_did_not_have()
    {
        var (deviceId, key) = await App.AddDeviceAsync(1);
        using var device = App.ClientWithKey(key);
        await UploadAsync(device, deviceId, Enumerable.Range(0, 3000).Select(i => Event("1.0.0", i % 3 == 0 ? "failed" : "downloading", Start.AddSeconds(i))));
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        using var device2 = App.ClientWithKey(FirmwareManagerApp.DeviceKey2);

        foreach (var (filter, round) in new[] { ("", 1), ("?status=failed", 2) })
        {
            var exported = new List<JsonElement>();
            using var response = await member.SendAsync(Get("/events" + filter, "application/x-ndjson"), HttpCompletionOption.ResponseHeadersRead);
            response.StatusCode.Should().Be(HttpStatusCode.OK);
            var position = long.Parse(response.Headers.GetValues("X-Feed-Position").Single(), System.Globalization.CultureInfo.InvariantCulture);
            var next = NextLink(response);
            using (var reader = new StreamReader(await response.Content.ReadAsStreamAsync()))
            {
                exported.Add(JsonDocument.Parse((await reader.ReadLineAsync())!).RootElement);
                // Reports stored while the export streams are not in it, and the Link gives exactly them.
                await device2.PostEventAsync(2, Event($"9.0.{round}", "failed", Start.AddYears(round)));
                await device2.PostEventAsync(2, Event($"8.0.{round}", "updated", Start.AddYears(-round)));
                while (await reader.ReadLineAsync() is { } line)
                {
                    exported.Add(JsonDocument.Parse(line).RootElement);
                }
            }

            var pages = await JsonPagesAsync(member, "/events" + filter);
            var newIds = pages.Where(e => e.GetProperty("firmware").GetString() == $"9.0.{round}" || e.GetProperty("firmware").GetString() == $"8.0.{round}")
                .Select(e => e.GetProperty("id").GetInt64()).ToList();
            newIds.Should().HaveCount(filter == "" ? 2 : 1);
            exported.Select(e => e.GetRawText()).Should().Equal(pages.Where(e => !newIds.Contains(e.GetProperty("id").GetInt64())).Select(e => e.GetRawText()),
                "the export is the pages as they were when it began, in their order");
            await using (var connection = App.OpenConnection())
            {
                position.Should().Be(await connection.ExecuteScalarAsync<long>(
                    "SELECT max(arrival) FROM firmware_events WHERE project_id = 1 AND firmware NOT IN (@A, @B)",
                    new { A = $"9.0.{round}", B = $"8.0.{round}" }), "the export answers with the feed position of its snapshot");
            }

            next.Should().StartWith("/events?").And.Contain("after=").And.NotContain("cursor");
            var polled = await JsonPagesAsync(member, next);
            polled.Select(e => e.GetProperty("id").GetInt64()).Should().Equal(newIds.Order(),
                "polling from the export's Link gives the events it did not have that the filters select, none twice");
        }
    }

    [Fact]
    public async Task A_history_export_is_the_devices_pages_and_an_audit_export_the_audit_pages()
    {
        using var device1 = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        await UploadAsync(device1, 1, Enumerable.Range(0, 250).Select(i => Event($"1.0.{i % 4}", "installed", Start.AddMinutes(i))));
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        for (var i = 0; i < 3; i++)
        {
            (await admin.PostAsync("/devices", JsonContent.Create(new { name = $"audited {i}" }))).StatusCode.Should().Be(HttpStatusCode.Created);
        }

        foreach (var url in new[] { "/firmware/1", "/firmware/1?firmware=1.0.2&limit=5", "/audit" })
        {
            var pages = await JsonPagesAsync(admin, url);
            pages.Should().NotBeEmpty(url);
            var ndjson = await admin.SendAsync(Get(url, "application/x-ndjson"));
            Lines(await ndjson.Content.ReadAsStringAsync()).Should().Equal(pages.Select(p => p.GetRawText()), url);
            var csv = ParseCsv(await (await admin.SendAsync(Get(url, "text/csv"))).Content.ReadAsStringAsync());
            csv.Should().HaveCount(pages.Count + 1, url);
            csv.Skip(1).Select(r => r[0]).Should().Equal(pages.Select(p => p.GetProperty("id").GetRawText()), url);
            // An event field by field, times included: they are written as the JSON has them. (An audit entry's
            // details are JSON in one field, spaced as PostgreSQL prints jsonb.)
            if (url.StartsWith("/firmware/", StringComparison.Ordinal))
            {
                csv.Skip(1).Select(row => row.ToList()).Should().BeEquivalentTo(
                    pages.Select(row => csv[0].Select(name => CsvOf(row, name)).ToList()), o => o.WithStrictOrdering(), url);
            }
        }

        await (await admin.SendAsync(Get("/firmware/999", "text/csv"))).ShouldBeProblemAsync(HttpStatusCode.NotFound);
        await (await device1.SendAsync(Get("/firmware/1", "text/csv"))).ShouldBeProblemAsync(HttpStatusCode.Forbidden);
        (await App.ClientWithKey(FirmwareManagerApp.MemberKey2).SendAsync(Get("/audit", "text/csv"))).StatusCode.Should().Be(HttpStatusCode.Forbidden, "the audit log is for admins");
        (await device1.SendAsync(Get("/devices", "text/csv"))).StatusCode.Should().Be(HttpStatusCode.Forbidden);
        var withAfter = await admin.SendAsync(Get("/events?after=beginning", "text/csv"));
        (await withAfter.ShouldBeValidationProblemAsync()).Should().ContainKey("after");
    }

    [Theory]
    [InlineData("*/*", "application/json")]
    [InlineData("application/json", "application/json")]
    [InlineData("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "application/json")]
    [InlineData("text/csv;q=0.5, application/json", "application/json")]
    [InlineData("application/json;q=0.1, text/csv", "text/csv")]
    [InlineData("text/*", "text/csv")]
    [InlineData("TEXT/CSV", "text/csv")]
    [InlineData("application/x-ndjson", "application/x-ndjson")]
    [InlineData("text/csv;q=0, application/x-ndjson;q=0.2", "application/x-ndjson")]
    [InlineData("text/csv;q=nonsense;;", "application/json")]
    [InlineData("image/png", "application/json")]
    public async Task Accept_chooses_between_the_json_page_and_an_export(string accept, string answered)
    {
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var request = new HttpRequestMessage(HttpMethod.Get, "/devices?limit=1");
        request.Headers.TryAddWithoutValidation("Accept", accept).Should().BeTrue();

        var response = await member.SendAsync(request);

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        response.Content.Headers.ContentType!.MediaType.Should().Be(answered);
        var body = await response.Content.ReadAsStringAsync();
        if (answered != "application/json")
        {
            Lines(body).Should().HaveCount(answered == "text/csv" ? 3 : 2, "an export ignores limit: both devices of project 1");
        }
    }

    [Fact]
    public async Task Gzip_compresses_the_stream_to_the_same_bytes()
    {
        await AddDevicesAsync(1, 500);
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var plain = await (await member.SendAsync(Get("/devices", "text/csv"))).Content.ReadAsByteArrayAsync();
        var request = Get("/devices", "text/csv");
        request.Headers.AcceptEncoding.ParseAdd("gzip");

        var response = await member.SendAsync(request);

        response.Content.Headers.ContentEncoding.Should().Equal("gzip");
        var compressed = await response.Content.ReadAsByteArrayAsync();
        compressed.Length.Should().BeLessThan(plain.Length / 3);
        using var unzipped = new MemoryStream();
        await new GZipStream(new MemoryStream(compressed), CompressionMode.Decompress).CopyToAsync(unzipped);
        unzipped.ToArray().Should().Equal(plain);
        var json = new HttpRequestMessage(HttpMethod.Get, "/devices");
        json.Headers.AcceptEncoding.ParseAdd("gzip");
        (await member.SendAsync(json)).Content.Headers.ContentEncoding.Should().BeEmpty("JSON pages are not compressed");
    }

    private Task AddDevicesAsync(long projectId, int count) => AddDevicesAsync(App, projectId, count);

    internal static async Task AddDevicesAsync(FirmwareManagerApp app, long projectId, int count)
    {
        await using var connection = app.OpenConnection();
        await connection.ExecuteAsync("""
            INSERT INTO devices (project_id, name, serial, hardware, tags)
            SELECT @ProjectId,
                   (@Names::text[])[1 + g % cardinality(@Names::text[])],
                   CASE WHEN g % 3 = 0 THEN NULL ELSE 'SN-' || g END,
                   CASE WHEN g % 2 = 0 THEN 'board-a' END,
                   CASE WHEN g % 5 = 0 THEN ARRAY['pilot', 'site:berlin'] ELSE '{}' END
            FROM generate_series(1, @Count) AS g
            """, new { ProjectId = projectId, Names = HostileNames, Count = count });
    }

    internal static HttpRequestMessage Get(string url, string accept)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, url);
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue(accept));
        return request;
    }

    private static async Task<List<JsonElement>> JsonPagesAsync(HttpClient client, string url)
    {
        var rows = new List<JsonElement>();
        for (string? next = url; next is not null;)
        {
            var response = await client.GetAsync(next);
            response.StatusCode.Should().Be(HttpStatusCode.OK);
            var page = (await response.JsonAsync()).EnumerateArray().ToList();
            rows.AddRange(page);
            // A poll always links onwards: an empty page is its end.
            next = page.Count == 0 ? null : NextLink(response);
        }

        return rows;
    }

    private static List<string> Lines(string body)
    {
        body.Should().Match(b => b.Length == 0 || b.EndsWith('\n'), "every line ends with a newline");
        return body.Length == 0 ? [] : [.. body[..^1].Split('\n')];
    }

    // A field as the CSV should have it: the JSON value, strings as they are, an array's values space-separated.
    private static string CsvOf(JsonElement row, string name) =>
        !row.TryGetProperty(name, out var value) ? "" : value.ValueKind switch
        {
            JsonValueKind.Null => "",
            JsonValueKind.String => value.GetString()!,
            JsonValueKind.Array => string.Join(' ', value.EnumerateArray().Select(v => v.GetString())),
            _ => value.GetRawText(),
        };

    /// <summary>RFC 4180, written here rather than taken from the service's CSV library: quoted fields, doubled quotes, line breaks inside quotes.</summary>
    internal static List<string[]> ParseCsv(string text)
    {
        var rows = new List<string[]>();
        var row = new List<string>();
        var field = new StringBuilder();
        var quoted = false;
        for (var i = 0; i < text.Length; i++)
        {
            var c = text[i];
            if (quoted)
            {
                if (c == '"' && i + 1 < text.Length && text[i + 1] == '"')
                {
                    field.Append('"');
                    i++;
                }
                else if (c == '"')
                {
                    quoted = false;
                }
                else
                {
                    field.Append(c);
                }
            }
            else if (c == '"')
            {
                field.Length.Should().Be(0, "a quote opens a field or is doubled inside a quoted one");
                quoted = true;
            }
            else if (c == ',')
            {
                row.Add(field.ToString());
                field.Clear();
            }
            else if (c == '\n' || (c == '\r' && i + 1 < text.Length && text[i + 1] == '\n'))
            {
                i += c == '\r' ? 1 : 0;
                row.Add(field.ToString());
                field.Clear();
                rows.Add([.. row]);
                row.Clear();
            }
            else
            {
                field.Append(c);
            }
        }

        quoted.Should().BeFalse("the file ends outside a quoted field");
        (field.Length + row.Count).Should().Be(0, "the last row ends with a line break");
        return rows;
    }
}

/// <summary>
/// Exports on real Kestrel, whose socket pushes back on a server that writes faster than its client reads (the
/// in-memory server buffers everything): an export still running when its database connection is lost, or when
/// more exports of the project are asked for than may run at once (here 1).
/// </summary>
public sealed class ExportStreamTests : IAsyncLifetime
{
    private FirmwareManagerApp App { get; } = new(realServer: true, new Dictionary<string, string> { ["FirmwareManager:Exports:MaxPerProject"] = "1" });

    public async Task InitializeAsync()
    {
        await App.InitializeAsync();
        // About 30 MB of CSV: more than the loopback sockets' buffers hold, so an export that is not read stays running.
        await ExportTests.AddDevicesAsync(App, 1, 200_000);
    }

    public async Task DisposeAsync() => await App.DisposeAsync();

    private static HttpRequestMessage Get(string url, string accept) => ExportTests.Get(url, accept);

    private static List<string[]> ParseCsv(string text) => ExportTests.ParseCsv(text);

    [Fact]
    public async Task A_connection_lost_mid_export_ends_the_transfer_unfinished_and_the_log_says_why()
    {
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        using var response = await member.SendAsync(Get("/devices", "text/csv"), HttpCompletionOption.ResponseHeadersRead);
        response.StatusCode.Should().Be(HttpStatusCode.OK);
        var body = await response.Content.ReadAsStreamAsync();
        var buffer = new byte[4096];
        (await body.ReadAsync(buffer)).Should().BePositive();

        // As the server's administrator: the service's sessions run as another role than the tests' own.
        await using (var connection = new Npgsql.NpgsqlConnection((await PostgresServer.SharedAsync()).AdminConnectionString))
        {
            // The sessions chosen first (OFFSET 0 keeps the planner from testing pg_terminate_backend before the pid).
            var terminated = await connection.ExecuteScalarAsync<int>("""
                SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
                FROM (
                    SELECT pid
                    FROM pg_stat_activity
                    WHERE pid <> pg_backend_pid()
                      AND datname = @Database
                      AND state <> 'idle'
                      AND query LIKE '%FROM devices AS d%ORDER BY d.id%'
                    OFFSET 0
                ) AS export
                """, new { new Npgsql.NpgsqlConnectionStringBuilder(App.ConnectionString).Database });
            terminated.Should().Be(1, "the export's session is the one reading the devices");
        }

        var read = async () =>
        {
            while (await body.ReadAsync(buffer) > 0)
            {
            }
        };
        // A reset, or an end without the last chunk: either way the client cannot take the file for whole.
        await read.Should().ThrowAsync<IOException>("the stream ends without its proper end");
        App.Logs.Rendered().Should().Contain(l => l.Contains("failed after it began", StringComparison.Ordinal) && l.Contains("devices", StringComparison.Ordinal));
    }

    [Fact]
    public async Task More_exports_of_a_project_than_allowed_answer_429_and_another_projects_export_runs()
    {
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        using var otherProject = App.ClientWithKey(FirmwareManagerApp.MemberKey3);

        // Not read: the export waits on its client, holding its place.
        var first = await member.SendAsync(Get("/devices", "text/csv"), HttpCompletionOption.ResponseHeadersRead);
        first.StatusCode.Should().Be(HttpStatusCode.OK);
        var second = await member.SendAsync(Get("/events", "application/x-ndjson"));
        var other = await otherProject.SendAsync(Get("/devices", "text/csv"));

        await second.ShouldBeProblemAsync(HttpStatusCode.TooManyRequests);
        second.Headers.RetryAfter!.Delta.Should().Be(TimeSpan.FromSeconds(5));
        other.StatusCode.Should().Be(HttpStatusCode.OK);
        ParseCsv(await other.Content.ReadAsStringAsync()).Should().HaveCount(2, "project 2 has one device");
        (await member.GetAsync("/devices")).StatusCode.Should().Be(HttpStatusCode.OK, "JSON pages are not exports");

        first.Dispose();
        var again = HttpStatusCode.TooManyRequests;
        for (var attempt = 0; attempt < 50 && again == HttpStatusCode.TooManyRequests; attempt++)
        {
            await Task.Delay(100);
            again = (await member.SendAsync(Get("/audit", "text/csv"))).StatusCode;
        }

        again.Should().Be(HttpStatusCode.OK, "the export whose client left gave its place back");
    }
}

/// <summary>An export holds itself to <c>FirmwareManager:Exports:MaxRowsPerSecond</c> (here the lowest allowed, 1000).</summary>
public sealed class ExportRateTests : IAsyncLifetime
{
    private const int Devices = 3_000;
    private string _connectionString = "";
    private WebApplicationFactory<Program> _service = null!;

    public async Task InitializeAsync()
    {
        _connectionString = await PostgresServer.CreateDemoDatabaseAsync();
        _service = new ServiceOnDatabase(_connectionString).WithWebHostBuilder(b => b
            .UseSetting("FirmwareManager:Exports:MaxRowsPerSecond", "1000"));
        await using var connection = new Npgsql.NpgsqlConnection(_connectionString);
        await connection.ExecuteAsync(
            "INSERT INTO devices (project_id, name) SELECT 1, 'paced ' || g FROM generate_series(1, @Devices) AS g", new { Devices });
    }

    public async Task DisposeAsync() => await _service.DisposeAsync();

    [Fact]
    public async Task An_export_streams_every_row_no_faster_than_its_rate()
    {
        using var member = _service.CreateClient();
        member.DefaultRequestHeaders.Add("api_key", FirmwareManagerApp.MemberKey1);
        await using var connection = new Npgsql.NpgsqlConnection(_connectionString);
        var rows = await connection.ExecuteScalarAsync<int>("SELECT count(*) FROM devices WHERE project_id = 1");
        rows.Should().BeGreaterThan(Devices);

        var clock = System.Diagnostics.Stopwatch.StartNew();
        using var response = await member.SendAsync(ExportTests.Get("/devices", "application/x-ndjson"));
        var lines = (await response.Content.ReadAsStringAsync()).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        clock.Stop();

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        lines.Should().HaveCount(rows);
        // A lower bound only: a slow machine makes the export longer, never shorter. At 1000 rows/s it waits at
        // 1024 and 2048 rows until 1.024 s and 2.048 s have passed; unpaced, 3,000 rows take milliseconds.
        clock.Elapsed.Should().BeGreaterThanOrEqualTo(TimeSpan.FromSeconds(2), "3,000 rows at 1,000 a second");
    }

    [Fact]
    public async Task An_export_longer_than_the_request_time_limit_streams_every_row()
    {
        await using var service = _service.WithWebHostBuilder(b => b.UseSetting("FirmwareManager:Limits:RequestTimeoutSeconds", "1"));
        using var member = service.CreateClient();
        member.DefaultRequestHeaders.Add("api_key", FirmwareManagerApp.MemberKey1);
        await using var connection = new Npgsql.NpgsqlConnection(_connectionString);
        var rows = await connection.ExecuteScalarAsync<int>("SELECT count(*) FROM devices WHERE project_id = 1");

        using var response = await member.SendAsync(ExportTests.Get("/devices", "application/x-ndjson"));
        var lines = (await response.Content.ReadAsStringAsync()).Split('\n', StringSplitOptions.RemoveEmptyEntries);

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        lines.Should().HaveCount(rows, "an export is bounded by Exports:TimeoutSeconds, not by a request's time limit (here 1 s, the export 3 s)");
    }
}
