using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using FirmwareManager.Tests.Infrastructure;
using OpenQA.Selenium;
using Xunit.Abstractions;

namespace FirmwareManager.Tests.Dashboard;

/// <summary>
/// The dashboard in a real browser (Debian's Chromium, headless) against the real service on Kestrel and real
/// PostgreSQL: what an operator sees is what the API answers, under the service's Content-Security-Policy, with no
/// console error and no serious or critical axe-core violation. Each view's screenshot goes to
/// <c>FIRMWAREMANAGER_SCREENSHOTS</c> (docs/dashboard.md is made from them).
/// </summary>
[Collection(BrowserTestGroup.Name)]
public sealed class DashboardTests(DashboardFixture fleet, ITestOutputHelper output)
{
    private const string KeyItem = "firmwaremanager.dashboard.key";
    private const string PositionItem = "firmwaremanager.dashboard.position";

    private Browser Browser => fleet.Browser;

    private OpenQA.Selenium.Chrome.ChromeDriver Driver => fleet.Browser.Driver;

    [BrowserFact]
    public async Task Signing_in_shows_the_version_distribution_in_SemVer_order_with_failed_and_rolled_back_counts()
    {
        SignIn(FirmwareManagerApp.MemberKey1);

        var chartOrder = Browser.WaitFor(
            () => Driver.FindElements(By.CssSelector(".chart-row")).Select(r => r.GetAttribute("data-firmware")).ToList() is { Count: > 0 } rows ? rows : null,
            "the chart's rows");
        var versions = await GetAsync<List<JsonElement>>("/firmware-versions?limit=1000");
        chartOrder.Should().Equal(versions.Select(v => v.GetProperty("firmware").GetString()));
        chartOrder.Should().ContainInOrder("1.9.0", "1.10.0", "2.0.0");

        var row = Driver.FindElements(By.CssSelector("table tbody tr")).Single(r => r.FindElement(By.TagName("th")).Text == "2.0.0");
        var cells = row.FindElements(By.TagName("td")).Select(c => c.Text.Replace(",", "")).ToList();
        var api = versions.Single(v => v.GetProperty("firmware").GetString() == "2.0.0");
        cells[0].Should().Be(api.GetProperty("devices").GetInt64().ToString());
        cells[1].Should().Be(api.GetProperty("failed").GetInt64().ToString());
        api.GetProperty("failed").GetInt64().Should().BeGreaterThan(0, "the seeded fleet has failures on 2.0.0");
        var rolledBack = versions.Single(v => v.GetProperty("firmware").GetString() == "1.9.0");
        rolledBack.GetProperty("rolled_back").GetInt64().Should().BeGreaterThan(0);

        Driver.FindElement(By.Id("whoami")).Text.Should().Contain("member_1@project-1.example");
        AssertKeyOnlyInSessionStorage(FirmwareManagerApp.MemberKey1);
        AssertCleanPage("overview");

        // The first view, loaded again with the key already in the tab: reported, not asserted (docs/dashboard.md).
        Driver.Navigate().Refresh();
        var shownMs = Browser.WaitFor(() => DashboardOnBenchmarkFleetTests.ShownAt(Browser, "fm:overview-shown"), "the overview's mark");
        output.WriteLine($"First view (overview) of a {versions.Sum(v => v.GetProperty("devices").GetInt64())}-device project shown after {shownMs} ms");
    }

