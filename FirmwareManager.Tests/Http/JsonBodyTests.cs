using System.Buffers;
using System.Text;
using FirmwareManager.Api;
using FirmwareManager.Api.Http;
using Microsoft.AspNetCore.Http;

namespace FirmwareManager.Tests.Http;

/// <summary>Reading a request body into its record: sized to the body, never past the limit.</summary>
public sealed class JsonBodyTests
{
    private static DefaultHttpContext Request(string json, bool declareLength)
    {
        var bytes = Encoding.UTF8.GetBytes(json);
        var http = new DefaultHttpContext();
        http.Request.ContentType = "application/json";
        http.Request.Body = new MemoryStream(bytes);
        http.Request.ContentLength = declareLength ? bytes.Length : null;
        return http;
    }

    [Fact]
    public async Task The_record_keeps_its_values_after_the_read_buffer_goes_back_to_the_pool()
    {
        var json = """{"firmware": "1.2.3", "status": "installed"}""";
        const int limit = 1024;
        var (report, problem) = await JsonBody.ReadAsync(Request(json, declareLength: true), limit, RequestJsonContext.Default.FirmwareEventBody, CancellationToken.None);
        problem.Should().BeNull();

        // The next request on this thread rents an array of the body's size, or of the limit's, and fills it.
        foreach (var size in new[] { json.Length + 1, limit + 1 })
        {
            var reused = ArrayPool<byte>.Shared.Rent(size);
            reused.AsSpan().Fill((byte)'#');
            ArrayPool<byte>.Shared.Return(reused);
        }

        report!.Firmware.Should().Be("1.2.3");
        report.Status.Should().Be("installed");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_body_many_times_the_first_buffer_is_read_whole(bool declareLength)
    {
        var serials = Enumerable.Range(0, 20_000).Select(i => $"SN-{i:D6}").ToArray();
        var json = System.Text.Json.JsonSerializer.Serialize(new { serials });
        json.Length.Should().BeGreaterThan(16 * 1024 * 10);

        var (enrollment, problem) = await JsonBody.ReadAsync(Request(json, declareLength), 16 * 1024 * 1024, RequestJsonContext.Default.EnrollDevicesBody, CancellationToken.None);

        problem.Should().BeNull();
        enrollment!.Serials.Should().Equal(serials);
    }

    [Theory]
    [InlineData(0, true)]
    [InlineData(1, false)]
    public async Task A_body_without_a_length_is_cut_off_one_byte_past_the_limit(int over, bool accepted)
    {
        const int limit = 40_000;
        var padding = new string('x', limit - """{"name":""}""".Length + over);
        var json = $$"""{"name":"{{padding}}"}""";
        json.Length.Should().Be(limit + over);

        var (device, problem) = await JsonBody.ReadAsync(Request(json, declareLength: false), limit, RequestJsonContext.Default.CreateDeviceBody, CancellationToken.None);

        if (accepted)
        {
            problem.Should().BeNull();
            device!.Name.Should().HaveLength(padding.Length);
        }
        else
        {
            device.Should().BeNull();
            problem!.StatusCode.Should().Be(StatusCodes.Status413PayloadTooLarge);
        }
    }
}
