using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Dapper;
using FirmwareManager.Api.Webhooks;
using FirmwareManager.Tests.Infrastructure;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Mvc.Testing;
using StandardWebhooks;
using StandardWebhooks.Diagnostics;

namespace FirmwareManager.Tests.Webhooks;

/// <summary>
/// Webhooks end to end: reports through the API, deliveries recorded in the ingest transaction, sent by the
/// service's sender (started here as instances of their own on the test database) to a real HTTP receiver.
/// </summary>
public sealed class WebhookDeliveryTests(FirmwareManagerApp app) : ApiTest(app), IAsyncLifetime
{
    private static readonly DateTime Start = new(2024, 6, 1, 0, 0, 0, DateTimeKind.Utc);
    private WebhookReceiver _receiver = null!;

    async Task IAsyncLifetime.InitializeAsync()
    {
        await App.ResetAsync();
        _receiver = await WebhookReceiver.StartAsync();
    }

    async Task IAsyncLifetime.DisposeAsync() => await _receiver.DisposeAsync();

    [Fact]
    public async Task Every_acknowledged_event_a_webhook_subscribes_to_is_recorded_as_a_delivery_in_its_transaction()
    {
        var (webhookId, _) = await SubscribeAsync(["event.failed", "event.updated"]);
        var (filteredId, _) = await SubscribeAsync(["event.failed"], firmware: "2.0.0");
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);

        var acknowledged = new List<(long Id, string Status, string Firmware)>();
        foreach (var (firmware, status, hour) in new[] { ("2.0.0", "failed", 1), ("2.0.0", "downloading", 2), ("2.1.0", "failed", 3), ("2.1.0", "updated", 4) })
        {
            var e = await (await device.PostEventAsync(1, Report(firmware, status, Start.AddHours(hour)))).JsonAsync();
            acknowledged.Add((e.GetProperty("id").GetInt64(), status, firmware));
        }

