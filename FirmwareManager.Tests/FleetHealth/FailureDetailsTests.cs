using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Dapper;
using FirmwareManager.Tests.Infrastructure;

namespace FirmwareManager.Tests.FleetHealth;

/// <summary>A report's optional from_firmware, error_code and detail: stored, returned everywhere, filterable, validated.</summary>
public sealed class FailureDetailsTests(FirmwareManagerApp app) : ApiTest(app)
{
    private const string Failure = """
        {"firmware":"2.0.0","status":"failed","timestamp":"2024-03-01T10:00:00Z",
         "from_firmware":"1.0.0","error_code":"E_SIG_VERIFY","detail":"signature of slot B did not verify: key 7 ≠ key 9"}
        """;

    [Fact]
    public async Task A_failure_with_its_reason_is_stored_and_returned_by_the_answer_history_feed_and_event()
    {
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);

        var created = await device.PostRawAsync("/firmware/1", Failure);

        created.StatusCode.Should().Be(HttpStatusCode.Created);
        ShouldCarryTheReason(await created.JsonAsync());
        ShouldCarryTheReason((await (await member.GetAsync("/firmware/1?limit=1")).JsonAsync())[0]);
        ShouldCarryTheReason((await (await member.GetAsync("/events?limit=1")).JsonAsync())[0]);
        ShouldCarryTheReason(await (await member.GetAsync(created.Headers.Location!.ToString())).JsonAsync());
        var repeat = await device.PostRawAsync("/firmware/1", Failure);
        repeat.StatusCode.Should().Be(HttpStatusCode.OK);
        ShouldCarryTheReason(await repeat.JsonAsync());
    }

    [Fact]
    public async Task A_report_without_the_new_fields_is_answered_as_before_without_them()
    {
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);

        var body = await (await device.PostEventAsync(1, new { firmware = "1.1.0", status = "updated", error_code = (string?)null })).JsonAsync();

        body.EnumerateObject().Select(p => p.Name).Should().Equal("id", "device_id", "project_id", "firmware", "status", "timestamp", "received_at");
    }

    [Fact]
    public async Task History_and_feed_filter_by_error_code()
    {
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var batch = await device.PostAsJsonAsync("/firmware/1/batch", new object[]
        {
            new { firmware = "2.0.0", status = "failed", timestamp = "2024-03-01T10:00:00Z", error_code = "E_SIG_VERIFY" },
            new { firmware = "2.0.0", status = "failed", timestamp = "2024-03-01T11:00:00Z", error_code = "E_NO_SPACE", detail = "12 KiB free" },
            new { firmware = "2.0.0", status = "failed", timestamp = "2024-03-01T12:00:00Z", error_code = "E_SIG_VERIFY" },
            new { firmware = "2.0.0", status = "updated", timestamp = "2024-03-01T13:00:00Z", from_firmware = "1.0.0" },
        });
        batch.StatusCode.Should().Be(HttpStatusCode.OK);

        async Task<List<string>> TimesAsync(string url) => (await (await member.GetAsync(url)).JsonAsync())
            .EnumerateArray().Select(e => e.GetProperty("timestamp").GetString()!).ToList();

        (await TimesAsync("/firmware/1?error_code=E_SIG_VERIFY")).Should().Equal("2024-03-01T12:00:00.000000Z", "2024-03-01T10:00:00.000000Z");
        (await TimesAsync("/events?error_code=E_NO_SPACE")).Should().Equal("2024-03-01T11:00:00.000000Z");
        (await TimesAsync("/events?error_code=E_SIG_VERIFY&limit=1")).Should().HaveCount(1);
        (await TimesAsync("/firmware/1?error_code=E_NONE")).Should().BeEmpty();
        (await (await member.GetAsync("/firmware/1?error_code=not%20a%20code")).ShouldBeValidationProblemAsync()).Should().ContainKey("error_code");
        (await (await member.GetAsync("/events?error_code=")).ShouldBeValidationProblemAsync()).Should().ContainKey("error_code");
    }

    [Theory]
    [InlineData("from_firmware", "\"v1.0.0\"")]
    [InlineData("from_firmware", "\"1.0\"")]
    [InlineData("from_firmware", "7")]
    [InlineData("error_code", "\"\"")]
    [InlineData("error_code", "\"E SIG\"")]
    [InlineData("error_code", "\"E_SIG/VERIFY\"")]
    [InlineData("error_code", "\"É_SIG\"")]
    [InlineData("error_code", "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"")]
    [InlineData("error_code", "[\"E_SIG\"]")]
    [InlineData("detail", "{\"text\":\"x\"}")]
    [InlineData("detail", "\"\\u0000\"")]
    [InlineData("detail", "\"\\ud800\"")]
    public async Task A_bad_reason_field_is_400_naming_it_and_stores_nothing(string field, string json)
    {
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        var body = $$"""{"firmware":"2.0.0","status":"failed","timestamp":"2024-03-01T10:00:00Z","{{field}}":{{json}}}""";

        (await (await device.PostRawAsync("/firmware/1", body)).ShouldBeValidationProblemAsync()).Should().ContainKey(field);
        (await (await device.PostRawAsync("/firmware/1/batch", $"[{body}]")).ShouldBeValidationProblemAsync()).Should().ContainKey($"[0].{field}");
        (await EventCountAsync()).Should().Be(0);
    }

    [Fact]
    public async Task Detail_is_counted_in_UTF8_bytes_up_to_1024()
    {
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        // 341 three-byte characters are 1023 bytes; one more is 1026.
        var fits = new string('€', 341) + "!";
        var tooLong = new string('€', 342);

        var created = await device.PostEventAsync(1, new { firmware = "2.0.0", status = "failed", timestamp = "2024-03-01T10:00:00Z", detail = fits });
        var refused = await device.PostEventAsync(1, new { firmware = "2.0.0", status = "failed", timestamp = "2024-03-01T11:00:00Z", detail = tooLong });

        created.StatusCode.Should().Be(HttpStatusCode.Created);
        (await created.JsonAsync()).GetProperty("detail").GetString().Should().Be(fits);
        (await refused.ShouldBeValidationProblemAsync()).Should().ContainKey("detail");
        (await EventCountAsync()).Should().Be(1);
    }

    [Fact]
    public async Task The_database_refuses_a_reason_the_API_would_refuse()
    {
        await using var connection = App.OpenConnection();

        var write = () => connection.ExecuteAsync("""
            INSERT INTO firmware_events (device_id, project_id, firmware, status, occurred_at, arrival, error_code)
            VALUES (1, 1, '2.0.0', 'failed', '2024-03-01T10:00:00Z', 1, 'E SIG')
            """);

        (await write.Should().ThrowAsync<Npgsql.PostgresException>()).Which.SqlState.Should().Be("23514");
    }

    private static void ShouldCarryTheReason(JsonElement e)
    {
        e.GetProperty("from_firmware").GetString().Should().Be("1.0.0");
        e.GetProperty("error_code").GetString().Should().Be("E_SIG_VERIFY");
        e.GetProperty("detail").GetString().Should().Be("signature of slot B did not verify: key 7 ≠ key 9");
    }

    private async Task<long> EventCountAsync()
    {
        await using var connection = App.OpenConnection();
        return await connection.ExecuteScalarAsync<long>("SELECT count(*) FROM firmware_events WHERE device_id = 1 AND occurred_at >= '2024-03-01'");
    }
}
