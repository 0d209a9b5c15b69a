using System.Net;
using Dapper;
using FirmwareManager.Tests.Infrastructure;

namespace FirmwareManager.Tests.Firmware;

/// <summary>Every bad request gets a 4xx problem response that says what is wrong, and stores nothing.</summary>
public sealed class RejectingBadInputTests(FirmwareManagerApp app) : ApiTest(app)
{
    public static TheoryData<string, string> InvalidEvents => new()
    {
        { """{"status": "updated", "timestamp": "2023-01-01T00:00:00Z"}""", "firmware" },
        { """{"firmware": null, "status": "updated"}""", "firmware" },
        { """{"firmware": 103, "status": "updated"}""", "firmware" },
        { """{"firmware": "", "status": "updated"}""", "firmware" },
        { """{"firmware": "v1.0.3", "status": "updated"}""", "firmware" },
        { """{"firmware": "1.0", "status": "updated"}""", "firmware" },
        { """{"firmware": "01.0.3", "status": "updated"}""", "firmware" },
        { """{"firmware": "1.0.3-rc.01", "status": "updated"}""", "firmware" },
        { """{"firmware": "1.0.3\n", "status": "updated"}""", "firmware" },
        { """{"firmware": "١.٠.٣", "status": "updated"}""", "firmware" },
        { """{"firmware": "1.0.3 ", "status": "updated"}""", "firmware" },
        { $$"""{"firmware": "1.0.0-{{new string('a', 130)}}", "status": "updated"}""", "firmware" },
        { """{"firmware": "1.0.3"}""", "status" },
        { """{"firmware": "1.0.3", "status": "exploded"}""", "status" },
        { """{"firmware": "1.0.3", "status": "UPDATED"}""", "status" },
        { """{"firmware": "1.0.3", "status": ["updated"]}""", "status" },
        { """{"firmware": "1.0.3", "status": "updated", "timestamp": "2023-01-01T00:00:00"}""", "timestamp" },
        { """{"firmware": "1.0.3", "status": "updated", "timestamp": "2023-01-01 00:00:00Z"}""", "timestamp" },
        { """{"firmware": "1.0.3", "status": "updated", "timestamp": "2023-01-01T00:00:00.1234567Z"}""", "timestamp" },
        { """{"firmware": "1.0.3", "status": "updated", "timestamp": "2023-13-01T00:00:00Z"}""", "timestamp" },
        { """{"firmware": "1.0.3", "status": "updated", "timestamp": "2023-02-30T00:00:00Z"}""", "timestamp" },
        { """{"firmware": "1.0.3", "status": "updated", "timestamp": "2023-01-01T24:00:00Z"}""", "timestamp" },
        { """{"firmware": "1.0.3", "status": "updated", "timestamp": "2016-12-31T23:59:60Z"}""", "timestamp" },
        { """{"firmware": "1.0.3", "status": "updated", "timestamp": "2023-01-01T00:00:00+24:00"}""", "timestamp" },
        { """{"firmware": "1.0.3", "status": "updated", "timestamp": "0001-01-01T00:00:00+01:00"}""", "timestamp" },
        { """{"firmware": "1.0.3", "status": "updated", "timestamp": 1672531200}""", "timestamp" },
        { """{"firmware": "1.0.3", "status": "updated", "timestamp": "yesterday"}""", "timestamp" },
        { """["1.0.3", "updated"]""", "body" },
        { "\"1.0.3\"", "body" },
        { "{\"firmware\": \"1.0.3\", \"status\": \"updated\"", "body" },
        { "", "body" },
        { """{"firmware": "1.0.3", "firmware": "1.0.4", "status": "updated"}""", "body" },
    };

    [Theory]
    [MemberData(nameof(InvalidEvents))]
    public async Task An_invalid_event_is_400_naming_the_field_and_nothing_is_stored(string body, string field)
    {
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);

        var errors = await (await device.PostRawAsync("/firmware/1", body)).ShouldBeValidationProblemAsync();