        await using var connection = App.OpenConnection();
        var recorded = (await connection.QueryAsync<(long, long, string)>(
            "SELECT webhook_id, event_id, event_type FROM webhook_deliveries ORDER BY webhook_id, event_id")).ToList();
        recorded.Should().Equal(
            acknowledged.Where(e => e.Status != "downloading").Select(e => (webhookId, e.Id, "event." + e.Status))
                .Concat(acknowledged.Where(e => e.Status == "failed" && e.Firmware == "2.0.0").Select(e => (filteredId, e.Id, "event.failed"))));
    }

    [Fact]
    public async Task Deliveries_are_signed_and_arrive_in_order_per_device()
    {
        var (webhookId, secret) = await SubscribeAsync(["event.failed", "event.updated"]);
        await using var sender = StartSender();
        using var device1 = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        using var device2 = App.ClientWithKey(FirmwareManagerApp.DeviceKey2);
        (await device1.PostAsJsonAsync("/firmware/1/batch", Enumerable.Range(0, 6).Select(i => Report("2.0.0", "failed", Start.AddMinutes(i))))).EnsureSuccessStatusCode();
        (await device2.PostEventAsync(2, Report("2.0.0", "updated", Start))).EnsureSuccessStatusCode();
        (await device1.PostEventAsync(1, Report("2.0.0", "updated", Start.AddHours(1)))).EnsureSuccessStatusCode();
        (await device1.PostEventAsync(1, Report("2.0.1", "downloading", Start.AddHours(2)))).EnsureSuccessStatusCode();

        await EventuallyAsync(() => _receiver.Accepted.Count >= 8, "8 deliveries");

        var received = _receiver.Accepted.Select(Parse).ToList();
        received.Select(r => r.Id).Should().OnlyHaveUniqueItems().And.HaveCount(8);
        foreach (var r in _receiver.Accepted)
        {
            VerifySignature(secret, r).Should().BeTrue("the signature covers the id, the timestamp and the body");
            long.Parse(r.Timestamp, System.Globalization.CultureInfo.InvariantCulture).Should().BeCloseTo(DateTimeOffset.UtcNow.ToUnixTimeSeconds(), 60);
        }

        received.Should().OnlyContain(r => r.Id == $"{webhookId}-{r.EventId}" && r.DeliveryId == r.Id);
        received.Where(r => r.DeviceId == 1).Select(r => r.EventId).Should().BeInAscendingOrder();
        received.Where(r => r.DeviceId == 1).Select(r => r.Type).Should().Equal(Enumerable.Repeat("event.failed", 6).Append("event.updated"));
        // The receiver has the request before the sender records its answer: the list says delivered once it has.
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        await EventuallyAsync(async () => (await (await admin.GetAsync($"/webhooks/{webhookId}/deliveries")).JsonAsync())
            .EnumerateArray().Count(d => d.GetProperty("state").GetString() == "delivered") == 8, "8 recorded as delivered");
        var deliveries = await (await admin.GetAsync($"/webhooks/{webhookId}/deliveries")).JsonAsync();
        deliveries.EnumerateArray().Select(d => d.GetProperty("state").GetString()).Should().AllBe("delivered").And.HaveCount(8);
        _receiver.Accepted.Should().HaveCount(8, "no delivery is sent twice");
    }

    [Fact]
    public async Task A_receiver_that_never_answers_delays_only_its_own_webhook()
    {
        await using var hanging = await WebhookReceiver.StartAsync();
        hanging.Answer = _ => (200, TimeSpan.FromMinutes(5));
        var (stuckId, _) = await SubscribeAsync(["event.failed"], url: hanging.Url);
        var (healthyId, _) = await SubscribeAsync(["event.failed"]);
        // An attempt may take a minute: longer than this test waits for anything.
        await using var sender = StartSender(timeoutSeconds: 60);
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        for (var i = 0; i < 5; i++)
        {
            (await device.PostEventAsync(1, Report("2.0.0", "failed", Start.AddMinutes(i)))).EnsureSuccessStatusCode();
        }

        // One device's five deliveries go one after another (in order), each after the one before was recorded: the
        // healthy webhook's all arrive while the other webhook's first attempt still hangs.
        await using var connection = App.OpenConnection();
        await EventuallyAsync(async () => await connection.ExecuteScalarAsync<long>(
            "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = @Id AND delivered_at IS NOT NULL", new { Id = healthyId }) == 5,
            "the healthy webhook's 5 deliveries, one after another");
        _receiver.Accepted.Select(Parse).Select(r => r.EventId).Should().BeInAscendingOrder().And.HaveCount(5);
        (await connection.QueryAsync<(long Attempts, bool Delivered)>(
                "SELECT attempts, delivered_at IS NOT NULL FROM webhook_deliveries WHERE webhook_id = @Id ORDER BY event_id", new { Id = stuckId }))
            .Should().Equal([(1L, false), (0L, false), (0L, false), (0L, false), (0L, false)],
                "the hanging receiver holds its own webhook's first attempt, and its device's later deliveries wait behind it");
    }

    [Fact]
    public async Task Failed_and_timed_out_attempts_are_retried_until_every_delivery_arrives_in_order()
    {
        // Three 500s, then an answer slower than the attempt timeout (1 s), then success.
        _receiver.Answer = n => n <= 3 ? (500, TimeSpan.Zero) : n == 4 ? (200, TimeSpan.FromSeconds(2.5)) : (200, TimeSpan.Zero);
        var (webhookId, _) = await SubscribeAsync(["event.failed"]);
        await using var sender = StartSender();
        using var device1 = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        using var device2 = App.ClientWithKey(FirmwareManagerApp.DeviceKey2);
        for (var i = 0; i < 4; i++)
        {
            (await device1.PostEventAsync(1, Report("2.0.0", "failed", Start.AddMinutes(i)))).EnsureSuccessStatusCode();
            (await device2.PostEventAsync(2, Report("2.0.0", "failed", Start.AddMinutes(i)))).EnsureSuccessStatusCode();
        }

        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        await EventuallyAsync(async () => (await (await admin.GetAsync($"/webhooks/{webhookId}/deliveries")).JsonAsync())
            .EnumerateArray().Count(d => d.GetProperty("state").GetString() == "delivered") == 8, "8 delivered");

        var firstArrivals = _receiver.Accepted.Select(Parse).GroupBy(r => r.Id).Select(g => g.First()).ToList();
        firstArrivals.Should().HaveCount(8);
        foreach (var deviceId in new long[] { 1, 2 })
        {
            firstArrivals.Where(r => r.DeviceId == deviceId).Select(r => r.EventId).Should().BeInAscendingOrder();
        }

        var deliveries = (await (await admin.GetAsync($"/webhooks/{webhookId}/deliveries")).JsonAsync()).EnumerateArray().ToList();
        deliveries.Sum(d => d.GetProperty("attempts").GetInt64()).Should().BeGreaterThanOrEqualTo(12, "three 500s and a timeout cost at least four more attempts");
    }

    [Fact]
    public async Task A_sender_stopped_mid_retry_loses_nothing_and_the_next_one_delivers_everything()
    {
        _receiver.Answer = _ => (500, TimeSpan.Zero);
        var (webhookId, _) = await SubscribeAsync(["event.failed"]);
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        for (var i = 0; i < 5; i++)
        {
            (await device.PostEventAsync(1, Report("2.0.0", "failed", Start.AddMinutes(i)))).EnsureSuccessStatusCode();
        }

        await using (var first = StartSender())
        {
            await EventuallyAsync(() => _receiver.Requests.Count >= 3, "three failed attempts");
        }

        _receiver.Answer = _ => (200, TimeSpan.Zero);
        await using var second = StartSender();
        await EventuallyAsync(() => _receiver.Accepted.Select(r => r.Id).Distinct().Count() == 5, "5 delivered");

        _receiver.Accepted.Select(Parse).GroupBy(r => r.Id).Select(g => g.First().EventId).Should().BeInAscendingOrder();
        await using var connection = App.OpenConnection();
        (await connection.ExecuteScalarAsync<long>("SELECT count(*) FROM webhook_deliveries WHERE delivered_at IS NOT NULL AND webhook_id = @webhookId", new { webhookId }))
            .Should().Be(5);
    }

    [Fact]
    public async Task Two_senders_share_the_work_and_each_devices_deliveries_stay_in_order()
    {
        var (_, _) = await SubscribeAsync(["event.failed", "event.updated", "event.installed"]);
        var devices = new List<(long Id, HttpClient Client)>();
        for (var i = 0; i < 6; i++)
        {
            var (id, key) = await App.AddDeviceAsync(projectId: 1);
            devices.Add((id, App.ClientWithKey(key)));
        }

        // Claims last twice the attempt timeout: 10 s here, longer than a wave takes on a loaded Citus test cluster (with
        // 1 s, a claim lapsed now and then while its wave was still recording, and the delivery was rightly sent again).
        await using var first = StartSender(timeoutSeconds: 5);
        await using var second = StartSender(timeoutSeconds: 5);
        await Task.WhenAll(devices.Select(async d =>
        {
            for (var i = 0; i < 10; i++)
            {
                (await d.Client.PostEventAsync(d.Id, Report("2.0.0", i % 2 == 0 ? "failed" : "updated", Start.AddMinutes(i)))).EnsureSuccessStatusCode();
            }
        }));

        await EventuallyAsync(() => _receiver.Accepted.Select(r => r.Id).Distinct().Count() == 60, "60 delivered");
        var received = _receiver.Accepted.Select(Parse).ToList();
        received.Select(r => r.Id).Should().OnlyHaveUniqueItems("a delivery is claimed by one sender at a time");
        foreach (var (id, client) in devices)
        {
            received.Where(r => r.DeviceId == id).Select(r => r.EventId).Should().BeInAscendingOrder();
            client.Dispose();
        }
    }

    [Fact]
    public async Task A_delivery_retried_past_its_time_is_given_up_and_an_admin_can_send_it_again()
    {
        _receiver.Answer = _ => (503, TimeSpan.Zero);
        var (webhookId, _) = await SubscribeAsync(["event.failed"]);
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        var eventId = (await (await device.PostEventAsync(1, Report("2.0.0", "failed", Start))).JsonAsync()).GetProperty("id").GetInt64();
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        await using (var sender = StartSender(giveUpAfterHours: 0.001))
        {
            await EventuallyAsync(async () => (await (await admin.GetAsync($"/webhooks/{webhookId}/deliveries")).JsonAsync())[0]
                .GetProperty("state").GetString() == "given_up", "given up");
        }

        var givenUp = (await (await admin.GetAsync($"/webhooks/{webhookId}/deliveries")).JsonAsync())[0];
        givenUp.GetProperty("last_status").GetInt64().Should().Be(503);
        givenUp.GetProperty("last_error").GetString().Should().Contain("503");
        _receiver.Answer = _ => (204, TimeSpan.Zero);

        var redelivered = await admin.PostAsync($"/webhooks/{webhookId}/deliveries/{webhookId}-{eventId}/redeliver", null);

        redelivered.StatusCode.Should().Be(HttpStatusCode.Accepted);
        (await redelivered.JsonAsync()).GetProperty("state").GetString().Should().Be("pending");
        await using var again = StartSender();
        await EventuallyAsync(() => _receiver.Accepted.Count == 1, "delivered again");
        (await (await admin.PostAsync($"/webhooks/{webhookId}/deliveries/{webhookId}-999999/redeliver", null)).ShouldBeProblemAsync(HttpStatusCode.NotFound))
            .GetProperty("status").GetInt32().Should().Be(404);
        (await (await admin.PostAsync($"/webhooks/{webhookId}/deliveries/7-{eventId}/redeliver", null)).ShouldBeValidationProblemAsync()).Should().ContainKey("delivery_id");
    }

    [Fact]
    public async Task A_redelivery_asked_for_during_an_attempt_follows_it_as_a_new_message()
    {
        // The first attempt is held 1.5 s, then accepted; the next is accepted at once.
        _receiver.Answer = n => (204, n == 1 ? TimeSpan.FromMilliseconds(1500) : TimeSpan.Zero);
        var (webhookId, secret) = await SubscribeAsync(["event.failed"]);
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        var eventId = (await (await device.PostEventAsync(1, Report("2.0.0", "failed", Start))).JsonAsync()).GetProperty("id").GetInt64();
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        await using var sender = StartSender(timeoutSeconds: 5);
        await EventuallyAsync(() => _receiver.Arrivals == 1, "the first attempt in flight");
        // A second instance's sender, whose lane for the webhook is free: only the claim keeps it from the delivery.
        await using var other = StartSender(timeoutSeconds: 5);

        var redelivered = await admin.PostAsync($"/webhooks/{webhookId}/deliveries/{webhookId}-{eventId}/redeliver", null);

        redelivered.StatusCode.Should().Be(HttpStatusCode.Accepted);
        (await redelivered.JsonAsync()).GetProperty("redeliveries").GetInt64().Should().Be(1);
        await EventuallyAsync(async () => (await (await admin.GetAsync($"/webhooks/{webhookId}/deliveries")).JsonAsync())[0]
            .GetProperty("state").GetString() == "delivered" && _receiver.Accepted.Count == 2, "the attempt, then the redelivery");
        var (first, second) = (_receiver.Accepted.Single(r => r.Number == 1), _receiver.Accepted.Single(r => r.Number == 2));
        first.Id.Should().Be($"{webhookId}-{eventId}");
        second.Id.Should().Be($"{webhookId}-{eventId}.1", "a redelivery is a new message, which a receiver de-duplicating by webhook-id still processes");
        second.ArrivedAt.Should().BeOnOrAfter(first.AnsweredAt, "the redelivery waits for the attempt in flight");
        Parse(second).DeliveryId.Should().Be($"{webhookId}-{eventId}", "the body names the delivery, as the deliveries list does");
        VerifySignature(secret, second).Should().BeTrue("the signature covers the redelivery's own id");
        var delivery = (await (await admin.GetAsync($"/webhooks/{webhookId}/deliveries")).JsonAsync())[0];
        delivery.GetProperty("attempts").GetInt64().Should().Be(2);
        _receiver.Arrivals.Should().Be(2, "the first attempt's success did not end the redelivery, nor did it start twice");
    }

    [Fact]
    public async Task A_deleted_webhook_gets_nothing_more()
    {
        var (webhookId, _) = await SubscribeAsync(["event.failed"]);
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        (await device.PostEventAsync(1, Report("2.0.0", "failed", Start))).EnsureSuccessStatusCode();

        (await admin.DeleteAsync($"/webhooks/{webhookId}")).StatusCode.Should().Be(HttpStatusCode.NoContent);
        (await device.PostEventAsync(1, Report("2.0.0", "failed", Start.AddHours(1)))).EnsureSuccessStatusCode();
        await using (var sender = StartSender())
        {
            await EventuallyAsync(async () => (await (await admin.GetAsync($"/webhooks/{webhookId}/deliveries")).ShouldBeProblemAsync(HttpStatusCode.NotFound)).ValueKind == JsonValueKind.Object, "404");
            await using var connection = App.OpenConnection();
            await EventuallyAsync(async () => await connection.ExecuteScalarAsync<bool>("SELECT given_up_at IS NOT NULL FROM webhook_deliveries"), "the pending delivery given up");
        }

        _receiver.Requests.Should().BeEmpty();
        (await admin.DeleteAsync($"/webhooks/{webhookId}")).StatusCode.Should().Be(HttpStatusCode.NotFound);
        (await (await admin.GetAsync("/webhooks")).JsonAsync()).GetArrayLength().Should().Be(0);
    }

    private async Task<(long Id, string Secret)> SubscribeAsync(string[] events, string? firmware = null, string? url = null)
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var response = await admin.PostAsJsonAsync("/webhooks", new { url = url ?? _receiver.Url, events, filters = new { firmware } });
        response.StatusCode.Should().Be(HttpStatusCode.Created, await response.Content.ReadAsStringAsync());
        var body = await response.JsonAsync();
        return (body.GetProperty("webhook").GetProperty("id").GetInt64(), body.GetProperty("secret").GetString()!);
    }

    // A sender of its own on the test database: an instance of the service whose only work here is sending.
    private WebApplicationFactory<Program> StartSender(double giveUpAfterHours = 25, int timeoutSeconds = 1)
    {
        var sender = new ServiceOnDatabase(App.ConnectionString).WithWebHostBuilder(b => b
            .UseSetting("FirmwareManager:Webhooks:SendDeliveries", "true")
            .UseSetting("FirmwareManager:Webhooks:AllowPrivateTargets", "true")
            .UseSetting("FirmwareManager:Webhooks:PollMilliseconds", "50")
            .UseSetting("FirmwareManager:Webhooks:TimeoutSeconds", timeoutSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture))
            .UseSetting("FirmwareManager:Webhooks:FirstRetryDelaySeconds", "0.1")
            .UseSetting("FirmwareManager:Webhooks:MaxRetryDelaySeconds", "0.3")
            .UseSetting("FirmwareManager:Webhooks:GiveUpAfterHours", giveUpAfterHours.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        _ = sender.Services;
        return sender;
    }

    private static object Report(string firmware, string status, DateTime at) =>
        new { firmware, status, timestamp = at.ToString("yyyy-MM-dd'T'HH:mm:ss.ffffff'Z'", System.Globalization.CultureInfo.InvariantCulture) };

    private sealed record Received(string Id, string DeliveryId, string Type, long EventId, long DeviceId);

    private static Received Parse(WebhookReceiver.Request request)
    {
        var body = JsonDocument.Parse(request.Body).RootElement;
        return new Received(request.Id, body.GetProperty("delivery_id").GetString()!, body.GetProperty("type").GetString()!,
            body.GetProperty("data").GetProperty("id").GetInt64(), body.GetProperty("data").GetProperty("device_id").GetInt64());
    }

    // As a receiver would check it: with the Standard Webhooks package's verifier (which also wants the timestamp
    // within 5 minutes of now), from the secret the API showed once.
    private static bool VerifySignature(string secret, WebhookReceiver.Request request)
    {
        secret.Should().StartWith("whsec_");
        var headers = new HeaderDictionary
        {
            ["webhook-id"] = request.Id,
            ["webhook-timestamp"] = request.Timestamp,
            ["webhook-signature"] = request.Signature,
        };
        try
        {
            new StandardWebhook(secret).Verify(Encoding.UTF8.GetString(request.Body), headers);
            return true;
        }
        catch (WebhookVerificationException)
        {
            return false;
        }
    }

    [Fact]
    public void Deliveries_are_signed_as_the_Standard_Webhooks_test_vector_says()
    {
        // The specification's vector (standard-webhooks, and the StandardWebhooks package's own test).
        var signature = WebhookSecrets.Sign(
            Convert.FromBase64String("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "msg_p5jXN8AQM9LWM0D4loKWxJek",
            DateTimeOffset.FromUnixTimeSeconds(1614265330), Encoding.UTF8.GetBytes("{\"test\": 2432232314}"));

        signature.Should().Be("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    private static Task EventuallyAsync(Func<bool> condition, string what) => EventuallyAsync(() => Task.FromResult(condition()), what);

    private static async Task EventuallyAsync(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"Waited 30 s for: {what}.");
            }

            await Task.Delay(50);
        }
    }
}
