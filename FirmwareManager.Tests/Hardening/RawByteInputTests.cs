using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using CsCheck;
using Dapper;
using FirmwareManager.Tests.Infrastructure;

namespace FirmwareManager.Tests.Hardening;

/// <summary>
/// Inputs no serializer writes: bodies, query strings and header values mutated at the byte level, with escaped
/// lone surrogates, bytes that are not UTF-8 and NUL among the edits. Every endpoint that takes input answers
/// only its documented statuses, a problem document for each 4xx, and stores nothing for it.
/// </summary>
public sealed class RawByteInputTests(FirmwareManagerApp app) : ApiTest(app)
{
    public const int BodyIterations = 3000;
    public const int QueryIterations = 2000;

    /// <summary>Text that is not valid Unicode, or that PostgreSQL refuses in <c>text</c>, as the bytes a client sends.</summary>
    public static readonly byte[][] BadText =
    [
        "\\ud800"u8.ToArray(), // an escaped lone high surrogate
        "\\udfff"u8.ToArray(), // an escaped lone low surrogate
        "\\udc00\\ud800"u8.ToArray(), // a pair in the wrong order
        "\\u0000"u8.ToArray(), // NUL, escaped
        [0xFF], // never in UTF-8
        [0x80], // a continuation byte alone
        [0xC3], // a sequence cut short
        [0xC0, 0xAF], // an overlong '/'
        [0xED, 0xA0, 0x80], // a surrogate encoded as UTF-8 (CESU)
        [0xF4, 0x90, 0x80, 0x80], // past U+10FFFF
    ];

    private const string FailureReport =
        """{"firmware":"1.0.9","status":"failed","timestamp":"2024-01-01T00:00:00Z","from_firmware":"1.0.8","error_code":"E_FLASH","detail":"write failed"}""";

    // Each endpoint that reads a body: its path, the key it needs, a valid body, and the string fields in it.
    public static TheoryData<string, string, string, string> BodyFields() => new()
    {
        { "/firmware/1", FirmwareManagerApp.DeviceKey1, """{"firmware":"1.0.9","status":"updated","timestamp":"2024-01-01T00:00:00Z"}""", "firmware" },
        { "/firmware/1", FirmwareManagerApp.DeviceKey1, """{"firmware":"1.0.9","status":"updated","timestamp":"2024-01-01T00:00:00Z"}""", "status" },
        { "/firmware/1", FirmwareManagerApp.DeviceKey1, """{"firmware":"1.0.9","status":"updated","timestamp":"2024-01-01T00:00:00Z"}""", "timestamp" },
        { "/firmware/1/batch", FirmwareManagerApp.DeviceKey1, """[{"firmware":"1.0.9","status":"updated","timestamp":"2024-01-01T00:00:00Z"}]""", "[0].timestamp" },
        { "/firmware/1/batch", FirmwareManagerApp.DeviceKey1, """[{"firmware":"1.0.9","status":"updated","timestamp":"2024-01-01T00:00:00Z"}]""", "[0].status" },
        { "/firmware/1", FirmwareManagerApp.DeviceKey1, FailureReport, "from_firmware" },
        { "/firmware/1", FirmwareManagerApp.DeviceKey1, FailureReport, "error_code" },
        { "/firmware/1", FirmwareManagerApp.DeviceKey1, FailureReport, "detail" },
        { "/firmware/1/batch", FirmwareManagerApp.DeviceKey1, $"[{FailureReport}]", "[0].detail" },
        { "/devices", FirmwareManagerApp.MemberKey1, """{"name":"boiler","serial":"SN-1"}""", "name" },
        { "/devices", FirmwareManagerApp.MemberKey1, """{"name":"boiler","serial":"SN-1"}""", "serial" },
        { "/devices/bulk", FirmwareManagerApp.MemberKey1, """{"serials":["SN-1","SN-2"]}""", "serials[1]" },
        { "/members", FirmwareManagerApp.MemberKey1, """{"email":"new@example.com","role":"viewer"}""", "email" },
        { "/members", FirmwareManagerApp.MemberKey1, """{"email":"new@example.com","role":"viewer"}""", "role" },
    };

