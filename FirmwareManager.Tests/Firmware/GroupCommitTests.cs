using System.Net;
using System.Net.Http.Json;
using Dapper;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Firmware;
using FirmwareManager.Tests.Infrastructure;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using Serilog.Core;

namespace FirmwareManager.Tests.Firmware;

/// <summary>
/// Reports waiting at the same moment are committed together. Each test makes a group for certain: one writer,
/// held on a device row another session has locked, while the reports queue behind it.
/// </summary>
public sealed class GroupCommitTests : IAsyncLifetime
{
    private string _connectionString = "";
    private WebApplicationFactory<Program> _service = null!;
    private readonly CapturedLogs _logs = new();

    public async Task InitializeAsync()
    {
        _connectionString = await PostgresServer.CreateDemoDatabaseAsync();
        _service = new ServiceOnDatabase(_connectionString).WithWebHostBuilder(b => b
            .UseSetting("FirmwareManager:Ingest:Writers", "1")
            .UseSetting("FirmwareManager:RateLimits:Device:PermitsPerSecond", "0")
            .ConfigureServices(s => s.AddSingleton<ILogEventSink>(_logs)));
    }

    public async Task DisposeAsync() => await _service.DisposeAsync();

    [Fact]
    public async Task Reports_of_many_devices_waiting_together_are_stored_in_one_transaction_each_answered_with_its_own_event()
    {
        var devices = await AddDevicesAsync(40);

        var responses = await QueuedBehindALockAsync(devices.Select((d, i) =>
            (d, (object)new { firmware = $"3.{i % 4}.0", status = i % 5 == 0 ? "failed" : "installed", timestamp = "2025-01-02T03:04:05Z" })).ToList());

        responses.Select(r => r.StatusCode).Should().AllBeEquivalentTo(HttpStatusCode.Created);
        for (var i = 0; i < devices.Count; i++)
        {
            var body = await responses[i].JsonAsync();
            body.GetProperty("device_id").GetInt64().Should().Be(devices[i].DeviceId, "each request is answered with its own device's event");
            body.GetProperty("firmware").GetString().Should().Be($"3.{i % 4}.0");
            responses[i].Headers.Location!.ToString().Should().Be($"/firmware/{devices[i].DeviceId}/events/{body.GetProperty("id").GetInt64()}");
        }

        await using var check = new NpgsqlConnection(_connectionString);
        var ids = devices.Select(d => d.DeviceId).ToArray();
        (await check.ExecuteScalarAsync<int>("SELECT count(DISTINCT xmin::text) FROM firmware_events WHERE device_id = ANY(@ids)", new { ids }))
            .Should().Be(1, "the 40 reports were one group: one transaction");
        (await check.QueryAsync<string>("SELECT current_firmware FROM devices WHERE id = ANY(@ids) ORDER BY id", new { ids }))
            .Should().Equal(devices.Select((_, i) => i % 5 == 0 ? null : $"3.{i % 4}.0"), "failed reports do not move the current firmware");
        await VersionCountsShouldMatchTheDevicesAsync(check);
    }

