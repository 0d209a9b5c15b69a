using System.Net;
using System.Net.Http.Json;
using Dapper;
using FirmwareManager.Api.Projections;
using FirmwareManager.Tests.Infrastructure;
using FirmwareManager.Tests.Observability;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using static FirmwareManager.Tests.Firmware.PagingHistoryTests;

namespace FirmwareManager.Tests.Projections;

/// <summary>
/// The derived state is projected from each project's feed after the report is stored: exactly once, visible
/// (<c>X-Projected-Position</c>) and waitable (<c>min_position</c>). On a service of its own, whose reports are answered
/// as soon as they are stored, as in production (the shared test service answers once projected).
/// </summary>
public sealed class ProjectionTests(ProjectionTests.AnsweredWhenStored service) : IClassFixture<ProjectionTests.AnsweredWhenStored>, IAsyncLifetime
{
    private static readonly DateTime At = new(2025, 6, 1, 0, 0, 0, DateTimeKind.Utc);

    private readonly FirmwareManagerApp _app = service.App;

    /// <summary>
    /// The service for these tests: reports answered once stored; a short wait for <c>min_position</c> (2 s: a step
    /// may wait for <c>StepIntervalMs</c>, 200 ms, after the one before); steps paced as by default.
    /// </summary>
    public sealed class AnsweredWhenStored : IAsyncLifetime
    {
        public FirmwareManagerApp App { get; } = new(realServer: false, new Dictionary<string, string>
        {
            ["FirmwareManager:Projections:MaxWaitMs"] = "2000",
        }, answerBeforeProjected: true);

        public Task InitializeAsync() => App.InitializeAsync();

        public async Task DisposeAsync() => await App.DisposeAsync();
    }

    public Task InitializeAsync() => _app.ResetAsync();

    public Task DisposeAsync() => Task.CompletedTask;

    [Fact]
    public async Task A_report_read_with_its_feed_position_shows_in_every_projected_view()
    {
        using var device = _app.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        using var member = _app.ClientWithKey(FirmwareManagerApp.MemberKey1);
        for (var round = 0; round < 20; round++)
        {
            var version = $"7.{round}.0";
            var report = await device.PostEventAsync(1, Event(version, "updated", At.AddMinutes(round)));
            report.StatusCode.Should().Be(HttpStatusCode.Created);
            var position = FeedPosition(report);

            var read = await member.GetAsync($"/devices/1?min_position={position}");
            read.StatusCode.Should().Be(HttpStatusCode.OK);
            ProjectedPosition(read).Should().BeGreaterThanOrEqualTo(position);
            (await read.JsonAsync()).GetProperty("current_firmware").GetString().Should().Be(version, "the read waited for its own write");

            foreach (var path in new[] { "/devices", "/firmware-versions", "/firmware-transitions", "/rollouts" })
            {
                var view = await member.GetAsync($"{path}?min_position={position}");
                view.StatusCode.Should().Be(HttpStatusCode.OK, path);
                ProjectedPosition(view).Should().BeGreaterThanOrEqualTo(position, path);
            }

            var versions = await (await member.GetAsync($"/firmware-versions?min_position={position}")).JsonAsync();
            versions.EnumerateArray().Should().Contain(v => v.GetProperty("firmware").GetString() == version && v.GetProperty("devices").GetInt64() == 1);
        }

        (await _app.Services.GetRequiredService<ProjectionRecount>().DifferencesAsync(1, CancellationToken.None)).Should().BeEmpty();
    }

    [Fact]
    public async Task Every_projected_read_says_how_far_its_state_goes_even_without_min_position()
    {
        using var device = _app.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        using var member = _app.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var position = FeedPosition(await device.PostEventAsync(1, Event("6.0.0", "updated", At)));
        await WaitUntilProjectedAsync(1);
        foreach (var path in new[] { "/devices", "/devices/1", "/firmware-versions", "/firmware-transitions", "/rollouts" })
        {
            // On one host the position may be what this instance knew up to PositionRefreshMs (1 s) ago: never more than
            // the state includes, and the project's position once this instance has looked again.
            var deadline = DateTime.UtcNow.AddSeconds(5);
            long shown;
            do
            {
                var response = await member.GetAsync(path);
                response.StatusCode.Should().Be(HttpStatusCode.OK, path);
                shown = ProjectedPosition(response);
                shown.Should().BeLessThanOrEqualTo(position, "{0}'s state includes the project's feed up to its last report, no further", path);
            }
            while (shown < position && DateTime.UtcNow < deadline && await Delay(50));

            shown.Should().Be(position, "{0}'s state includes the project's feed up to its last report", path);
        }

        // Another project's position is its own.
        using var otherMember = _app.ClientWithKey(FirmwareManagerApp.MemberKey3);
        ProjectedPosition(await otherMember.GetAsync("/devices")).Should().Be(0, "project 2 has had no report numbered in its feed");

        // History and the feed are the record itself, not projected: no such header.
        (await member.GetAsync("/firmware/1")).Headers.Contains(ProjectedReads.Header).Should().BeFalse();
    }