    [BrowserFact]
    public async Task The_devices_table_pages_through_the_Link_header_and_filters_like_the_API()
    {
        SignIn(FirmwareManagerApp.MemberKey1);
        Go("#/devices");
        var total = (await GetAsync<List<JsonElement>>("/devices?limit=1000")).Count;

        var seen = new List<long>();
        var pages = 0;
        while (true)
        {
            var ids = Browser.WaitFor(() => DeviceIds() is { Count: > 0 } shown && !shown.Intersect(seen).Any() ? shown : null, $"page {pages + 1}");
            ids.Should().BeInAscendingOrder();
            ids.Count.Should().BeLessThanOrEqualTo(50);
            seen.AddRange(ids);
            pages++;
            if (pages == 1)
            {
                Browser.Screenshot("devices");
                AssertCleanPage("devices");
            }

            var next = Driver.FindElement(By.XPath("//button[text()='Next page']"));
            if (!next.Enabled)
            {
                break;
            }

            next.Click();
        }

        seen.Should().HaveCount(total).And.OnlyHaveUniqueItems();
        pages.Should().Be((total + 49) / 50);
        var lastPageFirst = DeviceIds()[0];
        Driver.FindElement(By.XPath("//button[text()='Previous page']")).Click();
        Browser.WaitFor(() => DeviceIds() is { Count: 50 } shown && shown[^1] < lastPageFirst, "the page before");

        // Filters: the same devices the API answers for the same query.
        Driver.FindElement(By.Id("filter-hardware")).SendKeys("rev-C");
        Driver.FindElement(By.CssSelector("#filter-status_of_last_event option[value='failed']")).Click();
        Driver.FindElement(By.XPath("//button[text()='Apply filters']")).Click();
        var expected = (await GetAsync<List<JsonElement>>("/devices?hardware=rev-C&status_of_last_event=failed")).Select(d => d.GetProperty("id").GetInt64()).ToList();
        expected.Should().NotBeEmpty();
        Browser.WaitFor(() => DeviceIds().SequenceEqual(expected) ? true : (bool?)null, "the filtered devices");
        Driver.Url.Should().Contain("hardware=rev-C").And.Contain("status_of_last_event=failed");
        Driver.FindElements(By.CssSelector("table tbody tr")).Should().OnlyContain(r => r.Text.Contains("rev-C") && r.Text.Contains("failed"));
    }