    [Fact]
    public async Task Batches_and_reports_of_different_devices_waiting_together_share_one_transaction()
    {
        var devices = await AddDevicesAsync(6);
        object Batch(int device) => Enumerable.Range(1, 3)
            .Select(i => new { firmware = $"8.{device}.{i}", status = "installed", timestamp = $"2025-05-0{i}T00:00:00Z" }).ToArray();

        var responses = await QueuedBehindALockAsync(devices.Select((d, i) =>
            (d, i < 4 ? Batch(i) : (object)new { firmware = $"8.{i}.9", status = "installed", timestamp = "2025-05-09T00:00:00Z" })).ToList());

        for (var i = 0; i < 4; i++)
        {
            responses[i].StatusCode.Should().Be(HttpStatusCode.OK);
            (await responses[i].JsonAsync()).GetProperty("created").GetInt32().Should().Be(3);
        }
        responses.Skip(4).Select(r => r.StatusCode).Should().AllBeEquivalentTo(HttpStatusCode.Created);
        await using var check = new NpgsqlConnection(_connectionString);
        var ids = devices.Select(d => d.DeviceId).ToArray();
        (await check.ExecuteScalarAsync<int>("SELECT count(*) FROM firmware_events WHERE device_id = ANY(@ids)", new { ids })).Should().Be(14);
        (await check.ExecuteScalarAsync<int>("SELECT count(DISTINCT xmin::text) FROM firmware_events WHERE device_id = ANY(@ids)", new { ids }))
            .Should().Be(1, "four batches and two reports waited together: one transaction");
        (await check.QueryAsync<string>("SELECT current_firmware FROM devices WHERE id = ANY(@ids) ORDER BY id", new { ids }))
            .Should().Equal("8.0.3", "8.1.3", "8.2.3", "8.3.3", "8.4.9", "8.5.9");
        await VersionCountsShouldMatchTheDevicesAsync(check);
    }

    [Fact]
    public async Task Reports_of_two_projects_waiting_together_share_one_transaction_on_one_server_each_numbered_in_its_own_feed()
    {
        var first = await AddDevicesAsync(3, projectId: 1);
        var second = await AddDevicesAsync(3, projectId: 2);
        var devices = first.Concat(second).ToList();

        var responses = await QueuedBehindALockAsync(devices.Select((d, i) =>
            (d, (object)new { firmware = "9.0.0", status = "installed", timestamp = $"2025-06-0{i + 1}T00:00:00Z" })).ToList());

        responses.Select(r => r.StatusCode).Should().AllBeEquivalentTo(HttpStatusCode.Created);
        await using var check = new NpgsqlConnection(_connectionString);
        var ids = devices.Select(d => d.DeviceId).ToArray();
        (await check.ExecuteScalarAsync<int>("SELECT count(DISTINCT xmin::text) FROM firmware_events WHERE device_id = ANY(@ids)", new { ids }))
            .Should().Be(PostgresServer.IsCitus ? 2 : 1,
                PostgresServer.IsCitus ? "on Citus each project's transaction runs on its own node" : "one group, one transaction, whatever its projects");
        foreach (var (project, projectId) in new[] { (first, 1L), (second, 2L) })
        {
            // Each project's numbers follow on from its own feed, one per report, none shared with the other project.
            var positions = responses.Where((_, i) => project.Contains(devices[i]))
                .Select(r => long.Parse(r.Headers.GetValues("X-Feed-Position").Single(), System.Globalization.CultureInfo.InvariantCulture)).Order().ToList();
            var last = await check.ExecuteScalarAsync<long>("SELECT last_arrival FROM project_event_arrivals WHERE project_id = @projectId", new { projectId });
            positions.Should().Equal(last - 2, last - 1, last);
            (await check.QueryAsync<long>("SELECT arrival FROM firmware_events WHERE project_id = @projectId AND device_id = ANY(@ids) ORDER BY arrival",
                new { projectId, ids = project.Select(d => d.DeviceId).ToArray() })).Should().Equal(positions);
        }
    }

