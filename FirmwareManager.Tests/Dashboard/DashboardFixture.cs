using System.Globalization;
using System.Net;
using System.Net.Http.Json;
using FirmwareManager.Tests.Infrastructure;

namespace FirmwareManager.Tests.Dashboard;

/// <summary>
/// The service on Kestrel with the demo data and a fleet a dashboard has something to show for, and one headless
/// Chromium. Project 1 gets 110 more devices (70 <c>rev-B</c> tagged <c>pilot</c>, 40 <c>rev-C</c>) that installed
/// 1.9.0; a rollout of 2.0.0 from 1.9.0; then most update to 2.0.0, some fail (two error codes), some roll back,
/// and every tenth goes to 1.10.0 instead (SemVer order puts it between 1.9.0 and 2.0.0; text order would not).
/// Member keys keep a rate limit here (2 a second, a burst of 1000), so a test can run one out.
/// </summary>
public sealed class DashboardFixture : IAsyncLifetime
{
    public const int SeededDevices = 110;

    public FirmwareManagerApp App { get; } = new(realServer: true, new Dictionary<string, string>
    {
        ["FirmwareManager:RateLimits:Member:PermitsPerSecond"] = "2",
        ["FirmwareManager:RateLimits:Member:Burst"] = "1000",
    });

    public Browser Browser { get; private set; } = null!;

    public HttpClient Admin { get; private set; } = null!;

    /// <summary>The seeded devices by id, with a client holding each one's key.</summary>
    public List<(long Id, HttpClient Client)> Devices { get; } = [];

    public long RollbackDeviceId { get; private set; }

    public long UpdatedDeviceId { get; private set; }

    public async Task InitializeAsync()
    {
        await App.InitializeAsync();
        Admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        await SeedAsync();
        if (Browser.IsInstalled || Environment.GetEnvironmentVariable(Browser.RequiredVariable) == "required")
        {
            Browser = new Browser();
        }
    }

    public async Task DisposeAsync()
    {
        Browser?.Dispose();
        await App.DisposeAsync();
    }

    public Uri Url(string path) => new(App.BaseAddress, path);

    private async Task SeedAsync()
    {
        for (var i = 0; i < SeededDevices; i++)
        {
            var (id, key) = await App.AddDeviceAsync(projectId: 1);
            Devices.Add((id, App.ClientWithKey(key)));
        }

        await Expect(Admin.PatchAsJsonAsync("/devices", new { device_ids = Devices.Take(70).Select(d => d.Id), hardware = "rev-B", tags = new[] { "pilot" } }));
        await Expect(Admin.PatchAsJsonAsync("/devices", new { device_ids = Devices.Skip(70).Select(d => d.Id), hardware = "rev-C" }));
        await Expect(Admin.PostAsJsonAsync("/rollouts", new { firmware = "2.0.0", from_firmware = "1.9.0", max_failure_rate = 0.1, min_devices = 5 }),
            HttpStatusCode.Created);

        var installed = DateTime.UtcNow.AddDays(-2);
        var updated = DateTime.UtcNow.AddMinutes(1);
        // Two days ago every device installed 1.9.0; then each reports what became of the rollout.
        await Parallel.ForEachAsync(Devices, new ParallelOptions { MaxDegreeOfParallelism = 8 },
            async (d, cancel) => await Expect(d.Client.PostAsJsonAsync($"/firmware/{d.Id}", Event("1.9.0", "installed", installed), cancel),
                HttpStatusCode.Created));
        await Parallel.ForEachAsync(Devices.Select((device, index) => (device, index)), new ParallelOptions { MaxDegreeOfParallelism = 8 },
            async (d, cancel) => await Expect(d.device.Client.PostAsJsonAsync($"/firmware/{d.device.Id}/batch", Reports(d.index, installed, updated), cancel)));
        RollbackDeviceId = Devices[9].Id;
        UpdatedDeviceId = Devices[1].Id;
    }

    private static object[] Reports(int index, DateTime installed, DateTime updated)
    {
        return (index % 10) switch
        {
            0 => [Event("1.10.0", "installed", installed.AddDays(1))],
            7 => [Event("2.0.0", "downloading", updated), Event("2.0.0", "failed", updated.AddSeconds(30), "E_SIG_VERIFY", "signature check failed on slot B")],
            8 => [Event("2.0.0", "failed", updated.AddSeconds(20), "E_NO_SPACE", "needs 48 MiB, 12 MiB free")],
            9 => [Event("2.0.0", "installing", updated), Event("1.9.0", "rolled_back", updated.AddSeconds(40), "E_BOOT_LOOP", "watchdog reset 3 times", from: "2.0.0")],
            _ => [Event("2.0.0", "downloading", updated), Event("2.0.0", "updated", updated.AddSeconds(10 + index % 7), from: "1.9.0")],
        };
    }

    public static object Event(string firmware, string status, DateTime at, string? errorCode = null, string? detail = null, string? from = null) => new
    {
        firmware,
        status,
        timestamp = at.ToString("yyyy-MM-dd'T'HH:mm:ss.ffffff'Z'", CultureInfo.InvariantCulture),
        from_firmware = from,
        error_code = errorCode,
        detail,
    };

    private static async Task Expect(Task<HttpResponseMessage> call, HttpStatusCode status = HttpStatusCode.OK)
    {
        using var response = await call;
        response.StatusCode.Should().Be(status, await response.Content.ReadAsStringAsync());
    }
}

[CollectionDefinition(Name)]
public sealed class BrowserTestGroup : ICollectionFixture<DashboardFixture>
{
    public const string Name = "browser";
}