    [BrowserFact]
    public async Task Download_CSV_saves_every_device_the_filters_select_and_the_devices_history()
    {
        var folder = Directory.CreateTempSubdirectory("fm-downloads-").FullName;
        try
        {
            Driver.ExecuteCdpCommand("Browser.setDownloadBehavior", new Dictionary<string, object?> { ["behavior"] = "allow", ["downloadPath"] = folder });
            SignIn(FirmwareManagerApp.MemberKey1);
            Go("#/devices?hardware=rev-C");
            Browser.WaitFor(() => DeviceIds() is { Count: > 0 } ids ? ids : null, "the devices");
            var expected = new List<long>();
            for (string? next = "/devices?hardware=rev-C&limit=1000"; next is not null;)
            {
                var response = await fleet.Admin.GetAsync(next);
                expected.AddRange((await response.Content.ReadFromJsonAsync<List<JsonElement>>())!.Select(d => d.GetProperty("id").GetInt64()));
                next = Firmware.PagingHistoryTests.NextLink(response);
            }

            // The tab's position past the end of the project's feed (a database restored to an earlier point): the
            // service refuses it with a 400, and the download forgets it and saves the file.
            var shown = long.Parse((string)Browser.Script($"return sessionStorage.getItem('{PositionItem}');")!, System.Globalization.CultureInfo.InvariantCulture);
            var pastTheEnd = shown + 1_000_000;
            Browser.Script($"sessionStorage.setItem('{PositionItem}', '{pastTheEnd}');");
            Driver.FindElement(By.XPath("//button[text()='Download CSV']")).Click();

            var devices = Fleet.ExportTests.ParseCsv(WaitForDownload(folder, "devices.csv"));
            devices[0].Should().StartWith(["id", "project_id", "name"]);
            devices.Skip(1).Select(r => long.Parse(r[0], System.Globalization.CultureInfo.InvariantCulture))
                .Should().Equal(expected, "every device the filters select, not only the page shown");
            devices.Skip(1).Should().OnlyContain(r => r[Array.IndexOf(devices[0], "hardware")] == "rev-C");
            Browser.ConsoleErrors().Should().ContainSingle().Which.Should().Contain($"min_position={pastTheEnd}").And.Contain("400", "the one request refused");
            Browser.Script($"return sessionStorage.getItem('{PositionItem}');").Should().BeNull("the tab forgot the position past the end");

            Go($"#/devices/{fleet.RollbackDeviceId}");
            Browser.WaitForElement(".timeline li");
            Driver.FindElement(By.XPath("//button[text()='Download CSV']")).Click();
            var history = Fleet.ExportTests.ParseCsv(WaitForDownload(folder, $"device-{fleet.RollbackDeviceId}-history.csv"));
            history.Skip(1).Select(r => long.Parse(r[0], System.Globalization.CultureInfo.InvariantCulture)).Should().Equal(
                (await GetAsync<List<JsonElement>>($"/firmware/{fleet.RollbackDeviceId}")).Select(e => e.GetProperty("id").GetInt64()));
            AssertCleanPage("device");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    // The file once Chromium has finished writing it (it writes to a .crdownload first).
    private string WaitForDownload(string folder, string name) => Browser.WaitFor(() =>
        File.Exists(Path.Combine(folder, name)) && !Directory.EnumerateFiles(folder, "*.crdownload").Any()
            ? File.ReadAllText(Path.Combine(folder, name))
            : null, $"{name} downloaded");

    [BrowserFact]
    public async Task Each_view_reads_at_least_the_projected_position_the_tab_has_shown_and_never_shows_less()
    {
        SignIn(FirmwareManagerApp.MemberKey1);
        Go("#/devices");
        Browser.WaitFor(() => DeviceIds() is { Count: > 0 } ids ? ids : null, "the devices");
        var shown = Browser.WaitFor(() => Browser.Script($"return sessionStorage.getItem('{PositionItem}');") as string, "the position shown");
        long.Parse(shown, System.Globalization.CultureInfo.InvariantCulture).Should().BeGreaterThan(0, "the fleet's reports are projected");

        Browser.Script("performance.clearResourceTimings();");
        Go("#/");
        AssertCleanPage("overview");

        var fetched = ((IReadOnlyCollection<object>)Browser.Script("return performance.getEntriesByType('resource').map(e => e.name);")!).Cast<string>().ToList();
        fetched.Where(u => u.Contains("/firmware-versions", StringComparison.Ordinal)).Should().NotBeEmpty()
            .And.OnlyContain(u => u.Contains($"min_position={shown}", StringComparison.Ordinal), "a projected view asks for what the tab has shown");

        // A position the projection has not reached (as a lagging standby's would be): the view is refused, not shown
        // older. The project's position held, so that no step applies a report (a late one, older than the device's
        // others by its clock, which changes no figure) while the view waits for it.
        await using (await fleet.App.HoldProjectionAsync(1))
        {
            var device = fleet.Devices.Single(d => d.Id == fleet.UpdatedDeviceId);
            var late = await device.Client.PostAsJsonAsync($"/firmware/{device.Id}", DashboardFixture.Event("1.9.0", "installed", DateTime.UtcNow.AddDays(-30)));
            late.StatusCode.Should().Be(HttpStatusCode.Created, await late.Content.ReadAsStringAsync());
            var ahead = late.Headers.GetValues("X-Feed-Position").Single();
            Browser.Script($"sessionStorage.setItem('{PositionItem}', '{ahead}');");
            Go("#/rollouts");
            Browser.WaitFor(() => Driver.FindElement(By.Id("message")).Text is { } m && m.Contains("not yet up to date", StringComparison.Ordinal) ? m : null,
                "the view refused", seconds: 20).Should().Contain($"of {ahead}");
        }

        // A position past the end of the project's feed (a database restored to an earlier point): no wait reaches it,
        // so the tab forgets it and shows the view.
        var pastTheEnd = long.Parse(shown, System.Globalization.CultureInfo.InvariantCulture) + 1_000_000;
        Browser.Script($"sessionStorage.setItem('{PositionItem}', '{pastTheEnd}');");
        Go("#/devices");
        Browser.WaitFor(() => DeviceIds() is { Count: > 0 } again ? again : null, "the devices, read without the position");
        var kept = Browser.WaitFor(() => Browser.Script($"return sessionStorage.getItem('{PositionItem}');") as string, "the position shown since");
        long.Parse(kept, System.Globalization.CultureInfo.InvariantCulture).Should().BeLessThan(pastTheEnd).And.BeGreaterThan(0);
    }

    [BrowserFact]
    public async Task A_device_page_shows_its_history_as_a_timeline()
    {
        SignIn(FirmwareManagerApp.MemberKey1);
        Go("#/devices?status_of_last_event=rolled_back");
        var link = Browser.WaitForElement($"a[href='#/devices/{fleet.RollbackDeviceId}']");
        link.Click();

        var history = await GetAsync<List<JsonElement>>($"/firmware/{fleet.RollbackDeviceId}");
        var items = Browser.WaitFor(() => Driver.FindElements(By.CssSelector(".timeline li")) is { Count: > 0 } li ? li : null, "the timeline");
        items.Select(i => long.Parse(i.GetAttribute("data-event-id")!))
            .Should().Equal(history.Select(e => e.GetProperty("id").GetInt64()), "newest first, as the API answers");
        items[0].Text.Should().Contain("rolled back").And.Contain("1.9.0").And.Contain("from 2.0.0").And.Contain("E_BOOT_LOOP").And.Contain("watchdog reset 3 times");
        Driver.FindElement(By.CssSelector("#view h1")).Text.Should().Be("test device");
        AssertCleanPage("device");
    }

    [BrowserFact]
    public async Task A_new_report_appears_in_the_live_feed_without_a_reload()
    {
        SignIn(FirmwareManagerApp.MemberKey1);
        Go("#/feed");
        Browser.WaitFor(() => Driver.FindElement(By.Id("feed-state")).Text.StartsWith("Live", StringComparison.Ordinal) ? true : (bool?)null, "the feed to go live");
        Browser.WaitFor(() => Driver.FindElements(By.CssSelector("#feed-rows tr")).Count > 0 ? true : (bool?)null, "the newest events");
        Browser.Script("window.fmSamePage = 'yes';");

        var device = fleet.Devices.Single(d => d.Id == fleet.UpdatedDeviceId);
        var response = await device.Client.PostAsJsonAsync($"/firmware/{device.Id}",
            DashboardFixture.Event("2.1.0-rc.1", "failed", DateTime.UtcNow, "E_FEED_TEST", from: "2.0.0"));
        response.StatusCode.Should().Be(HttpStatusCode.Created, await response.Content.ReadAsStringAsync());
        var eventId = (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetInt64();

        var row = Browser.WaitForElement($"#feed-rows tr[data-event-id='{eventId}']");
        row.Text.Should().Contain("E_FEED_TEST").And.Contain("2.1.0-rc.1").And.Contain($"device {device.Id}");
        Driver.FindElements(By.CssSelector("#feed-rows tr"))[0].GetAttribute("data-event-id").Should().Be(eventId.ToString(), "the newest is on top");
        Browser.Script("return window.fmSamePage;").Should().Be("yes", "the page was not reloaded");
        Driver.FindElements(By.CssSelector($"#feed-rows tr[data-event-id='{eventId}']")).Should().ContainSingle("an event is shown once");
        AssertCleanPage("feed");
    }

    [BrowserFact]
    public async Task Rollouts_and_transitions_show_progress_state_and_why_updates_fail()
    {
        SignIn(FirmwareManagerApp.MemberKey1);
        Go("#/rollouts");
        var card = Browser.WaitForElement("article.rollout");
        var rollout = (await GetAsync<List<JsonElement>>("/rollouts")).Single();
        rollout.GetProperty("state").GetString().Should().Be("halted", "a third of the seeded reports on 2.0.0 failed");
        card.FindElement(By.CssSelector(".badge")).Text.Should().Be("halted");
        Figure(card, "attempted").Should().Be(rollout.GetProperty("attempted").GetInt64().ToString());
        Figure(card, "failed").Should().Be(rollout.GetProperty("failed").GetInt64().ToString());
        Figure(card, "rolled back").Should().Be(rollout.GetProperty("rolled_back").GetInt64().ToString());
        var progress = card.FindElement(By.TagName("progress"));
        progress.GetAttribute("value").Should().Be(rollout.GetProperty("updated").GetInt64().ToString());
        // A wide screen is used: the one card spans the row rather than a narrow column beside empty space.
        Convert.ToDouble(Browser.Script(
            "return document.querySelector('article.rollout').getBoundingClientRect().width / document.querySelector('.rollouts').getBoundingClientRect().width;"),
            System.Globalization.CultureInfo.InvariantCulture).Should().BeGreaterThan(0.9);
        AssertCleanPage("rollouts");

        // Every transition, by SemVer precedence of its target (1.9.0 before 1.10.0 before 2.0.0), as the overview.
        Go("#/transitions");
        var targets = Browser.WaitFor(() => Driver.FindElements(By.CssSelector("table tbody tr th"))
            .Select(th => th.Text.Split('→')[1].Trim()).ToList() is { Count: > 1 } shown ? shown : null, "the transitions");
        targets.Should().Contain(["1.10.0", "2.0.0"]);
        targets.Should().BeInAscendingOrder(Comparer<string>.Create((a, b) =>
            Semver.SemVersion.ComparePrecedence(Semver.SemVersion.Parse(a), Semver.SemVersion.Parse(b))));

        Go("#/transitions?to=2.0.0");
        var row = Browser.WaitFor(() => Driver.FindElements(By.CssSelector("table tbody tr"))
            .FirstOrDefault(r => r.FindElement(By.TagName("th")).Text.StartsWith("1.9.0", StringComparison.Ordinal)), "the 1.9.0 -> 2.0.0 transition");
        var transition = (await GetAsync<List<JsonElement>>("/firmware-transitions?to=2.0.0&from=1.9.0")).Single();
        row.Text.Should().Contain(transition.GetProperty("top_error_codes")[0].GetProperty("error_code").GetString());
        row.Text.Should().Contain("E_SIG_VERIFY").And.Contain("E_NO_SPACE");
        AssertCleanPage("transitions");
    }

    [BrowserFact]
    public void Signing_out_forgets_the_key()
    {
        SignIn(FirmwareManagerApp.MemberKey1);
        Driver.FindElement(By.Id("sign-out")).Click();

        Browser.WaitForElement("#sign-in-form");
        Driver.FindElement(By.Id("message")).Text.Should().Be("Signed out.");
        Browser.Script($"return sessionStorage.getItem('{KeyItem}');").Should().BeNull();
        Driver.FindElement(By.Id("view")).Text.Should().BeEmpty("nothing of the project stays on screen");
        Driver.Navigate().Refresh();
        Browser.WaitForElement("#sign-in-form");
        Driver.FindElement(By.Id("nav")).Displayed.Should().BeFalse();
    }

    [BrowserFact]
    public async Task A_wrong_a_device_and_a_revoked_key_are_each_explained()
    {
        TrySignIn("not_a_key_of_this_service");
        MessageShown().Should().Be("This key is unknown or has been revoked. Sign in with a current member key.");
        Browser.Script($"return sessionStorage.getItem('{KeyItem}');").Should().BeNull();

        TrySignIn(FirmwareManagerApp.DeviceKey1);
        MessageShown().Should().Contain("device key");
        Browser.Script($"return sessionStorage.getItem('{KeyItem}');").Should().BeNull();

        // Revoked while signed in: the next call signs the operator out and says why.
        var issued = await (await fleet.Admin.PostAsync("/me/keys", null)).Content.ReadFromJsonAsync<JsonElement>();
        SignIn(issued.GetProperty("key").GetString()!);
        (await fleet.Admin.DeleteAsync($"/me/keys/{issued.GetProperty("id").GetInt64()}")).StatusCode.Should().Be(HttpStatusCode.NoContent);
        Go("#/devices");
        Browser.WaitForElement("#sign-in-form");
        MessageShown().Should().Contain("unknown or has been revoked");
        Browser.Script($"return sessionStorage.getItem('{KeyItem}');").Should().BeNull();

        fleet.App.Logs.Rendered().Should().NotContain(line => line.Contains(issued.GetProperty("key").GetString()!));
    }

    [BrowserFact]
    public async Task A_rate_limited_key_is_told_when_to_try_again()
    {
        var issued = await (await fleet.Admin.PostAsync("/me/keys", null)).Content.ReadFromJsonAsync<JsonElement>();
        var key = issued.GetProperty("key").GetString()!;
        using var client = fleet.App.ClientWithKey(key);
        var statuses = await Task.WhenAll(Enumerable.Range(0, 1100).Select(async _ => (await client.GetAsync("/me")).StatusCode));
        statuses.Should().Contain(HttpStatusCode.TooManyRequests, "the key's burst of 1000 is spent");
        // The bucket refills at 2 a second: calls go on meanwhile, as a busy script's would, so that it stays empty.
        using var stop = new CancellationTokenSource();
        var drain = Task.WhenAll(Enumerable.Range(0, 2).Select(_ => Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                (await client.GetAsync("/me", CancellationToken.None)).Dispose();
                await Task.Delay(20, CancellationToken.None);
            }
        }, CancellationToken.None)));

        string message;
        try
        {
            TrySignIn(key);
            message = MessageShown();
        }
        finally
        {
            await stop.CancelAsync();
            await drain;
        }

        message.Should().MatchRegex(@"^Too many requests with this key\. Try again in \d+ seconds\.$");
    }

