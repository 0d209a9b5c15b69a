using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using CsCheck;
using Dapper;
using FirmwareManager.Api;
using FirmwareManager.Api.Firmware;
using FirmwareManager.Api.Versions;
using FirmwareManager.Tests.Infrastructure;
using FirmwareManager.Tests.Versions;

namespace FirmwareManager.Tests.Hardening;

/// <summary>
/// Thousands of generated and mutated inputs through the front door: only 2xx or 4xx ever come back, nothing is
/// stored for a 4xx, and what is stored reads back exactly as sent. docs/reliability.md lists the counts.
/// </summary>
public sealed class GeneratedInputTests(FirmwareManagerApp app) : ApiTest(app)
{
    public const int ReportIterations = 4000;
    public const int QueryIterations = 3000;
    public const int ParserIterations = 20000;

    private static Gen<T> Pick<T>(params T[] values) => Gen.Int[0, values.Length - 1].Select(i => values[i]);

    // A field left out of the body.
    private static readonly Gen<string> Missing = Gen.Int[0, 0].Select(_ => (string)null!);

    private static readonly string[] Statuses = ["downloading", "downloaded", "installing", "installed", "updated", "failed", "rolled_back"];

    private static readonly string[] Nasty =
    [
        "", " ", "null", "true", "0", "-1", "1e400", "9223372036854775808", "'; DROP TABLE firmware_events; --",
        "\" OR 1=1 --", "1.0.0' OR '1'='1", "<script>alert(1)</script>", "%00", "\u0000", "\u202e1.0.0", "１.０.０", "😀",
        "1.0.0\n", "\t1.0.0", "../../etc/passwd", "${jndi:ldap://x}", new string('9', 300), new string('a', 5000),
    ];

    private static readonly Gen<string> NastyString = Gen.OneOf<string>(Pick(Nasty), Gen.String, Gen.String[Gen.Char["0123456789.-+aZz:T"], 0, 40]);

    private static readonly Gen<string> ValidVersion =
        Gen.Select(Gen.Long[0, 3_000_000_000L], Gen.Int[0, 99], Gen.Int[0, 999], Pick("", "-rc.1", "-alpha", "-0.3.7", "-x-y.z"), Pick("", "+build.5", "+001"),
            (major, minor, patch, pre, build) => $"{major}.{minor}.{patch}{pre}{build}");