    [Fact]
    public async Task The_position_a_read_shows_is_never_ahead_of_the_state_it_read_while_reports_arrive()
    {
        // Reads without min_position take the position this instance knew last (ProjectedPositions) while a device
        // reports a new version at each step: whatever position a read shows, the device's state in that read has
        // every report up to it.
        using var device = _app.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        using var member = _app.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var reported = new List<(long Position, int Round)>();
        // At least 40 reports, and more until a read has shown a projected position: on a loaded machine the 40 could
        // all be answered before the projection's first step, and the reads would then show nothing but 0 (CI saw it).
        var projectedSeen = 0;
        var reportingUntil = DateTime.UtcNow.AddSeconds(30);
        var reporting = Task.Run(async () =>
        {
            for (var round = 0; round < 40 || (Volatile.Read(ref projectedSeen) == 0 && DateTime.UtcNow < reportingUntil); round++)
            {
                var report = await device.PostEventAsync(1, Event($"8.{round}.0", "updated", At.AddMinutes(round)));
                report.StatusCode.Should().Be(HttpStatusCode.Created);
                lock (reported)
                {
                    reported.Add((FeedPosition(report), round));
                }
            }
        });
        var reads = new List<(long Shown, string? Firmware)>();
        while (!reporting.IsCompleted)
        {
            var read = await member.GetAsync("/devices/1");
            read.StatusCode.Should().Be(HttpStatusCode.OK);
            reads.Add((ProjectedPosition(read), (await read.JsonAsync()).GetProperty("current_firmware").GetString()));
            if (reads[^1].Shown > 0)
            {
                Volatile.Write(ref projectedSeen, 1);
            }
        }

        await reporting;
        reads.Should().Contain(r => r.Shown > 0, "the reads ran while the reports were projected");
        foreach (var (shown, firmware) in reads)
        {
            var included = reported.Where(r => r.Position <= shown).Select(r => r.Round).DefaultIfEmpty(-1).Max();
            if (included >= 0)
            {
                firmware.Should().StartWith("8.", "a read that shows position {0} includes the first report", shown);
                int.Parse(firmware!.Split('.')[1], System.Globalization.CultureInfo.InvariantCulture).Should().BeGreaterThanOrEqualTo(
                    included, "a read that shows position {0} includes the report of round {1}", shown, included);
            }
        }
    }

    [Fact]
    public async Task A_position_the_projection_has_not_reached_is_a_503_naming_the_position_reached()
    {
        using var device = _app.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        using var member = _app.ClientWithKey(FirmwareManagerApp.MemberKey1);
        (await device.PostEventAsync(1, Event("8.0.0", "updated", At))).StatusCode.Should().Be(HttpStatusCode.Created);
        await WaitUntilProjectedAsync(1);

        // The project's position held, so that no step applies the next report while it is read.
        long position;
        await using (await _app.HoldProjectionAsync(1))
        {
            position = FeedPosition(await device.PostEventAsync(1, Event("8.1.0", "updated", At.AddHours(1))));

            var response = await member.GetAsync($"/firmware-versions?min_position={position}");
            var problem = await response.ShouldBeProblemAsync(HttpStatusCode.ServiceUnavailable);
            response.Headers.RetryAfter.Should().NotBeNull();
            problem.GetProperty("min_position").GetInt64().Should().Be(position);
            problem.GetProperty("position_reached").GetInt64().Should().Be(position - 1);

            // A request that is wrong is told so, not told to try again: its own checks come before the wait.
            foreach (var wrong in new[]
                     {
                         $"/devices/abc?min_position={position}", $"/devices?limit=0&min_position={position}",
                         $"/firmware-transitions?to=not-a-version&min_position={position}", $"/rollouts/0x10?min_position={position}",
                     })
            {
                (await member.GetAsync(wrong)).StatusCode.Should().Be(HttpStatusCode.BadRequest, wrong);
            }
        }

        (await member.GetAsync($"/firmware-versions?min_position={position}")).StatusCode.Should().Be(HttpStatusCode.OK, "the step applies it once the position is free");
    }