    [Fact]
    public async Task A_project_whose_group_waits_holds_one_writer_and_another_projects_report_is_stored_meanwhile()
    {
        await using var service = _service.WithWebHostBuilder(b => b.UseSetting("FirmwareManager:Ingest:Writers", "2"));
        var first = await AddDevicesAsync(2, projectId: 1);
        var (other, otherKey) = (await AddDevicesAsync(1, projectId: 2))[0];
        using var firstA = Client(service, first[0].Key);
        using var firstB = Client(service, first[1].Key);
        using var otherClient = Client(service, otherKey);
        await firstA.PostEventAsync(first[0].DeviceId, new { firmware = "1.0.0", status = "installed" });
        await otherClient.PostEventAsync(other, new { firmware = "1.0.0", status = "installed" });

        // Project 1's feed number held by another session: a group of project 1 waits for it in one writer.
        await using var blocker = new NpgsqlConnection(_connectionString);
        await blocker.OpenAsync();
        await using var transaction = await blocker.BeginTransactionAsync();
        await blocker.ExecuteAsync("SELECT last_arrival FROM project_event_arrivals WHERE project_id = 1 FOR UPDATE", transaction: transaction);
        var held = firstA.PostEventAsync(first[0].DeviceId, new { firmware = "2.0.0", status = "installed" });
        await WriterWaitsForALockAsync();
        // A second report of project 1, from another device: it waits for the first writer's group, not in the second writer.
        var heldToo = firstB.PostEventAsync(first[1].DeviceId, new { firmware = "2.0.0", status = "installed" });
        await Task.Delay(300);

        var meanwhile = await otherClient.PostEventAsync(other, new { firmware = "2.0.0", status = "installed" }).WaitAsync(TimeSpan.FromSeconds(20));

        meanwhile.StatusCode.Should().Be(HttpStatusCode.Created, "project 2's report had a writer of its own while project 1's group waited");
        service.Services.GetRequiredService<ReportGroupCommit>().Waiting.Should().Be(1,
            "project 1's second report waits, handed to the writer whose group holds project 1 (no longer in the queue)");
        held.IsCompleted.Should().BeFalse();
        heldToo.IsCompleted.Should().BeFalse();
        await transaction.CommitAsync();
        (await held).StatusCode.Should().Be(HttpStatusCode.Created);
        (await heldToo).StatusCode.Should().Be(HttpStatusCode.Created);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_projects_batch_group_rests_as_long_as_it_took_while_another_project_reports_and_never_when_alone(bool anotherReports)
    {
        await using var service = _service.WithWebHostBuilder(b => b.UseSetting("FirmwareManager:Ingest:Writers", "2"));
        var flood = await AddDevicesAsync(2, projectId: 1);
        var (other, otherKey) = (await AddDevicesAsync(1, projectId: 2))[0];
        using var floodA = Client(service, flood[0].Key);
        using var floodB = Client(service, flood[1].Key);
        using var otherClient = Client(service, otherKey);
        static object[] Batch(string firmware) =>
            Enumerable.Range(0, 150).Select(i => (object)new { firmware, status = "downloading", timestamp = $"2025-07-01T00:{i / 60:00}:{i % 60:00}Z" }).ToArray();

        // Project 1's feed number made (project 2 reports only where the test says), then held by another session
        // for a while: project 1's first batch (150 events: a flood's) waits for it, its second queued behind it.
        await floodA.PostEventAsync(flood[0].DeviceId, new { firmware = "2.0.0", status = "installed" });
        await using var blocker = new NpgsqlConnection(_connectionString);
        await blocker.OpenAsync();
        await using var transaction = await blocker.BeginTransactionAsync();
        await blocker.ExecuteAsync("SELECT last_arrival FROM project_event_arrivals WHERE project_id = 1 FOR UPDATE", transaction: transaction);
        var first = floodA.PostAsJsonAsync($"/firmware/{flood[0].DeviceId}/batch", Batch("3.0.0"));
        await WriterWaitsForALockAsync();
        var second = floodB.PostAsJsonAsync($"/firmware/{flood[1].DeviceId}/batch", Batch("3.0.1"));
        await Task.Delay(700);
        if (anotherReports)
        {
            (await otherClient.PostEventAsync(other, new { firmware = "3.0.0", status = "installed" })).StatusCode.Should().Be(HttpStatusCode.Created);
        }

        var released = await blocker.ExecuteScalarAsync<DateTime>("SELECT clock_timestamp()", transaction: transaction);
        await transaction.CommitAsync();
        (await first).StatusCode.Should().Be(HttpStatusCode.OK);
        (await second).StatusCode.Should().Be(HttpStatusCode.OK);

        // Each batch's events have their transaction's start as receive time. The first's took at least from its start
        // to the release; resting that long after its commit, the second's transaction starts no earlier than that
        // much after the release.
        await using var check = new NpgsqlConnection(_connectionString);
        const string ReceivedSql = "SELECT min(received_at) FROM firmware_events WHERE device_id = @device AND firmware LIKE '3.0.%'";
        var firstStarted = await check.ExecuteScalarAsync<DateTime>(ReceivedSql, new { device = flood[0].DeviceId });
        var secondStarted = await check.ExecuteScalarAsync<DateTime>(ReceivedSql, new { device = flood[1].DeviceId });
        var took = released - firstStarted;
        took.Should().BeGreaterThan(TimeSpan.FromMilliseconds(500));
        if (anotherReports)
        {
            secondStarted.Should().BeOnOrAfter(released + took - TimeSpan.FromMilliseconds(50),
                "project 2 reported meanwhile: project 1 rests as long as its group took, its next batch waiting");
        }
        else
        {
            secondStarted.Should().BeBefore(released + (took / 2), "alone, project 1 never rests: its next batch follows at once");
        }

        // A batch that comes while its project may rest (project 2 just reported, when it does), with nothing else
        // coming, is stored when the rest ends (whichever writer reads it: none waits for other reports to come first).
        if (anotherReports)
        {
            (await otherClient.PostEventAsync(other, new { firmware = "3.0.1", status = "installed" })).StatusCode.Should().Be(HttpStatusCode.Created);
        }

        for (var i = 0; i < 4; i++)
        {
            var next = await floodA.PostAsJsonAsync($"/firmware/{flood[0].DeviceId}/batch", Batch($"3.1.{i}")).WaitAsync(TimeSpan.FromSeconds(20));
            next.StatusCode.Should().Be(HttpStatusCode.OK);
        }
    }

    [Fact]
    public async Task A_repeat_in_a_group_is_answered_200_with_the_stored_event_and_the_others_201()
    {
        var devices = await AddDevicesAsync(5);
        using var first = Client(devices[2].Key);
        var report = new { firmware = "4.0.0", status = "updated", timestamp = "2025-02-01T00:00:00Z" };
        var stored = await (await first.PostEventAsync(devices[2].DeviceId, report)).JsonAsync();

        var responses = await QueuedBehindALockAsync(devices.Select(d => (d, (object)report)).ToList());

        responses.Select(r => r.StatusCode).Should().Equal(
            HttpStatusCode.Created, HttpStatusCode.Created, HttpStatusCode.OK, HttpStatusCode.Created, HttpStatusCode.Created);
        (await responses[2].JsonAsync()).GetProperty("id").GetInt64().Should().Be(stored.GetProperty("id").GetInt64());
        await using var check = new NpgsqlConnection(_connectionString);
        (await check.ExecuteScalarAsync<int>("SELECT count(*) FROM firmware_events WHERE firmware = '4.0.0'")).Should().Be(5);
    }

    [Fact]
    public async Task Reports_of_one_device_waiting_together_are_stored_one_transaction_after_another_each_with_its_receive_time()
    {
        var (device, key) = (await AddDevicesAsync(1))[0];
        var timed = Enumerable.Range(1, 6).Select(i => (object)new { firmware = $"5.0.{i}", status = "installed", timestamp = $"2025-03-0{i}T00:00:00Z" });
        // Two identical reports without a timestamp: two events, as when they arrive apart (each gets its receive time).
        var clockless = Enumerable.Repeat((object)new { firmware = "5.1.0", status = "downloading" }, 2);

        var responses = await QueuedBehindALockAsync(timed.Concat(clockless).Select(r => ((device, key), r)).ToList());

        responses.Select(r => r.StatusCode).Should().AllBeEquivalentTo(HttpStatusCode.Created);
        await using var check = new NpgsqlConnection(_connectionString);
        (await check.ExecuteScalarAsync<int>("SELECT count(DISTINCT xmin::text) FROM firmware_events WHERE device_id = @device", new { device }))
            .Should().Be(8, "one device's reports are recorded one transaction at a time");
        (await check.ExecuteScalarAsync<int>("SELECT count(*) FROM firmware_events WHERE device_id = @device AND firmware = '5.1.0'", new { device }))
            .Should().Be(2);
        (await check.ExecuteScalarAsync<string>("SELECT current_firmware FROM devices WHERE id = @device", new { device })).Should().Be("5.0.6");
        await VersionCountsShouldMatchTheDevicesAsync(check);
    }

    [Fact]
    public async Task A_report_the_database_refuses_fails_alone_and_the_rest_of_its_group_is_stored()
    {
        var devices = await AddDevicesAsync(12);
        await using (var owner = new NpgsqlConnection(_connectionString))
        {
            // A refusal the validation cannot see: what a constraint added by a later migration might do. (Citus takes
            // a trigger on a distributed table only when told it is safe; plain PostgreSQL keeps the setting unread.)
            await owner.ExecuteAsync("""
                SET citus.enable_unsafe_triggers = on;
                CREATE FUNCTION refuse_666() RETURNS trigger LANGUAGE plpgsql AS
                $$ BEGIN IF NEW.firmware = '6.6.6' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$;
                CREATE TRIGGER refuse_666 BEFORE INSERT ON firmware_events FOR EACH ROW EXECUTE FUNCTION refuse_666();
                """);
        }

        var responses = await QueuedBehindALockAsync(devices.Select((d, i) =>
            (d, (object)new { firmware = i == 7 ? "6.6.6" : "6.0.0", status = "installed", timestamp = "2025-04-01T00:00:00Z" })).ToList());

        await responses[7].ShouldBeProblemAsync(HttpStatusCode.InternalServerError);
        responses.Where((_, i) => i != 7).Select(r => r.StatusCode).Should().AllBeEquivalentTo(HttpStatusCode.Created);
        await using var check = new NpgsqlConnection(_connectionString);
        var ids = devices.Select(d => d.DeviceId).ToArray();
        (await check.ExecuteScalarAsync<int>("SELECT count(*) FROM firmware_events WHERE device_id = ANY(@ids)", new { ids })).Should().Be(11);
        (await check.ExecuteScalarAsync<int>("SELECT count(*) FROM devices WHERE id = ANY(@ids) AND current_firmware IS NOT NULL", new { ids }))
            .Should().Be(11, "nothing of the refused report is half-written");
        _logs.Rendered().Should().Contain(line => line.Contains("recording them one by one"));
        await VersionCountsShouldMatchTheDevicesAsync(check);
    }

    [Fact]
    public async Task A_group_that_reaches_the_time_limit_is_rolled_back_and_every_report_of_it_answered_503()
    {
        var devices = await AddDevicesAsync(3);
        await using var service = _service.WithWebHostBuilder(b => b.UseSetting("FirmwareManager:Limits:RequestTimeoutSeconds", "1"));
        var groupCommit = service.Services.GetRequiredService<ReportGroupCommit>();
        await using var blocker = new NpgsqlConnection(_connectionString);
        await blocker.OpenAsync();
        await using var transaction = await blocker.BeginTransactionAsync();
        // Every device of the group is held: the group's transaction waits until the first request's time limit.
        await blocker.ExecuteAsync("SELECT id FROM devices WHERE project_id = 1 AND id = ANY(@ids) FOR UPDATE",
            new { ids = devices.Select(d => d.DeviceId).ToArray() }, transaction);

        var responses = await Task.WhenAll(devices.Select(async d =>
        {
            using var client = service.CreateClient();
            client.DefaultRequestHeaders.Add("api_key", d.Key);
            return await client.PostEventAsync(d.DeviceId, new { firmware = "7.0.0", status = "installed" });
        }));
        await transaction.RollbackAsync();

        foreach (var response in responses)
        {
            await response.ShouldBeProblemAsync(HttpStatusCode.ServiceUnavailable);
        }
        await using var check = new NpgsqlConnection(_connectionString);
        (await check.ExecuteScalarAsync<int>("SELECT count(*) FROM firmware_events WHERE firmware = '7.0.0'")).Should().Be(0);
        groupCommit.Waiting.Should().Be(0);
    }

    [Fact]
    public async Task A_report_at_the_edge_of_its_time_limit_fails_no_other_report_of_its_group()
    {
        var devices = await AddDevicesAsync(3);
        var (held, heldKey) = (await AddDevicesAsync(1))[0];
        await using var service = _service.WithWebHostBuilder(b => b.UseSetting("FirmwareManager:Limits:RequestTimeoutSeconds", "4"));
        var groupCommit = service.Services.GetRequiredService<ReportGroupCommit>();
        HttpClient Client(string key)
        {
            var client = service.CreateClient();
            client.DefaultRequestHeaders.Add("api_key", key);
            return client;
        }

        // The writer is held by another device's report; device 0 reports first, devices 1 and 2 2.5 s later.
        // Then the writer is let go: the three form one group, whose transaction waits on device 1's row until
        // well past device 0's time limit (4 s), and well before devices 1 and 2 reach theirs.
        await using var heldBlocker = new NpgsqlConnection(_connectionString);
        await heldBlocker.OpenAsync();
        await using var heldTransaction = await heldBlocker.BeginTransactionAsync();
        await heldBlocker.ExecuteAsync("SELECT id FROM devices WHERE project_id = 1 AND id = @held FOR UPDATE", new { held }, heldTransaction);
        await using var groupBlocker = new NpgsqlConnection(_connectionString);
        await groupBlocker.OpenAsync();
        await using var groupTransaction = await groupBlocker.BeginTransactionAsync();
        await groupBlocker.ExecuteAsync("SELECT id FROM devices WHERE project_id = 1 AND id = @id FOR UPDATE", new { id = devices[1].DeviceId }, groupTransaction);

        using var heldClient = Client(heldKey);
        var heldReport = heldClient.PostEventAsync(held, new { firmware = "1.0.0", status = "installed" });
        await WriterWaitsForALockAsync();
        var clients = devices.Select(d => Client(d.Key)).ToList();
        var first = clients[0].PostEventAsync(devices[0].DeviceId, new { firmware = "8.0.0", status = "installed" });
        await EventuallyAsync(() => Task.FromResult(groupCommit.Waiting == 1), "the first report waits");
        await Task.Delay(2500);
        var later = devices.Skip(1).Select((d, i) => clients[i + 1].PostEventAsync(d.DeviceId, new { firmware = "8.0.0", status = "installed" })).ToList();
        await EventuallyAsync(() => Task.FromResult(groupCommit.Waiting == 3), "three reports wait");
        await heldTransaction.CommitAsync();
        (await heldReport).StatusCode.Should().Be(HttpStatusCode.Created);
        await Task.Delay(2000);
        await groupTransaction.CommitAsync();

        var answers = await Task.WhenAll([first, .. later]);
        clients.ForEach(c => c.Dispose());

        answers[1].StatusCode.Should().Be(HttpStatusCode.Created, "device 0's time limit is not device 1's");
        answers[2].StatusCode.Should().Be(HttpStatusCode.Created, "device 0's time limit is not device 2's");
        answers[0].StatusCode.Should().Be(HttpStatusCode.Created, "its report was in the committed transaction: the answer says so, late");
        await using var check = new NpgsqlConnection(_connectionString);
        (await check.ExecuteScalarAsync<int>("SELECT count(*) FROM firmware_events WHERE firmware = '8.0.0'")).Should().Be(3);
    }

    // The reports are sent while the writer is held by a report of another device that a second session has
    // locked; once all of them wait in the queue, the lock is released and they form the next group.
    private async Task<HttpResponseMessage[]> QueuedBehindALockAsync(IReadOnlyList<((long DeviceId, string Key) Device, object Body)> reports)
    {
        var groupCommit = _service.Services.GetRequiredService<ReportGroupCommit>();
        var (held, heldKey) = (await AddDevicesAsync(1))[0];
        await using var blocker = new NpgsqlConnection(_connectionString);
        await blocker.OpenAsync();
        await using var transaction = await blocker.BeginTransactionAsync();
        await blocker.ExecuteAsync("SELECT id FROM devices WHERE project_id = 1 AND id = @held FOR UPDATE", new { held }, transaction);

        using var heldClient = Client(heldKey);
        var heldReport = heldClient.PostEventAsync(held, new { firmware = "1.0.0", status = "installed" });
        await WriterWaitsForALockAsync();

        var clients = reports.Select(r => Client(r.Device.Key)).ToList();
        // An array is a batch.
        var sent = reports.Select((r, i) => r.Body is Array
            ? clients[i].PostAsJsonAsync($"/firmware/{r.Device.DeviceId}/batch", r.Body)
            : clients[i].PostEventAsync(r.Device.DeviceId, r.Body)).ToList();
        await EventuallyAsync(() => Task.FromResult(groupCommit.Waiting == reports.Count), $"{reports.Count} reports wait in the queue");

        await transaction.CommitAsync();
        (await heldReport).StatusCode.Should().Be(HttpStatusCode.Created);
        var responses = await Task.WhenAll(sent);
        clients.ForEach(c => c.Dispose());
        return responses;
    }

    // This test's own database: tests of other classes run at the same time, on databases of their own.
    private async Task WriterWaitsForALockAsync() =>
        await (await PostgresServer.SharedAsync()).WaitUntilASessionWaitsForALockAsync(_connectionString);

    private HttpClient Client(string key) => Client(_service, key);

    private static HttpClient Client(WebApplicationFactory<Program> service, string key)
    {
        var client = service.CreateClient();
        client.DefaultRequestHeaders.Add("api_key", key);
        return client;
    }

    private async Task<List<(long DeviceId, string Key)>> AddDevicesAsync(int count, long projectId = 1)
    {
        await using var connection = new NpgsqlConnection(_connectionString);
        var ids = (await connection.QueryAsync<long>(
            "INSERT INTO devices (project_id, name) SELECT @projectId, 'group ' || g FROM generate_series(1, @count) AS g RETURNING id",
            new { count, projectId })).Order().ToList();
        var devices = ids.Select(id => (DeviceId: id, Key: $"group_test_key_{id}_{Guid.NewGuid():N}")).ToList();
        await connection.ExecuteAsync(
            """
            WITH k AS (
                INSERT INTO device_api_keys (project_id, device_id, key_prefix, key_hash) VALUES (@ProjectId, @DeviceId, 'test', @KeyHash)
                RETURNING key_hash
            )
            INSERT INTO api_key_digests (key_hash, project_id) SELECT key_hash, @ProjectId FROM k
            """,
            devices.Select(d => new { ProjectId = projectId, d.DeviceId, KeyHash = ApiKeyHasher.Hash(d.Key) }));
        return devices;
    }

    // The per-version counts kept by the recording statement agree with a recount over the devices.
    private static async Task VersionCountsShouldMatchTheDevicesAsync(NpgsqlConnection check)
    {
        var kept = await check.QueryAsync<(string, long)>("""
            SELECT firmware, sum(devices)::bigint FROM firmware_version_counts
            WHERE project_id = 1 GROUP BY firmware HAVING sum(devices) <> 0 ORDER BY firmware
            """);
        var recount = await check.QueryAsync<(string, long)>("""
            SELECT current_firmware, count(*) FROM devices
            WHERE project_id = 1 AND current_firmware IS NOT NULL GROUP BY current_firmware ORDER BY current_firmware
            """);
        kept.Should().Equal(recount);
    }

    private static async Task EventuallyAsync(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (!await condition())
        {
            DateTime.UtcNow.Should().BeBefore(deadline, $"{what} within 20 s");
            await Task.Delay(20);
        }
    }
}
