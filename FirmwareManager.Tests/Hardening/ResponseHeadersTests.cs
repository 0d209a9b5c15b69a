using System.Net;
using FirmwareManager.Tests.Infrastructure;

namespace FirmwareManager.Tests.Hardening;

public sealed class ResponseHeadersTests(FirmwareManagerApp app) : ApiTest(app)
{
    [Theory]
    [InlineData("/firmware/1", FirmwareManagerApp.MemberKey1, HttpStatusCode.OK)]
    [InlineData("/firmware/1", null, HttpStatusCode.Unauthorized)]
    [InlineData("/firmware/x", FirmwareManagerApp.MemberKey1, HttpStatusCode.BadRequest)]
    [InlineData("/health", null, HttpStatusCode.OK)]
    public async Task Every_answer_carries_the_security_headers_and_no_server_banner(string path, string? key, HttpStatusCode status)
    {
        using var client = App.ClientWithKey(key);

        var response = await client.GetAsync(path);

        response.StatusCode.Should().Be(status);
        Header(response, "X-Content-Type-Options").Should().Be("nosniff");
        Header(response, "X-Frame-Options").Should().Be("DENY");
        Header(response, "Referrer-Policy").Should().Be("no-referrer");
        Header(response, "Content-Security-Policy").Should().Be("default-src 'none'; frame-ancestors 'none'");
        Header(response, "Cache-Control").Should().Be("no-store");
        response.Headers.Contains("Server").Should().BeFalse();
    }

    [Fact]
    public async Task The_docs_page_may_load_its_own_scripts()
    {
        using var client = App.CreateClient();

        var response = await client.GetAsync("/docs");

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        response.Headers.Contains("Content-Security-Policy").Should().BeFalse();
        Header(response, "X-Content-Type-Options").Should().Be("nosniff");
    }

    private static string? Header(HttpResponseMessage response, string name) =>
        response.Headers.TryGetValues(name, out var values) || response.Content.Headers.TryGetValues(name, out values)
            ? string.Join(", ", values)
            : null;
}