    [Fact]
    public async Task A_position_past_the_end_of_the_projects_feed_is_a_400_at_once_as_no_wait_can_reach_it()
    {
        using var device = _app.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        using var member = _app.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var end = FeedPosition(await device.PostEventAsync(1, Event("8.0.0", "updated", At)));
        await WaitUntilProjectedAsync(1);

        var response = await member.GetAsync($"/devices?min_position={end + 1}");
        var problem = await response.ShouldBeProblemAsync(HttpStatusCode.BadRequest);
        problem.GetProperty("errors").GetProperty("min_position")[0].GetString().Should().Contain($"at position {end}");
        (await member.GetAsync($"/devices?min_position={end}")).StatusCode.Should().Be(HttpStatusCode.OK);
    }

    [Theory]
    [InlineData("-1")]
    [InlineData("abc")]
    [InlineData("1.5")]
    [InlineData("")]
    [InlineData("99999999999999999999")]
    [InlineData("1&min_position=2")]
    public async Task A_min_position_that_is_not_a_position_is_a_400(string value)
    {
        using var member = _app.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var response = await member.GetAsync($"/devices?min_position={value}");
        var problem = await response.ShouldBeProblemAsync(HttpStatusCode.BadRequest);
        problem.GetProperty("errors").TryGetProperty("min_position", out _).Should().BeTrue();
    }

    [Fact]
    public async Task Steady_reports_are_projected_in_steps_at_least_the_step_interval_apart_not_one_per_report()
    {
        using var device = _app.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        await WaitUntilProjectedAsync(1);
        var projector = _app.Services.GetRequiredService<Projector>();
        var steps = 0;
        void OnStepped(long project, long reached)
        {
            if (project == 1)
            {
                Interlocked.Increment(ref steps);
            }
        }

        projector.Stepped += OnStepped;
        var started = Environment.TickCount64;
        long last = 0;
        for (var i = 0; i < 40; i++)
        {
            last = FeedPosition(await device.PostEventAsync(1, Event($"9.{i}.0", "updated", At.AddMinutes(i))));
        }

        using var member = _app.ClientWithKey(FirmwareManagerApp.MemberKey1);
        (await member.GetAsync($"/devices/1?min_position={last}")).StatusCode.Should().Be(HttpStatusCode.OK);
        var elapsed = Environment.TickCount64 - started;
        projector.Stepped -= OnStepped;

        // A step starts at least 200 ms (StepIntervalMs) after the one before it began: over the reports and the wait
        // for the last, at most one a 200 ms, one more for the first (the project had been quiet), and one that began
        // before them. With steps back to back (StepIntervalMs 0) this found 16 steps in 864 ms.
        steps.Should().BeGreaterThan(0).And.BeLessThanOrEqualTo((int)(elapsed / 200) + 2, $"40 reports in {elapsed} ms are projected in steps 200 ms apart");
        (await _app.Services.GetRequiredService<ProjectionRecount>().DifferencesAsync(1, CancellationToken.None)).Should().BeEmpty();
    }

    [Fact]
    public async Task Steps_run_at_once_by_many_workers_apply_each_event_exactly_once()
    {
        // Reports from many devices of one project, with changes of hardware meanwhile, then eight workers stepping
        // the same project at once in small steps, as several instances would.
        var devices = new List<(long Id, string Key)>();
        for (var i = 0; i < 12; i++)
        {
            devices.Add(await _app.AddDeviceAsync(1));
        }

        var steps = _app.Services.GetRequiredService<ProjectionSteps>();
        using var admin = _app.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var reporting = Task.WhenAll(devices.Select(async (d, n) =>
        {
            using var client = _app.ClientWithKey(d.Key);
            for (var i = 0; i < 15; i++)
            {
                var status = (i + n) % 5 == 0 ? "failed" : (i + n) % 7 == 0 ? "rolled_back" : "updated";
                (await client.PostEventAsync(d.Id, Event($"1.{i % 4}.{n % 3}", status, At.AddMinutes(i)))).IsSuccessStatusCode.Should().BeTrue();
            }
        }));
        var relabelling = Task.Run(async () =>
        {
            for (var i = 0; i < 10; i++)
            {
                var body = new { device_ids = devices.Where((_, n) => n % 2 == i % 2).Select(d => d.Id).ToArray(), hardware = $"rev-{i % 3}" };
                (await admin.PatchAsJsonAsync("/devices", body)).IsSuccessStatusCode.Should().BeTrue();
            }
        });
        var stepping = Task.WhenAll(Enumerable.Range(0, 8).Select(_ => Task.Run(async () =>
        {
            while (!reporting.IsCompleted)
            {
                await steps.RunAsync(1, stepSize: 7, CancellationToken.None);
            }
        })));
        await Task.WhenAll(reporting, relabelling, stepping);

        await WaitUntilProjectedAsync(1);
        (await _app.Services.GetRequiredService<ProjectionRecount>().DifferencesAsync(1, CancellationToken.None)).Should().BeEmpty();
    }