    [BrowserFact]
    public void The_dashboard_fits_a_phone_and_is_usable_by_keyboard()
    {
        try
        {
            Browser.Resize(390, 844);
            SignIn(FirmwareManagerApp.MemberKey1);
            Browser.WaitForElement(".chart");
            Browser.Script("return document.documentElement.scrollWidth <= window.innerWidth;").Should().Be(true, "nothing overflows the page sideways");
            // The chart's text as drawn: its font size times the drawing's scale to the screen.
            const string smallestText =
                "const chart = document.querySelector('svg.chart');" +
                "const scale = chart.getBoundingClientRect().width / chart.viewBox.baseVal.width;" +
                "return Math.min(...[...chart.querySelectorAll('.chart-label, .chart-value')].map(t => parseFloat(getComputedStyle(t).fontSize) * scale));";
            Convert.ToDouble(Browser.Script(smallestText), System.Globalization.CultureInfo.InvariantCulture)
                .Should().BeGreaterThanOrEqualTo(12, "the chart's labels stay legible at a phone's width");
            AssertCleanPage("phone");
        }
        finally
        {
            Browser.Resize(1280, 1000);
        }

        // By keyboard: the skip link shows when focused; from the first link of the navigation, Tab reaches the next
        // and Enter opens it, focus lands on the new page's heading, and a filter is typed and submitted with Enter.
        Driver.Navigate().GoToUrl(fleet.Url("/dashboard/#/"));
        Browser.WaitForElement(".chart");
        Browser.Script("document.querySelector('.skip').focus();");
        Driver.SwitchTo().ActiveElement().Location.X.Should().BeGreaterThanOrEqualTo(0, "the focused skip link is on screen");
        Browser.Script("document.querySelector('#nav a').focus();");
        Driver.SwitchTo().ActiveElement().Text.Should().Be("Overview");
        new OpenQA.Selenium.Interactions.Actions(Driver).SendKeys(Keys.Tab).Perform();
        Driver.SwitchTo().ActiveElement().Text.Should().Be("Devices");
        new OpenQA.Selenium.Interactions.Actions(Driver).SendKeys(Keys.Enter).Perform();
        Browser.WaitFor(() => Driver.SwitchTo().ActiveElement() is { TagName: "h1", Text: "Devices" } ? true : (bool?)null, "focus on the Devices heading");
        new OpenQA.Selenium.Interactions.Actions(Driver).SendKeys(Keys.Tab).SendKeys("2.0.0").SendKeys(Keys.Enter).Perform();
        Browser.WaitFor(() => Driver.Url.Contains("firmware=2.0.0") && DeviceRows().Count > 0 ? true : (bool?)null, "devices on 2.0.0");
        DeviceRows().Should().OnlyContain(r => r.FindElements(By.TagName("td"))[1].Text == "2.0.0");
    }