    // Instants at microsecond precision, written with an offset PostgreSQL and the parser must agree on.
    private static readonly Gen<(string Text, DateTime Utc)> ValidTimestamp =
        Gen.Select(Gen.Long[new DateTime(1971, 1, 1).Ticks / 10, new DateTime(2100, 1, 1).Ticks / 10], Gen.Int[-1439, 1439], Gen.Int[0, 6], Gen.Bool,
            (micros, offsetMinutes, digits, lowerCase) =>
            {
                var utc = new DateTime(micros * 10, DateTimeKind.Utc);
                var local = utc.AddMinutes(offsetMinutes);
                var fraction = digits == 0 ? "" : "." + local.ToString("ffffff", CultureInfo.InvariantCulture)[..digits];
                var offset = offsetMinutes == 0 && lowerCase ? "z"
                    : (offsetMinutes < 0 ? "-" : "+") + $"{Math.Abs(offsetMinutes) / 60:00}:{Math.Abs(offsetMinutes) % 60:00}";
                var text = local.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture) + (lowerCase ? "t" : "T") +
                           local.ToString("HH:mm:ss", CultureInfo.InvariantCulture) + fraction + offset;
                return (text, utc.AddTicks(-(utc.Ticks % 10) - (digits == 6 ? 0 : (micros % (long)Math.Pow(10, 6 - digits)) * 10)));
            });

    // A JSON value of any kind, for fields that expect a string.
    private static readonly Gen<string> AnyJsonValue = Gen.OneOf<string>(
        NastyString.Select(s => JsonSerializer.Serialize(s)),
        Pick("null", "true", "1", "-0.5", "1e999", "[]", "{}", "[\"1.0.0\"]", "{\"a\":1}"));

    /// <summary>A report body, mostly well-formed objects with good and bad fields, as JSON text.</summary>
    private static readonly Gen<string> ReportBody =
        Gen.Select(
            Gen.Frequency((6, ValidVersion.Select(v => JsonSerializer.Serialize(v))), (3, AnyJsonValue), (1, Missing)),
            Gen.Frequency((6, Pick(Statuses).Select(s => JsonSerializer.Serialize(s))), (3, AnyJsonValue), (1, Missing)),
            Gen.Frequency((5, ValidTimestamp.Select(t => JsonSerializer.Serialize(t.Text))), (3, AnyJsonValue), (2, Missing)),
            Pick("", ",\"extra\":1", ",\"firmware\":\"2.0.0\"", ",\"nested\":{\"deep\":[1,2,{\"x\":null}]}"),
            (firmware, status, timestamp, extra) =>
            {
                var fields = new List<string>();
                if (firmware is not null) fields.Add($"\"firmware\":{firmware}");
                if (status is not null) fields.Add($"\"status\":{status}");
                if (timestamp is not null) fields.Add($"\"timestamp\":{timestamp}");
                return "{" + string.Join(',', fields) + extra + "}";
            });

    /// <summary>A good report with one random edit: a character deleted, inserted or replaced, or the text cut.</summary>
    private static readonly Gen<string> MutatedBody =
        Gen.Select(ValidVersion, ValidTimestamp, Gen.Int[0, 3], Gen.Int[0, 1000], Gen.Char,
            (version, timestamp, edit, at, c) =>
            {
                var text = $"{{\"firmware\":\"{version}\",\"status\":\"updated\",\"timestamp\":\"{timestamp.Text}\"}}";
                var i = at % text.Length;
                return edit switch
                {
                    0 => text.Remove(i, 1),
                    1 => text.Insert(i, c.ToString()),
                    2 => text[..i] + c + text[(i + 1)..],
                    _ => text[..i],
                };
            });

    [Fact]
    public async Task Generated_and_mutated_reports_get_only_2xx_or_4xx_and_what_is_stored_reads_back_as_sent()
    {
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        var created = new ConcurrentBag<(long Id, string Body)>();
        var repeats = 0;
        await using var connection = App.OpenConnection();
        var before = await connection.ExecuteScalarAsync<long>("SELECT count(*) FROM firmware_events");

        await Gen.OneOf<string>(ReportBody, MutatedBody).SampleAsync(async body =>
        {
            using var response = await device.PostRawAsync("/firmware/1", body);
            var status = (int)response.StatusCode;
            var answer = await response.Content.ReadAsStringAsync();
            status.Should().BeOneOf([200, 201, 400, 413, 415], $"the body {body} got {answer}");
            if (status == 201)
            {
                created.Add((JsonDocument.Parse(answer).RootElement.GetProperty("id").GetInt64(), body));
            }
            else if (status == 200)
            {
                Interlocked.Increment(ref repeats);
            }
            else
            {
                answer.Should().Contain("\"status\":4", "every 4xx is a problem document");
            }
        }, iter: ReportIterations, threads: 4);

        var after = await connection.ExecuteScalarAsync<long>("SELECT count(*) FROM firmware_events");
        (after - before).Should().Be(created.Count, "a 4xx stores nothing; each 201 stores one event");
        created.Count.Should().BeGreaterThan(ReportIterations / 10, "the generators reach the accepting paths too");
        var stored = (await connection.QueryAsync<(long Id, string Firmware, string Status, DateTime OccurredAt)>(
            "SELECT id, firmware, status, occurred_at FROM firmware_events WHERE id = ANY(@Ids)", new { Ids = created.Select(c => c.Id).ToArray() }))
            .ToDictionary(r => r.Id);
        foreach (var (id, body) in created)
        {
            using var sent = JsonDocument.Parse(body);
            var row = stored[id];
            row.Firmware.Should().Be(sent.RootElement.GetProperty("firmware").GetString(), body);
            row.Status.Should().Be(sent.RootElement.GetProperty("status").GetString(), body);
            if (sent.RootElement.TryGetProperty("timestamp", out var timestamp) && timestamp.ValueKind == JsonValueKind.String)
            {
                Rfc3339.TryParse(timestamp.GetString()!, out var instant).Should().BeTrue(body);
                row.OccurredAt.ToUniversalTime().Should().Be(instant, body);
            }
        }
    }

    private static readonly string[] QueryKeys =
        ["limit", "cursor", "since", "until", "status", "firmware", "device_id", "after", "status_of_last_event", "silent_since", "unknown"];

    private static readonly Gen<string> QueryValue = Gen.Frequency(
        (3, NastyString),
        (2, Pick(Statuses)),
        (2, ValidTimestamp.Select(t => t.Text)),
        (2, Gen.Int[-5, 2000].Select(i => i.ToString(CultureInfo.InvariantCulture))),
        (1, Pick("beginning", "1.0.0", "failed,rolled_back", "AAAA", "eyJ4IjoxfQ")));

    private static readonly Gen<string> QueryString =
        Gen.Select(Pick(QueryKeys), QueryValue).Array[0, 4]
            .Select(pairs => string.Join('&', pairs.Select(p => $"{p.Item1}={Uri.EscapeDataString(p.Item2)}")));

    [Fact]
    public async Task Generated_query_filters_and_cursors_get_only_200_or_400()
    {
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var paths = Pick("/firmware/2", "/events", "/devices", "/firmware-versions", "/audit", "/firmware/2/events/3");

        await Gen.Select(paths, QueryString).SampleAsync(async (path, query) =>
        {
            using var response = await member.GetAsync($"{path}?{query}");
            ((int)response.StatusCode).Should().BeOneOf([200, 400], $"{path}?{query} got {await response.Content.ReadAsStringAsync()}");
        }, iter: QueryIterations, threads: 4);
    }

    [Fact]
    public async Task Altered_cursors_are_400_never_a_500_or_another_page()
    {
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var link = (await member.GetAsync("/firmware/2?limit=1")).Headers.GetValues("Link").Single();
        var cursor = Uri.UnescapeDataString(link[(link.IndexOf("cursor=", StringComparison.Ordinal) + 7)..link.IndexOf('>', StringComparison.Ordinal)].Split('&')[0]);

        await Gen.Select(Gen.Int[0, 2], Gen.Int[0, 10_000], Gen.Char["ABCXYZabcxyz0189-_=+/."]).SampleAsync(async (edit, at, c) =>
        {
            var i = at % cursor.Length;
            var altered = edit switch
            {
                0 => cursor.Remove(i, 1),
                1 => cursor.Insert(i, c.ToString()),
                _ => cursor[..i] + c + cursor[(i + 1)..],
            };
            using var response = await member.GetAsync($"/firmware/2?limit=1&cursor={Uri.EscapeDataString(altered)}");
            ((int)response.StatusCode).Should().Be(altered == cursor ? 200 : 400, altered);
        }, iter: QueryIterations, threads: 4);
    }

    [Fact]
    public void The_timestamp_parser_reads_every_generated_RFC_3339_instant_exactly_and_never_throws()
    {
        ValidTimestamp.Sample(t =>
        {
            Rfc3339.TryParse(t.Text, out var utc).Should().BeTrue(t.Text);
            utc.Should().Be(t.Utc, t.Text);
        }, iter: ParserIterations);

        Gen.OneOf<string>(NastyString, ValidTimestamp.Select(Gen.Int[0, 40], Gen.Char["0123456789:-+.TtZz "], (t, i, c) => t.Text[..Math.Min(i, t.Text.Length)] + c + t.Text[Math.Min(i, t.Text.Length)..]))
            .Sample(text =>
            {
                if (Rfc3339.TryParse(text, out var utc) &&
                    DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.None, out var dotnet))
                {
                    utc.Should().Be(dotnet.UtcDateTime, $"'{text}' means one instant to both parsers");
                }
            }, iter: ParserIterations);
    }

    [Fact]
    public void The_timestamp_writer_writes_what_the_custom_format_wrote_for_every_generated_instant_and_reads_back_to_the_microsecond()
    {
        Gen.Long[DateTime.MinValue.Ticks, DateTime.MaxValue.Ticks].Sample(ticks =>
        {
            var at = new DateTime(ticks, DateTimeKind.Utc);
            var text = Rfc3339.Format(at);
            text.Should().Be(at.ToString("yyyy-MM-dd'T'HH:mm:ss.ffffff'Z'", CultureInfo.InvariantCulture));
            Rfc3339.TryParse(text, out var back).Should().BeTrue(text);
            back.Should().Be(new DateTime(ticks - ticks % 10, DateTimeKind.Utc), text);
        }, iter: ParserIterations);
    }

    [Fact]
    public void An_event_answer_writes_its_times_as_the_timestamp_writer_does_in_JSON_and_reads_them_back()
    {
        Gen.Select(Gen.Long[DateTime.MinValue.Ticks, DateTime.MaxValue.Ticks], Gen.Long[DateTime.MinValue.Ticks, DateTime.MaxValue.Ticks]).Sample((occurred, received) =>
        {
            var (at, then) = (new DateTime(occurred, DateTimeKind.Utc), new DateTime(received, DateTimeKind.Utc));
            var json = JsonSerializer.Serialize(
                new FirmwareEventResponse(1, 2, 3, "1.0.0", "updated", at, then, null, null, null), AppJsonContext.Default.FirmwareEventResponse);

            using var document = JsonDocument.Parse(json);
            document.RootElement.GetProperty("timestamp").GetString().Should().Be(Rfc3339.Format(at), json);
            document.RootElement.GetProperty("received_at").GetString().Should().Be(Rfc3339.Format(then), json);
            var back = JsonSerializer.Deserialize(json, AppJsonContext.Default.FirmwareEventResponse)!;
            back.Timestamp.Should().Be(new DateTime(occurred - occurred % 10, DateTimeKind.Utc), json);
            back.ReceivedAt.Should().Be(new DateTime(received - received % 10, DateTimeKind.Utc), json);
        }, iter: ParserIterations);

        var wrong = () => JsonSerializer.Deserialize("""{"timestamp":"2024-01-01 00:00:00"}""", AppJsonContext.Default.FirmwareEventResponse);
        wrong.Should().Throw<JsonException>("a time without its offset is not RFC 3339");
    }

    // The grammar semver.org gives for SemVer 2.0.0, with [0-9] for \d (which also matches non-ASCII digits).
    private static readonly System.Text.RegularExpressions.Regex SemVerGrammar = new(
        @"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)" +
        @"(?:-((?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?" +
        @"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?\z",
        System.Text.RegularExpressions.RegexOptions.CultureInvariant);

    [Fact]
    public void The_syntax_check_accepts_exactly_the_SemVer_grammar_on_generated_and_mutated_strings()
    {
        var mutated = Gen.Select(ValidVersion, Gen.Int[0, 2], Gen.Int[0, 200], Gen.Char["0123456789.-+aZ v\u0661\uFF11 "],
            (version, edit, at, c) =>
            {
                var i = at % (version.Length + 1);
                return edit switch
                {
                    0 => version.Insert(i, c.ToString()),
                    1 when i < version.Length => version.Remove(i, 1),
                    _ when i < version.Length => version[..i] + c + version[(i + 1)..],
                    _ => version,
                };
            });

        Gen.OneOf<string>(ValidVersion, mutated, NastyString, Gen.String[Gen.Char["0123456789.-+abcXYZ"], 1, 30]).Sample(text =>
        {
            SemanticVersion.IsValid(text).Should().Be(text.Length <= SemanticVersion.MaxLength && SemVerGrammar.IsMatch(text), $"'{text}'");
        }, iter: ParserIterations);
    }

    [Fact]
    public void SemVer_precedence_is_a_total_order_on_generated_versions_and_the_syntax_check_never_throws()
    {
        Gen.Select(ValidVersion, ValidVersion, ValidVersion).Sample((a, b, c) =>
        {
            SemanticVersion.IsValid(a).Should().BeTrue(a);
            var order = SemVerOrder.Instance;
            Math.Sign(order.Compare(a, b)).Should().Be(-Math.Sign(order.Compare(b, a)), $"{a} vs {b}");
            order.Compare(a, a).Should().Be(0);
            if (order.Compare(a, b) <= 0 && order.Compare(b, c) <= 0)
            {
                order.Compare(a, c).Should().BeLessThanOrEqualTo(0, $"{a} <= {b} <= {c}");
            }
        }, iter: ParserIterations);

        NastyString.Sample(text =>
        {
            if (SemanticVersion.IsValid(text))
            {
                SemVerOrder.Instance.Invoking(o => o.Compare(text, "1.0.0")).Should().NotThrow();
            }
        }, iter: ParserIterations);
    }
}
