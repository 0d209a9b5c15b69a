using System.Net;
using System.Net.Http.Headers;
using System.Text;
using FirmwareManager.Tests.Infrastructure;

namespace FirmwareManager.Tests.Hardening;

/// <summary>
/// An error is answered with its own status and a problem body whatever the request's <c>Accept</c> says: a browser
/// opening an API address, an export's client asking for CSV, a tool asking for XML. The framework's problem writer
/// declines those, and the answer used to be a 500.
/// </summary>
public sealed class ErrorsWhateverIsAcceptedTests(FirmwareManagerApp app) : ApiTest(app)
{
    public static readonly TheoryData<string> Accepts = new()
    {
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
        "text/html",
        "text/csv",
        "application/x-ndjson",
        "application/xml",
        "image/png",
        "application/json",
        "*/*",
        "",
    };

    // One request for each status a plain request can bring about: method, path, key, body (content type), expected
    // status. 429, 499 and 503 come through the same problem writer (Problems.WriteAsync, the exception handlers).
    private static readonly (string Method, string Path, string? Key, string? Body, string? ContentType, HttpStatusCode Status)[] Requests =
    [
        ("GET", "/events", null, null, null, HttpStatusCode.Unauthorized),
        ("GET", "/events", "not-a-key-of-anyone", null, null, HttpStatusCode.Unauthorized),
        ("GET", "/events", FirmwareManagerApp.DeviceKey1, null, null, HttpStatusCode.Forbidden),
        ("GET", "/firmware/x", FirmwareManagerApp.MemberKey1, null, null, HttpStatusCode.BadRequest),
        ("GET", "/devices/999999", FirmwareManagerApp.MemberKey1, null, null, HttpStatusCode.NotFound),
        ("GET", "/no-such-thing", FirmwareManagerApp.MemberKey1, null, null, HttpStatusCode.NotFound),
        ("DELETE", "/events", FirmwareManagerApp.MemberKey1, null, null, HttpStatusCode.MethodNotAllowed),
        ("POST", "/firmware/1", FirmwareManagerApp.DeviceKey1, "{\"firmware\":", "application/json", HttpStatusCode.BadRequest),
        ("POST", "/firmware/1", FirmwareManagerApp.DeviceKey1, "firmware=1.0.0", "text/plain", HttpStatusCode.UnsupportedMediaType),
        ("POST", "/firmware/2", FirmwareManagerApp.DeviceKey1, "{\"firmware\":\"1.0.0\",\"status\":\"updated\"}", "application/json", HttpStatusCode.Forbidden),
    ];

    [Theory]
    [MemberData(nameof(Accepts))]
    public async Task Every_error_keeps_its_status_and_is_a_problem_whatever_the_client_accepts(string accept)
    {
        foreach (var (method, path, key, body, contentType, status) in Requests)
        {
            using var client = App.ClientWithKey(key);
            using var request = new HttpRequestMessage(new HttpMethod(method), path);
            if (accept.Length > 0)
            {
                request.Headers.TryAddWithoutValidation("Accept", accept).Should().BeTrue();
            }

            if (body is not null)
            {
                request.Content = new StringContent(body, Encoding.UTF8);
                request.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType!);
            }

            using var response = await client.SendAsync(request);

            var text = await response.Content.ReadAsStringAsync();
            response.StatusCode.Should().Be(status, $"{method} {path} with Accept '{accept}' answered {text}");
            response.Content.Headers.ContentType?.MediaType.Should().Be("application/problem+json", $"{method} {path} with Accept '{accept}'");
            var problem = System.Text.Json.JsonDocument.Parse(text).RootElement;
            problem.GetProperty("status").GetInt32().Should().Be((int)status);
            problem.TryGetProperty("trace_id", out _).Should().BeTrue("the problem is written by the service's one writer");
        }
    }
}