    [Theory]
    [MemberData(nameof(BodyFields))]
    public async Task Text_that_is_not_valid_Unicode_in_any_string_field_is_400_naming_the_field_and_stores_nothing(
        string path, string key, string body, string field)
    {
        using var client = App.ClientWithKey(key);
        var before = await RowCountsAsync();
        // The field's value in the body: the string after "name": (for serials[1], the second serial).
        var name = field.Split('.')[^1];
        var valueAt = name.StartsWith("serials[", StringComparison.Ordinal)
            ? body.IndexOf("\"SN-2\"", StringComparison.Ordinal) + 1
            : body.IndexOf($"\"{name}\":\"", StringComparison.Ordinal) + name.Length + 4;

        foreach (var bad in BadText)
        {
            var bytes = Encoding.UTF8.GetBytes(body[..valueAt]).Concat(bad).Concat(Encoding.UTF8.GetBytes(body[valueAt..])).ToArray();
            using var response = await client.PostAsync(path, JsonBytes(bytes));

            var errors = await response.ShouldBeValidationProblemAsync();
            // Escapes and raw bytes alike: the JSON reader takes both, and reading the field finds them.
            errors.Keys.Should().Contain(field, $"{Convert.ToHexString(bad)} in {field}: {string.Join(", ", errors.Keys)}");
        }

        (await RowCountsAsync()).Should().Be(before, "a rejected request stores nothing");
    }

    [Fact]
    public async Task Escaped_lone_surrogates_and_NUL_are_named_by_field_not_only_as_a_bad_body()
    {
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);

        using var response = await device.PostAsync("/firmware/1",
            JsonBytes("""{"firmware":"1.0.9","status":"updated","timestamp":"2024-01-01T00:00:00Z\ud800"}"""u8.ToArray()));