    [Fact]
    public async Task A_step_killed_mid_way_keeps_nothing_and_the_next_applies_it_once()
    {
        using var device = _app.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        var steps = _app.Services.GetRequiredService<ProjectionSteps>();
        await WaitUntilProjectedAsync(1);
        await using var connection = _app.OpenConnection();
        var before = await steps.PositionAsync(1, CancellationToken.None);

        // The device's row held, so that the background step blocks on it and can be killed there.
        await using var holder = _app.OpenConnection();
        await using var hold = await holder.BeginTransactionAsync();
        // FOR NO KEY UPDATE, as a step takes it: the report (KEY SHARE) is stored meanwhile.
        await holder.ExecuteAsync("SELECT id FROM devices WHERE project_id = 1 AND id = 1 FOR NO KEY UPDATE", transaction: hold);
        var report = await device.PostEventAsync(1, Event("8.0.0", "updated", At));
        report.StatusCode.Should().Be(HttpStatusCode.Created);
        await _app.WaitUntilASessionWaitsForALockAsync();
        await KillWaitingSessionsAsync();
        await hold.RollbackAsync();

        await WaitUntilProjectedAsync(1);
        (await steps.PositionAsync(1, CancellationToken.None)).Should().BeGreaterThan(before);
        (await connection.ExecuteScalarAsync<string>("SELECT current_firmware FROM devices WHERE project_id = 1 AND id = 1")).Should().Be("8.0.0");
        (await connection.ExecuteScalarAsync<long>("SELECT sum(devices) FROM firmware_version_counts WHERE project_id = 1 AND firmware = '8.0.0'"))
            .Should().Be(1, "the killed step kept nothing, and the next one counted the report once");
        (await _app.Services.GetRequiredService<ProjectionRecount>().DifferencesAsync(1, CancellationToken.None)).Should().BeEmpty();
    }

    [Fact]
    public async Task A_project_whose_position_another_step_holds_is_tried_again_after_the_discovery_interval_not_at_every_report()
    {
        using var device = _app.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        using var member = _app.ClientWithKey(FirmwareManagerApp.MemberKey1);
        using var scraper = _app.CreateClient();
        var first = FeedPosition(await device.PostEventAsync(1, Event("7.0.0", "installed", At)));
        (await member.GetAsync($"/devices/1?min_position={first}")).StatusCode.Should().Be(HttpStatusCode.OK);
        const string missed = """firmware_manager_projection_claims_missed_total{otel_scope_name="FirmwareManager"}""";
        var before = await scraper.GetStringAsync("/metrics");

        // The position's row held as another instance's step holds it while it runs.
        await using var holder = _app.OpenConnection();
        await using var hold = await holder.BeginTransactionAsync();
        (await holder.ExecuteScalarAsync<long?>("SELECT position FROM project_projections WHERE project_id = 1 FOR UPDATE", transaction: hold))
            .Should().Be(first, "the project's position row exists once a step has projected its first report");
        var started = Environment.TickCount64;
        long last = 0;
        var reports = 0;
        for (var i = 0; Environment.TickCount64 - started < 1500; i++)
        {
            var report = await device.PostEventAsync(1, Event($"7.{i + 1}.0", "updated", At.AddMinutes(i + 1)));
            report.StatusCode.Should().Be(HttpStatusCode.Created);
            last = FeedPosition(report);
            reports++;
        }

        var elapsed = Environment.TickCount64 - started;
        await Task.Delay(400); // the exporter may serve a scrape from the last 300 ms again
        var scraped = await scraper.GetStringAsync("/metrics");
        var tried = MetricsTests.Increase(before, scraped, missed);
        await hold.RollbackAsync();

        // Each report queues its project; a step that found the row held waits DiscoveryIntervalMs (500 ms) before the
        // next: at most one try a 500 ms over the reports and the scrape's wait, and one more for the first. With the
        // project queued again at each report (the code before) this found one try for nearly every report.
        reports.Should().BeGreaterThan(10, "the reports kept coming while the row was held");
        tried.Should().BeGreaterThan(0).And.BeLessThanOrEqualTo((elapsed + 400) / 500 + 2, $"{reports} reports in {elapsed} ms while the position was held");
        (await member.GetAsync($"/devices/1?min_position={last}")).StatusCode.Should().Be(HttpStatusCode.OK, "the row released, the project is projected");
        (await _app.Services.GetRequiredService<ProjectionRecount>().DifferencesAsync(1, CancellationToken.None)).Should().BeEmpty();
    }

