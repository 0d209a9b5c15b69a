using System.Text.Json;
using Deque.AxeCore.Commons;
using OpenQA.Selenium;
using OpenQA.Selenium.Chrome;

namespace FirmwareManager.Tests.Infrastructure;

/// <summary>
/// Debian's Chromium, headless, driven through Debian's ChromeDriver with Selenium WebDriver: no browser is
/// downloaded (Selenium Manager is never asked, both paths are given). <c>FIRMWAREMANAGER_CHROMIUM</c> and
/// <c>FIRMWAREMANAGER_CHROMEDRIVER</c> name other binaries.
/// </summary>
public sealed class Browser : IDisposable
{
    public const string ChromiumVariable = "FIRMWAREMANAGER_CHROMIUM";
    public const string ChromeDriverVariable = "FIRMWAREMANAGER_CHROMEDRIVER";
    public const string RequiredVariable = "FIRMWAREMANAGER_BROWSER_TESTS";
    public const string ScreenshotsVariable = "FIRMWAREMANAGER_SCREENSHOTS";

    public static string ChromiumPath => Environment.GetEnvironmentVariable(ChromiumVariable) ?? "/usr/bin/chromium";

    public static string ChromeDriverPath => Environment.GetEnvironmentVariable(ChromeDriverVariable) ?? "/usr/bin/chromedriver";

    public static bool IsInstalled => File.Exists(ChromiumPath) && File.Exists(ChromeDriverPath);

    private readonly string _profile = Directory.CreateTempSubdirectory("fm-chromium-").FullName;

    public ChromeDriver Driver { get; }

    public Browser()
    {
        if (!IsInstalled)
        {
            throw new InvalidOperationException(
                $"No Chromium at {ChromiumPath} or no ChromeDriver at {ChromeDriverPath}: apt-get install chromium chromium-driver " +
                $"(or set {ChromiumVariable} and {ChromeDriverVariable}).");
        }

        var service = ChromeDriverService.CreateDefaultService(Path.GetDirectoryName(ChromeDriverPath)!, Path.GetFileName(ChromeDriverPath));
        service.SuppressInitialDiagnosticInformation = true;
        service.HideCommandPromptWindow = true;
        var options = new ChromeOptions { BinaryLocation = ChromiumPath };
        // As this machine's probe starts it: no sandbox as root, and nothing that would call out to Google's hosts.
        options.AddArguments(
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
            "--disable-default-apps", "--password-store=basic", $"--user-data-dir={_profile}", "--window-size=1280,1000");
        options.SetLoggingPreference(LogType.Browser, LogLevel.All);
        Driver = new ChromeDriver(service, options, TimeSpan.FromSeconds(60));
        Driver.Manage().Timeouts().AsynchronousJavaScript = TimeSpan.FromSeconds(60);
    }

    public void Resize(int width, int height) => Driver.Manage().Window.Size = new System.Drawing.Size(width, height);

    public object? Script(string script, params object[] arguments) => Driver.ExecuteScript(script, arguments);

    /// <summary>Polls until <paramref name="condition"/> holds, or fails with <paramref name="what"/> and the page's message.</summary>
    public T WaitFor<T>(Func<T?> condition, string what, int seconds = 15)
    {
        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        Exception? last = null;
        while (DateTime.UtcNow < deadline)
        {
            try
            {
                var value = condition();
                if (value is not null && value is not false)
                {
                    return value;
                }
            }
            catch (WebDriverException e)
            {
                last = e;
            }

            Thread.Sleep(50);
        }

        var message = Driver.FindElements(By.Id("message")).FirstOrDefault()?.Text;
        throw new TimeoutException($"Waited {seconds} s for {what}. The page's message: '{message}'. Last error: {last?.Message}");
    }

    public IWebElement WaitForElement(string css, int seconds = 15) =>
        WaitFor(() => Driver.FindElements(By.CssSelector(css)).FirstOrDefault(e => e.Displayed), $"'{css}' to show", seconds);

    /// <summary>Every console entry at error level since the last call (network errors and script errors alike).</summary>
    public IReadOnlyList<string> ConsoleErrors() =>
        Driver.Manage().Logs.GetLog(LogType.Browser)
            .Where(entry => entry.Level >= LogLevel.Severe)
            .Select(entry => entry.Message)
            .ToList();

    private static readonly string AxeSource = new BundledAxeScriptProvider().GetScript();

    private static readonly JsonSerializerOptions AxeJson = new() { PropertyNameCaseInsensitive = true };

    public sealed record AxeViolation(string Id, string Impact, string Help, IReadOnlyList<string> Nodes);

    /// <summary>axe-core's WCAG 2.x A and AA rules and its best practices on the page as it is now.</summary>
    public IReadOnlyList<AxeViolation> AxeViolations()
    {
        Driver.ExecuteScript(AxeSource);
        var json = (string?)Driver.ExecuteAsyncScript("""
            const done = arguments[arguments.length - 1];
            axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice'] } })
              .then(r => done(JSON.stringify(r.violations.map(v => ({
                id: v.id, impact: v.impact || 'unknown', help: v.help, nodes: v.nodes.map(n => n.target.join(' ')) })))),
                    e => done(JSON.stringify([{ id: 'axe-error', impact: 'critical', help: String(e), nodes: [] }])));
            """);
        return JsonSerializer.Deserialize<List<AxeViolation>>(json ?? "[]", AxeJson)!;
    }

    /// <summary>
    /// A PNG of the window, into <c>FIRMWAREMANAGER_SCREENSHOTS</c> (relative to the checkout: <c>docs/dashboard</c>
    /// makes docs/dashboard.md's), or else the test output's <c>screenshots</c> folder.
    /// </summary>
    public string Screenshot(string name)
    {
        var directory = Environment.GetEnvironmentVariable(ScreenshotsVariable) is { Length: > 0 } configured
            ? Path.GetFullPath(configured, Checkout.Root())
            : Path.Combine(AppContext.BaseDirectory, "screenshots");
        Directory.CreateDirectory(directory);
        var path = Path.Combine(directory, name + ".png");
        Driver.GetScreenshot().SaveAsFile(path);
        return path;
    }

    public void Dispose()
    {
        Driver.Quit();
        Driver.Dispose();
        try
        {
            Directory.Delete(_profile, recursive: true);
        }
        catch (IOException)
        {
            // Chromium may still be writing its profile as it exits; the folder is in the temporary directory.
        }
    }
}

/// <summary>
/// A test that drives the browser: skipped, with the reason, when Chromium or ChromeDriver is missing, unless
/// <c>FIRMWAREMANAGER_BROWSER_TESTS=required</c> (as <c>.ci/run</c> sets after installing them), where it fails instead.
/// </summary>
public sealed class BrowserFactAttribute : FactAttribute
{
    public BrowserFactAttribute()
    {
        if (!Browser.IsInstalled && Environment.GetEnvironmentVariable(Browser.RequiredVariable) != "required")
        {
            Skip = $"No Chromium at {Browser.ChromiumPath} or ChromeDriver at {Browser.ChromeDriverPath} (apt-get install chromium chromium-driver)";
        }
    }
}