        (await response.ShouldBeValidationProblemAsync()).Keys.Should().Equal("timestamp");
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        using var device2 = await member.PostAsync("/devices", JsonBytes("""{"serial":"a\u0000b"}"""u8.ToArray()));
        (await device2.ShouldBeValidationProblemAsync()).Keys.Should().Equal("serial");
    }

    private static readonly (string Path, string Key, string Body, int[] Statuses)[] Endpoints =
    [
        ("/firmware/1", FirmwareManagerApp.DeviceKey1, """{"firmware":"1.0.9","status":"updated","timestamp":"2024-01-01T00:00:00.5+02:00"}""", [200, 201]),
        ("/firmware/1/batch", FirmwareManagerApp.DeviceKey1, """[{"firmware":"1.0.9","status":"failed"},{"firmware":"1.1.0-rc.1","status":"installed","timestamp":"2024-01-02T00:00:00Z"}]""", [200]),
        ("/devices", FirmwareManagerApp.MemberKey1, """{"name":"boiler \u00e9","serial":"SN-1"}""", [201, 409]),
        ("/devices/bulk", FirmwareManagerApp.MemberKey1, """{"serials":["SN-a","SN-b","SN-c"]}""", [200, 409]),
        ("/members", FirmwareManagerApp.MemberKey1, """{"email":"new@example.com","role":"viewer"}""", [201, 409]),
    ];

    private static readonly Gen<byte[]> Fragment = Gen.OneOf(
        Gen.Int[0, BadText.Length - 1].Select(i => BadText[i]),
        Gen.Byte.Array[1, 3],
        Gen.Const("\\u"u8.ToArray()),
        Gen.Const("\\"u8.ToArray()),
        Gen.Const("\""u8.ToArray()));

    /// <summary>A valid body with one to three byte-level edits: a fragment inserted, a byte replaced or deleted, the body cut.</summary>
    private static readonly Gen<(int Endpoint, byte[] Body)> MutatedBody =
        Gen.Select(Gen.Int[0, Endpoints.Length - 1], Gen.Select(Gen.Int[0, 3], Gen.Int[0, 10_000], Fragment).Array[1, 3],
            (endpoint, edits) =>
            {
                var bytes = Encoding.UTF8.GetBytes(Endpoints[endpoint].Body).ToList();
                foreach (var (kind, at, fragment) in edits)
                {
                    var i = at % (bytes.Count + 1);
                    switch (kind)
                    {
                        case 0:
                            bytes.InsertRange(i, fragment);
                            break;
                        case 1 when i < bytes.Count:
                            bytes[i] = fragment[0];
                            break;
                        case 2 when i < bytes.Count:
                            bytes.RemoveAt(i);
                            break;
                        case 3 when i > 0:
                            bytes.RemoveRange(i, bytes.Count - i);
                            break;
                    }
                }

                return (endpoint, bytes.ToArray());
            });

    [Fact]
    public async Task Byte_level_mutations_of_every_body_get_only_documented_statuses_and_4xx_store_nothing()
    {
        var before = await RowCountsAsync();
        var clients = Endpoints.Select(e => App.ClientWithKey(e.Key)).ToArray();
        long expectedEvents = 0, expectedDevices = 0, expectedMembers = 0;

        await MutatedBody.SampleAsync(async (endpoint, body) =>
        {
            var (path, _, _, accepted) = Endpoints[endpoint];
            using var response = await clients[endpoint].PostAsync(path, JsonBytes(body));
            var status = (int)response.StatusCode;
            var answer = await response.Content.ReadAsStringAsync();
            status.Should().BeOneOf([.. accepted, 400, 409, 413], $"{path} with {Convert.ToHexString(body)} got {answer}");
            if (status >= 400)
            {
                response.Content.Headers.ContentType?.MediaType.Should().Be("application/problem+json", answer);
                return;
            }

            switch (path)
            {
                case "/firmware/1" when status == 201:
                    Interlocked.Increment(ref expectedEvents);
                    break;
                case "/firmware/1/batch":
                    Interlocked.Add(ref expectedEvents, (await response.JsonAsync()).GetProperty("created").GetInt64());
                    break;
                case "/devices":
                    Interlocked.Increment(ref expectedDevices);
                    break;
                case "/devices/bulk":
                    Interlocked.Add(ref expectedDevices, answer.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
                    break;
                case "/members":
                    Interlocked.Increment(ref expectedMembers);
                    break;
            }
        }, iter: BodyIterations, threads: 4);

        foreach (var client in clients)
        {
            client.Dispose();
        }

        var after = await RowCountsAsync();
        (after.Events - before.Events).Should().Be(expectedEvents, "only acknowledged reports are stored");
        (after.Devices - before.Devices).Should().Be(expectedDevices, "only acknowledged devices are stored");
        (after.Members - before.Members).Should().Be(expectedMembers, "only acknowledged members are stored");
    }

    private static readonly string[] QueryPaths =
        ["/firmware/2", "/firmware/2/events/3", "/events", "/devices", "/devices/1", "/firmware-versions", "/audit", "/members", "/me/keys"];

    private static readonly string[] QueryKeys =
        ["limit", "cursor", "since", "until", "status", "firmware", "device_id", "after", "status_of_last_event", "silent_since"];

    /// <summary>A query value as raw bytes, percent-encoded byte by byte: any byte, any sequence, valid UTF-8 or not.</summary>
    private static readonly Gen<string> RawQueryValue = Gen.OneOf(
        Gen.Int[0, BadText.Length - 1].Select(i => BadText[i]),
        Gen.Byte.Array[0, 12],
        Gen.Select(Gen.Const("1.0.0"u8.ToArray()), Gen.Byte.Array[1, 2], (a, b) => a.Concat(b).ToArray()),
        Gen.Select(Gen.Const("2024-01-01T00:00:00Z"u8.ToArray()), Gen.Byte.Array[1, 2], (a, b) => b.Concat(a).ToArray()))
        .Select(bytes => string.Concat(bytes.Select(b => "%" + b.ToString("X2", CultureInfo.InvariantCulture))));

    [Fact]
    public async Task Query_values_of_any_bytes_get_200_or_400_on_every_endpoint_that_reads_a_query()
    {
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);

        await Gen.Select(Gen.Int[0, QueryPaths.Length - 1], Gen.Select(Gen.Int[0, QueryKeys.Length - 1], RawQueryValue).Array[1, 3])
            .SampleAsync(async (pathIndex, pairs) =>
            {
                var target = QueryPaths[pathIndex] + "?" + string.Join('&', pairs.Select(p => $"{QueryKeys[p.Item1]}={p.Item2}"));
                using var response = await member.GetAsync(target);
                ((int)response.StatusCode).Should().BeOneOf([200, 400], $"{target} got {await response.Content.ReadAsStringAsync()}");
            }, iter: QueryIterations, threads: 4);
    }

    private static ByteArrayContent JsonBytes(byte[] bytes)
    {
        var content = new ByteArrayContent(bytes);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        return content;
    }

    private sealed record RowCounts(long Events, long Devices, long Members, long Audit);

    private async Task<RowCounts> RowCountsAsync()
    {
        await using var connection = App.OpenConnection();
        return await connection.QuerySingleAsync<RowCounts>("""
            SELECT (SELECT count(*) FROM firmware_events) AS Events,
                   (SELECT count(*) FROM devices) AS Devices,
                   (SELECT count(*) FROM project_memberships) AS Members,
                   (SELECT count(*) FROM audit_log) AS Audit
            """);
    }
}