    private void SignIn(string key)
    {
        TrySignIn(key);
        Browser.WaitFor(() => Driver.FindElement(By.Id("whoami")).Text is { Length: > 0 } who ? who : null, "the signed-in member");
    }

    private void TrySignIn(string key)
    {
        // What an earlier test left in the console (a wrong key's 401 is logged by the browser) is not this test's.
        Browser.ConsoleErrors();
        Driver.Navigate().GoToUrl(fleet.Url("/dashboard/"));
        Browser.Script("sessionStorage.clear();");
        Browser.ConsoleErrors();
        Driver.Navigate().Refresh();
        var input = Browser.WaitForElement("#api-key");
        Driver.FindElement(By.Id("message")).Displayed.Should().BeFalse();
        input.SendKeys(key);
        input.SendKeys(Keys.Enter);
    }

    private string MessageShown() => Browser.WaitFor(
        () => Driver.FindElement(By.Id("message")) is { Displayed: true } message && message.Text.Length > 0 ? message.Text : null, "a message");

    private void Go(string hash) => Browser.Script($"location.hash = '{hash}';");

    private List<IWebElement> DeviceRows() => [.. Driver.FindElements(By.CssSelector(".results table tbody tr"))];

    private List<long> DeviceIds() =>
        [.. DeviceRows().Select(r => long.Parse(r.FindElements(By.TagName("td"))[0].Text, System.Globalization.CultureInfo.InvariantCulture))];