    [Fact]
    public async Task A_devices_last_report_is_its_latest_received_when_one_step_applies_an_earlier_received_report_newer_by_its_clock()
    {
        using var device = _app.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        (await device.PostEventAsync(1, Event("8.0.0", "updated", At))).StatusCode.Should().Be(HttpStatusCode.Created);
        await WaitUntilProjectedAsync(1);

        // The project's position held, so that the background steps pass it by and the next one applies both reports.
        await using (await _app.HoldProjectionAsync(1))
        {
            (await device.PostEventAsync(1, Event("8.1.0", "updated", At.AddHours(2)))).StatusCode.Should().Be(HttpStatusCode.Created);
            await Task.Delay(50);
            (await device.PostEventAsync(1, Event("8.1.0", "updated", At.AddHours(1)))).StatusCode.Should().Be(HttpStatusCode.Created);
        }

        await WaitUntilProjectedAsync(1);
        await using var connection = _app.OpenConnection();
        var (stored, latest) = await connection.QuerySingleAsync<(DateTime Stored, DateTime Latest)>("""
            SELECT d.last_reported_at,
                   (SELECT max(e.received_at) FROM firmware_events AS e WHERE e.project_id = 1 AND e.device_id = 1)
            FROM devices AS d
            WHERE d.project_id = 1
              AND d.id = 1
            """);
        stored.Should().Be(latest, "the device last reported when its latest report was received, whatever its clock said");
        (await _app.Services.GetRequiredService<ProjectionRecount>().DifferencesAsync(1, CancellationToken.None)).Should().BeEmpty();
    }

    [Fact]
    public async Task The_recount_finds_a_figure_that_a_step_got_wrong()
    {
        using var device = _app.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        (await device.PostEventAsync(1, Event("9.0.0", "updated", At))).StatusCode.Should().Be(HttpStatusCode.Created);
        await WaitUntilProjectedAsync(1);
        var recount = _app.Services.GetRequiredService<ProjectionRecount>();
        (await recount.DifferencesAsync(null, CancellationToken.None)).Should().BeEmpty();

        await using var connection = _app.OpenConnection();
        await connection.ExecuteAsync("UPDATE firmware_version_counts SET devices = devices + 1 WHERE project_id = 1 AND firmware = '9.0.0'");
        await connection.ExecuteAsync("UPDATE device_transition_status SET status = 'failed' WHERE project_id = 1 AND to_firmware = '9.0.0'");

        var differences = await recount.DifferencesAsync(1, CancellationToken.None);
        differences.Should().Contain(d => d.Figure == "firmware_version_counts" && d.Key.StartsWith("9.0.0", StringComparison.Ordinal) && d.Stored == d.Recounted + 1);
        differences.Should().Contain(d => d.Figure == "firmware_transition_counts" && d.Key.StartsWith("9.0.0", StringComparison.Ordinal));
    }

    private static async Task KillWaitingSessionsAsync()
    {
        // As the server's administrator, on every node: the step waits on the node that holds the project's shard.
        await (await PostgresServer.SharedAsync()).AdminExecuteOnEveryNodeAsync(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%FOR NO KEY UPDATE%'");
    }

    private async Task WaitUntilProjectedAsync(long projectId)
    {
        await using var connection = _app.OpenConnection();
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (await connection.ExecuteScalarAsync<bool>("""
                   SELECT EXISTS (
                       SELECT 1
                       FROM project_event_arrivals AS a
                       LEFT JOIN project_projections AS p ON p.project_id = a.project_id
                       WHERE a.project_id = @ProjectId
                         AND a.last_arrival > COALESCE(p.position, 0))
                   """, new { ProjectId = projectId }))
        {
            DateTime.UtcNow.Should().BeBefore(deadline, "the projection catches up");
            await Task.Delay(20);
        }
    }

    private static async Task<bool> Delay(int milliseconds)
    {
        await Task.Delay(milliseconds);
        return true;
    }

    private static long FeedPosition(HttpResponseMessage response) =>
        long.Parse(response.Headers.GetValues("X-Feed-Position").Single(), System.Globalization.CultureInfo.InvariantCulture);

    private static long ProjectedPosition(HttpResponseMessage response) =>
        long.Parse(response.Headers.GetValues(ProjectedReads.Header).Single(), System.Globalization.CultureInfo.InvariantCulture);
}
