using System.Globalization;
using FirmwareManager.Tests.Infrastructure;
using OpenQA.Selenium;
using Xunit.Abstractions;

namespace FirmwareManager.Tests.Dashboard;

/// <summary>
/// How long the dashboard takes to show each view on a big project, in the browser: run by bench/dashboard.sh
/// against the benchmark fleet (a service it started, <c>FIRMWAREMANAGER_DASHBOARD_URL</c> and a member key in
/// <c>FIRMWAREMANAGER_DASHBOARD_KEY</c>), skipped otherwise. Times are written down, never asserted.
/// </summary>
public sealed class DashboardOnBenchmarkFleetTests(ITestOutputHelper output)
{
    public const string UrlVariable = "FIRMWAREMANAGER_DASHBOARD_URL";
    public const string KeyVariable = "FIRMWAREMANAGER_DASHBOARD_KEY";
    public const string ResultsVariable = "FIRMWAREMANAGER_DASHBOARD_RESULTS";
    private const int Loads = 6;

    // Each view, and the mark the dashboard sets once the view's data is on screen (app.js).
    private static readonly (string Name, string Hash, string Mark)[] Views =
    [
        ("overview (version distribution)", "#/", "fm:overview-shown"),
        ("devices, first page of 50", "#/devices", "fm:devices-shown"),
        ("devices on one version", "#/devices?firmware=1.3.0", "fm:devices-shown"),
        ("devices silent since a date", "#/devices?silent_since=2024-01-05T00:00", "fm:devices-shown"),
        ("one device's history", "#/devices/1", "fm:device-shown"),
        ("live feed (newest 50, then polling)", "#/feed", "fm:feed-shown"),
        ("transitions", "#/transitions", "fm:transitions-shown"),
    ];

    [BenchmarkDashboardFact]
    public void Each_view_of_the_benchmark_project_is_timed_from_navigation_to_its_data_on_screen()
    {
        var url = new Uri(new Uri(Environment.GetEnvironmentVariable(UrlVariable)!), "/dashboard/");
        var key = Environment.GetEnvironmentVariable(KeyVariable)!;
        using var browser = new Browser();
        var driver = browser.Driver;
        driver.Navigate().GoToUrl(url);
        var input = browser.WaitForElement("#api-key");
        input.SendKeys(key);
        browser.Script("window.fmSubmittedAt = performance.now();");
        input.SendKeys(Keys.Enter);
        var signedIn = browser.WaitFor(() => ShownAt(browser, "fm:overview-shown"), "the overview after signing in", 60)!.Value
            - Convert.ToDouble(browser.Script("return window.fmSubmittedAt;"), CultureInfo.InvariantCulture);

        var lines = new List<string>
        {
            "| view | first of the loads (ms) | median of the other loads (ms) | loads |",
            "|---|---|---|---|",
            string.Create(CultureInfo.InvariantCulture, $"| sign-in in a new browser profile: key submitted to the overview shown | {signedIn:0} | | 1 |"),
        };
        foreach (var (name, hash, mark) in Views)
        {
            var times = new List<double>();
            for (var i = 0; i < Loads; i++)
            {
                // A new document each time, as a new tab or a reload gives: the key is already in the tab.
                driver.Navigate().GoToUrl(new Uri(url, hash));
                driver.Navigate().Refresh();
                times.Add(browser.WaitFor(() => ShownAt(browser, mark), $"{name} to show", 60)!.Value);
            }

            var rest = times.Skip(1).Order().ToList();
            var median = rest[rest.Count / 2];
            lines.Add(string.Create(CultureInfo.InvariantCulture, $"| {name} | {times[0]:0} | {median:0} | {times.Count} |"));
        }

        browser.ConsoleErrors().Should().BeEmpty();
        foreach (var line in lines)
        {
            output.WriteLine(line);
        }

        if (Environment.GetEnvironmentVariable(ResultsVariable) is { Length: > 0 } results)
        {
            File.WriteAllLines(results, lines);
        }
    }

    /// <summary>Milliseconds from the start of navigation to the view's mark, or null while it is not set yet.</summary>
    public static double? ShownAt(Browser browser, string mark) =>
        browser.Script("const m = performance.getEntriesByName(arguments[0])[0]; return m ? m.startTime : null;", mark) is { } value
            ? Convert.ToDouble(value, CultureInfo.InvariantCulture)
            : null;
}

/// <summary>Runs only where bench/dashboard.sh names a service (<c>FIRMWAREMANAGER_DASHBOARD_URL</c>).</summary>
public sealed class BenchmarkDashboardFactAttribute : FactAttribute
{
    public BenchmarkDashboardFactAttribute()
    {
        if (Environment.GetEnvironmentVariable(DashboardOnBenchmarkFleetTests.UrlVariable) is not { Length: > 0 })
        {
            Skip = $"Times the dashboard on the benchmark fleet: bench/dashboard.sh sets {DashboardOnBenchmarkFleetTests.UrlVariable}";
        }
        else if (!Browser.IsInstalled)
        {
            Skip = "No Chromium or ChromeDriver (apt-get install chromium chromium-driver)";
        }
    }
}
