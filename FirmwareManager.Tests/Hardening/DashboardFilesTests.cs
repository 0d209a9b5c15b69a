using System.Net;
using System.Text.RegularExpressions;
using FirmwareManager.Api.Dashboard;
using FirmwareManager.Tests.Infrastructure;

namespace FirmwareManager.Tests.Hardening;

/// <summary>How the dashboard's files are served: what a browser needs from them, and what the CSP forbids.</summary>
public sealed partial class DashboardFilesTests(FirmwareManagerApp app) : ApiTest(app)
{
    private static readonly string[] Files = ["index.html", "app.js", "api.js", "dom.js", "chart.js", "overview.js", "devices.js", "feed.js", "health.js", "semver.js", "dashboard.css", "icon.svg"];

    [Fact]
    public async Task The_page_is_served_at_the_folder_address_without_a_key_under_its_own_policy()
    {
        using var client = App.CreateClient(new Microsoft.AspNetCore.Mvc.Testing.WebApplicationFactoryClientOptions { AllowAutoRedirect = false });

        var bare = await client.GetAsync("/dashboard");
        var page = await client.GetAsync("/dashboard/");

        bare.StatusCode.Should().Be(HttpStatusCode.MovedPermanently);
        new Uri(client.BaseAddress!, bare.Headers.Location!).AbsolutePath.Should().Be("/dashboard/");
        page.StatusCode.Should().Be(HttpStatusCode.OK);
        page.Content.Headers.ContentType!.ToString().Should().Be("text/html; charset=utf-8");
        page.Headers.GetValues("Content-Security-Policy").Single().Should().Be(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
        page.Headers.GetValues("X-Frame-Options").Single().Should().Be("DENY");
        page.Headers.CacheControl!.NoCache.Should().BeTrue();
        page.Headers.CacheControl.NoStore.Should().BeFalse();
    }

    [Theory]
    [InlineData("app.js", "text/javascript; charset=utf-8")]
    [InlineData("dashboard.css", "text/css; charset=utf-8")]
    [InlineData("icon.svg", "image/svg+xml")]
    public async Task A_file_is_revalidated_by_its_ETag(string file, string contentType)
    {
        using var client = App.CreateClient();

        var first = await client.GetAsync($"/dashboard/{file}");
        var again = new HttpRequestMessage(HttpMethod.Get, $"/dashboard/{file}");
        again.Headers.IfNoneMatch.Add(first.Headers.ETag!);
        var revalidated = await client.SendAsync(again);

        first.StatusCode.Should().Be(HttpStatusCode.OK);
        first.Content.Headers.ContentType!.ToString().Should().Be(contentType);
        revalidated.StatusCode.Should().Be(HttpStatusCode.NotModified);
        (await revalidated.Content.ReadAsByteArrayAsync()).Should().BeEmpty();
    }

    [Theory]
    [InlineData("/dashboard/nothing.js")]
    [InlineData("/dashboard/..%2Fappsettings.json")]
    [InlineData("/dashboard/DashboardApi.cs")]
    public async Task A_file_the_dashboard_does_not_have_is_a_404_problem(string path)
    {
        using var client = App.CreateClient();

        await (await client.GetAsync(path)).ShouldBeProblemAsync(HttpStatusCode.NotFound);
    }

    [Fact]
    public async Task No_file_has_inline_script_or_style_or_loads_anything_from_elsewhere()
    {
        using var client = App.CreateClient();
        var served = new Dictionary<string, string>();
        foreach (var file in Files)
        {
            var response = await client.GetAsync($"/dashboard/{file}");
            response.StatusCode.Should().Be(HttpStatusCode.OK, file);
            served[file] = await response.Content.ReadAsStringAsync();
        }

        var html = served["index.html"];
        ScriptTag().Matches(html).Should().NotBeEmpty().And.OnlyContain(m => m.Groups["attributes"].Value.Contains("src="), "no inline script");
        html.Should().NotContain("<style").And.NotContain(" style=").And.NotMatchRegex(@"\son[a-z]+=");
        foreach (var (file, text) in served)
        {
            // Nothing from another origin; the SVG namespace is a name, not a load.
            ExternalUrl().Matches(text).Select(m => m.Value).Where(url => url != "http://www.w3.org/2000/svg").Should().BeEmpty(file);
            text.Should().NotContain("eval(").And.NotContain("new Function").And.NotContain("innerHTML", file);
        }

        // Every module a module imports is served, and every served file is reached.
        var imported = served.Values.SelectMany(text => Import().Matches(text).Select(m => m.Groups["file"].Value));
        imported.Should().OnlyContain(file => served.ContainsKey(file));
        Files.Where(f => f.EndsWith(".js", StringComparison.Ordinal) && f != "app.js").Should().BeSubsetOf(imported);
        html.Should().Contain("src=\"app.js\"").And.Contain("href=\"dashboard.css\"");
    }

    [Fact]
    public async Task The_api_keeps_its_own_policy()
    {
        using var client = App.CreateClient();

        var response = await client.GetAsync("/dashboards");

        response.Headers.GetValues("Content-Security-Policy").Single().Should().Be("default-src 'none'; frame-ancestors 'none'");
        DashboardApi.ContentSecurityPolicy.Should().NotContain("unsafe");
    }

    [GeneratedRegex(@"<script(?<attributes>[^>]*)>", RegexOptions.IgnoreCase)]
    private static partial Regex ScriptTag();

    [GeneratedRegex(@"https?://[^\s'""`)]+")]
    private static partial Regex ExternalUrl();

    [GeneratedRegex(@"from '\./(?<file>[a-z]+\.js)'")]
    private static partial Regex Import();
}