    private static string Figure(IWebElement card, string name) =>
        card.FindElements(By.CssSelector(".figure")).Single(f => f.FindElement(By.TagName("dt")).Text == name).FindElement(By.TagName("dd")).Text.Replace(",", "");

    private async Task<T> GetAsync<T>(string path)
    {
        using var response = await fleet.Admin.GetAsync(path);
        response.StatusCode.Should().Be(HttpStatusCode.OK, await response.Content.ReadAsStringAsync());
        return (await response.Content.ReadFromJsonAsync<T>())!;
    }

    /// <summary>The key is in the tab's session storage and nowhere a browser would send or keep it.</summary>
    private void AssertKeyOnlyInSessionStorage(string key)
    {
        Browser.Script($"return sessionStorage.getItem('{KeyItem}');").Should().Be(key);
        Browser.Script("return document.cookie;").Should().Be("");
        Browser.Script("return localStorage.length;").Should().Be(0L);
        Driver.Url.Should().NotContain(key);
        Browser.Script("return performance.getEntriesByType('resource').map(r => r.name).join(' ');").As<string>().Should().NotContain(key);
        fleet.App.Logs.Rendered().Should().NotContain(line => line.Contains(key));
    }

    /// <summary>No console error (a script error, a CSP violation, a failed load) and no serious axe-core finding; then a screenshot.</summary>
    private void AssertCleanPage(string view)
    {
        Browser.WaitFor(() => Driver.FindElements(By.CssSelector(".loading")).Count == 0 ? true : (bool?)null, $"the {view} view to load");
        var violations = Browser.AxeViolations();
        foreach (var v in violations)
        {
            output.WriteLine($"axe ({view}): {v.Impact} {v.Id}: {v.Help} at {string.Join(", ", v.Nodes)}");
        }

        violations.Where(v => v.Impact is "serious" or "critical").Should().BeEmpty();
        Browser.ConsoleErrors().Should().BeEmpty();
        output.WriteLine($"screenshot: {Browser.Screenshot(view)}");
    }
}