        errors.Should().ContainKey(field).WhoseValue.Should().NotBeEmpty();
        (await StoredStateAsync()).Should().Be(DemoState);
    }

    [Fact]
    public async Task Every_bad_field_is_named_at_once()
    {
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);

        var errors = await (await device.PostRawAsync("/firmware/1", """{"firmware": "x", "status": "y", "timestamp": "z"}"""))
            .ShouldBeValidationProblemAsync();

        errors.Keys.Should().BeEquivalentTo("firmware", "status", "timestamp");
    }

    [Theory]
    [InlineData("1.0.0")]
    [InlineData("0.0.0")]
    [InlineData("10.20.30")]
    [InlineData("1.0.0-alpha")]
    [InlineData("1.0.0-alpha.1")]
    [InlineData("1.0.0-0.3.7")]
    [InlineData("1.0.0-x.7.z.92")]
    [InlineData("1.0.0-x-y-z.--")]
    [InlineData("1.0.0+20130313144700")]
    [InlineData("1.0.0-beta+exp.sha.5114f85")]
    [InlineData("1.0.0+21AF26D3----117B344092BD")]
    public async Task Every_SemVer_2_form_is_accepted(string version)
    {
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);

        var response = await device.PostEventAsync(1, new { firmware = version, status = "downloading", timestamp = "2023-03-01T00:00:00Z" });

        response.StatusCode.Should().Be(HttpStatusCode.Created);
        (await response.JsonAsync()).GetProperty("firmware").GetString().Should().Be(version);
    }

    [Theory]
    [InlineData("abc")]
    [InlineData("1.5")]
    [InlineData("-1")]
    [InlineData("+1")]
    [InlineData("1e3")]
    [InlineData("9223372036854775808")]
    [InlineData("99999999999999999999999")]
    public async Task A_device_id_that_is_not_a_whole_number_is_400(string id)
    {
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);

        var read = await member.GetAsync($"/firmware/{Uri.EscapeDataString(id)}");
        var write = await device.PostRawAsync($"/firmware/{Uri.EscapeDataString(id)}", """{"firmware": "1.0.3", "status": "updated"}""");

        (await read.ShouldBeProblemAsync(HttpStatusCode.BadRequest)).GetProperty("errors").TryGetProperty("device_id", out _).Should().BeTrue();
        await write.ShouldBeProblemAsync(HttpStatusCode.BadRequest);
        (await StoredStateAsync()).Should().Be(DemoState);
    }

    [Fact]
    public async Task The_largest_id_is_a_well_formed_unknown_device()
    {
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);

        await (await member.GetAsync("/firmware/9223372036854775807")).ShouldBeProblemAsync(HttpStatusCode.NotFound);
    }

    [Theory]
    [InlineData("text/plain")]
    [InlineData("application/x-www-form-urlencoded")]
    [InlineData("application/json; charset=latin1")]
    [InlineData(null)]
    public async Task A_body_that_is_not_JSON_is_415(string? contentType)
    {
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);

        var response = await device.PostRawAsync("/firmware/1", """{"firmware": "1.0.3", "status": "updated"}""", contentType);

        await response.ShouldBeProblemAsync(HttpStatusCode.UnsupportedMediaType);
        (await StoredStateAsync()).Should().Be(DemoState);
    }

    [Fact]
    public async Task JSON_with_a_charset_is_accepted()
    {
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);

        var response = await device.PostRawAsync("/firmware/1", """{"firmware": "1.0.3", "status": "updated"}""", "application/json; charset=utf-8");

        response.StatusCode.Should().Be(HttpStatusCode.Created);
    }

    [Fact]
    public async Task A_body_over_64_KiB_is_413()
    {
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        var padding = new string(' ', 65 * 1024);

        var response = await device.PostRawAsync("/firmware/1", $$"""{"firmware": "1.0.3", "status": "updated"{{padding}}}""");

        await response.ShouldBeProblemAsync(HttpStatusCode.RequestEntityTooLarge);
        (await StoredStateAsync()).Should().Be(DemoState);
    }

    [Fact]
    public async Task Unknown_fields_are_ignored()
    {
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);

        var response = await device.PostRawAsync("/firmware/1", """{"firmware": "1.0.3", "status": "updated", "battery": 87}""");

        response.StatusCode.Should().Be(HttpStatusCode.Created);
    }

    private const string DemoState = "6 events; devices 1.0.0,1.0.1,1.0.2";

    private async Task<string> StoredStateAsync()
    {
        await using var connection = App.OpenConnection();
        var events = await connection.ExecuteScalarAsync<long>("SELECT count(*) FROM firmware_events");
        var firmware = await connection.ExecuteScalarAsync<string>("SELECT string_agg(current_firmware, ',' ORDER BY id) FROM devices");
        return $"{events} events; devices {firmware}";
    }
}
