using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;
using FirmwareManager.Tests.Infrastructure;
using Json.Schema;

namespace FirmwareManager.Tests.Http;

/// <summary>
/// Real answers of every endpoint, validated against the schemas the OpenAPI document gives for their status and
/// media type (a JSON Schema validator, JsonSchema.Net), so that a client generated from the document accepts what
/// the service answers: answers without the optional fields included, and each status answered is one the
/// document lists.
/// </summary>
public sealed class OpenApiConformanceTests(FirmwareManagerApp app) : ApiTest(app)
{
    private JsonElement _document;
    private string _definitions = "";
    private readonly List<string> _checked = [];

    [Fact]
    public async Task Every_endpoint_answers_as_its_document_says()
    {
        using var anonymous = App.ClientWithKey(null);
        _document = (await (await anonymous.GetAsync("/openapi/v1.json")).JsonAsync()).Clone();
        _definitions = _document.GetProperty("components").GetProperty("schemas").GetRawText()
            .Replace("#/components/schemas/", "#/$defs/", StringComparison.Ordinal);
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        using var viewer = App.ClientWithKey(FirmwareManagerApp.MemberKey2);

        // Events with and without the optional fields; a downgrade without rolled_back, so a device carries
        // unexplained_downgrade_from, and another device does not.
        await CheckAsync(admin, "POST", "/webhooks", "/webhooks", new { url = "https://93.184.215.14:8443/hook", events = new[] { "event.updated", "rollout.halted" } });
        var failure = await CheckAsync(device, "POST", "/firmware/{device_id}", "/firmware/1", new
        {
            firmware = "2.0.0",
            status = "failed",
            timestamp = "2024-03-01T10:00:00Z",
            from_firmware = "1.0.0",
            error_code = "E_SIG",
            detail = "slot B",
        });
        await CheckAsync(device, "POST", "/firmware/{device_id}", "/firmware/1", new
        {
            firmware = "2.0.0",
            status = "failed",
            timestamp = "2024-03-01T10:00:00Z",
            from_firmware = "1.0.0",
            error_code = "E_SIG",
            detail = "slot B",
        });
        await CheckAsync(device, "POST", "/firmware/{device_id}/batch", "/firmware/1/batch", new object[]
        {
            new { firmware = "2.0.0", status = "downloading", timestamp = "2024-03-01T10:30:00Z" },
            new { firmware = "2.0.0", status = "updated", timestamp = "2024-03-01T11:00:00Z" },
        });
        await CheckAsync(device, "POST", "/firmware/{device_id}", "/firmware/1", new { firmware = "1.0.0", status = "updated", timestamp = "2024-03-01T12:00:00Z" });
        var plain = await CheckAsync(device, "POST", "/firmware/{device_id}", "/firmware/1", new { firmware = "1.0.0", status = "installed" });
        plain.TryGetProperty("error_code", out _).Should().BeFalse("an answer without the optional fields is part of what is checked");
        await CheckAsync(device, "POST", "/firmware/{device_id}", "/firmware/1", new { firmware = "", status = "installed" });
        await CheckAsync(admin, "GET", "/firmware/{device_id}", "/firmware/1");
        await CheckAsync(admin, "GET", "/firmware/{device_id}", "/firmware/x");
        await CheckAsync(admin, "GET", "/firmware/{device_id}/events/{event_id}", $"/firmware/1/events/{failure.GetProperty("id").GetInt64()}");
        await CheckAsync(admin, "GET", "/firmware/{device_id}/events/{event_id}", "/firmware/1/events/999999");
        await CheckAsync(admin, "GET", "/events", "/events");
        await CheckAsync(anonymous, "GET", "/events", "/events");
        await CheckAsync(device, "GET", "/events", "/events");

        var devices = await CheckAsync(admin, "GET", "/devices", "/devices");
        devices.EnumerateArray().Select(d => d.TryGetProperty("unexplained_downgrade_from", out var from) && from.ValueKind == JsonValueKind.String)
            .Should().Contain(true).And.Contain(false, "answers with and without the optional field are checked");
        await CheckAsync(admin, "GET", "/devices/{device_id}", "/devices/1");
        await CheckAsync(admin, "GET", "/devices/{device_id}", "/devices/999999");
        var created = await CheckAsync(admin, "POST", "/devices", "/devices", new { name = "conformance", serial = "SN-OPENAPI" });
        var newDevice = created.GetProperty("device").GetProperty("id").GetInt64();
        await CheckAsync(admin, "POST", "/devices", "/devices", new { name = "again", serial = "SN-OPENAPI" });
        await CheckAsync(admin, "PATCH", "/devices", "/devices", new { device_ids = new[] { 1, 2 }, hardware = "rev-B", add_tags = new[] { "pilot" } });
        await CheckAsync(admin, "PATCH", "/devices/{device_id}", "/devices/2", new { tags = new[] { "eu" } });
        await CheckAsync(admin, "GET", "/firmware-versions", "/firmware-versions?by=hardware");
        await CheckAsync(admin, "GET", "/firmware-versions", "/firmware-versions?tag=pilot");
        await CheckAsync(admin, "GET", "/firmware-transitions", "/firmware-transitions");
        await CheckAsync(admin, "GET", "/project/fleet-health", "/project/fleet-health");
        await CheckAsync(admin, "PUT", "/project/fleet-health", "/project/fleet-health", new { silent_after_hours = 48 });
        await CheckAsync(admin, "DELETE", "/project/fleet-health", "/project/fleet-health");

        var rollout = await CheckAsync(admin, "POST", "/rollouts", "/rollouts", new { firmware = "3.0.0", max_failure_rate = 0.5, min_devices = 1 });
        var rolloutId = rollout.GetProperty("id").GetInt64();
        using (var second = App.ClientWithKey(FirmwareManagerApp.DeviceKey2))
        {
            await CheckAsync(second, "POST", "/firmware/{device_id}", "/firmware/2", new { firmware = "3.0.0", status = "failed" });
        }

        await CheckAsync(admin, "GET", "/rollouts", "/rollouts");
        await CheckAsync(admin, "GET", "/rollouts/{rollout_id}", $"/rollouts/{rolloutId}");
        await CheckAsync(admin, "POST", "/rollouts/{rollout_id}/end", $"/rollouts/{rolloutId}/end");

        var webhooks = await CheckAsync(admin, "GET", "/webhooks", "/webhooks");
        var webhookId = webhooks[0].GetProperty("id").GetInt64();
        await CheckAsync(admin, "GET", "/webhooks/{webhook_id}", $"/webhooks/{webhookId}");
        var deliveries = await CheckAsync(admin, "GET", "/webhooks/{webhook_id}/deliveries", $"/webhooks/{webhookId}/deliveries");
        deliveries.GetArrayLength().Should().BeGreaterThan(1, "an event's delivery and the rollout's halt");
        foreach (var delivery in deliveries.EnumerateArray())
        {
            await CheckAsync(admin, "POST", "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
                $"/webhooks/{webhookId}/deliveries/{delivery.GetProperty("id").GetString()}/redeliver");
        }

        await CheckAsync(admin, "POST", "/webhooks", "/webhooks", new { url = "http://127.0.0.1/hook", events = new[] { "event.failed" } });
        await CheckAsync(admin, "DELETE", "/webhooks/{webhook_id}", $"/webhooks/{webhookId}");

        var deviceKey = await CheckAsync(admin, "POST", "/devices/{device_id}/keys", $"/devices/{newDevice}/keys");
        await CheckAsync(admin, "GET", "/devices/{device_id}/keys", $"/devices/{newDevice}/keys");
        await CheckAsync(admin, "DELETE", "/devices/{device_id}/keys/{key_id}", $"/devices/{newDevice}/keys/{deviceKey.GetProperty("id").GetInt64()}");
        await CheckAsync(admin, "DELETE", "/devices/{device_id}", $"/devices/{newDevice}");

        var member = await CheckAsync(admin, "POST", "/members", "/members", new { email = "openapi@project-1.example", role = "viewer" });
        var memberId = member.GetProperty("member").GetProperty("id").GetInt64();
        await CheckAsync(admin, "GET", "/members", "/members");
        var memberKey = await CheckAsync(admin, "POST", "/members/{member_id}/keys", $"/members/{memberId}/keys");
        await CheckAsync(admin, "GET", "/members/{member_id}/keys", $"/members/{memberId}/keys");
        await CheckAsync(admin, "DELETE", "/members/{member_id}/keys/{key_id}", $"/members/{memberId}/keys/{memberKey.GetProperty("id").GetInt64()}");
        await CheckAsync(admin, "DELETE", "/members/{member_id}", $"/members/{memberId}");
        await CheckAsync(viewer, "GET", "/me", "/me");
        var mine = await CheckAsync(viewer, "POST", "/me/keys", "/me/keys");
        await CheckAsync(viewer, "GET", "/me/keys", "/me/keys");
        await CheckAsync(viewer, "DELETE", "/me/keys/{key_id}", $"/me/keys/{mine.GetProperty("id").GetInt64()}");
        await CheckAsync(viewer, "POST", "/rollouts", "/rollouts", new { firmware = "3.0.0", max_failure_rate = 0.5, min_devices = 1 });

        await CheckAsync(admin, "GET", "/audit", "/audit");
        await CheckAsync(admin, "GET", "/project/retention", "/project/retention");
        await CheckAsync(admin, "PUT", "/project/retention", "/project/retention", new { max_age_days = 90 });
        await CheckAsync(admin, "DELETE", "/project/retention", "/project/retention");

        _document.GetProperty("components").GetProperty("schemas").GetProperty("CreateWebhookBody").GetProperty("properties")
            .GetProperty("events").GetProperty("description").GetString().Should().Contain("rollout.halted");
        var operations = _document.GetProperty("paths").EnumerateObject()
            .SelectMany(p => p.Value.EnumerateObject().Select(o => $"{o.Name.ToUpperInvariant()} {p.Name}"))
            .Where(o => o is not "GET /health" and not "POST /devices/bulk");
        _checked.Should().Contain(operations, "every JSON endpoint of the document is checked (/health is text, /devices/bulk CSV or NDJSON)");
    }

    // Sends the request; checks that the document lists its status and that the body matches that status' schema.
    private async Task<JsonElement> CheckAsync(HttpClient client, string method, string template, string url, object? body = null)
    {
        using var request = new HttpRequestMessage(new HttpMethod(method), url);
        if (body is not null)
        {
            request.Content = JsonContent.Create(body);
        }

        using var response = await client.SendAsync(request);
        var status = ((int)response.StatusCode).ToString(System.Globalization.CultureInfo.InvariantCulture);
        var text = await response.Content.ReadAsStringAsync();
        var what = $"{method} {url} answered {status}: {text}";
        var operation = _document.GetProperty("paths").GetProperty(template).GetProperty(method.ToLowerInvariant());
        operation.GetProperty("responses").TryGetProperty(status, out var described).Should().BeTrue($"the document lists each status answered ({what})");
        _checked.Add($"{method} {template}");
        if (text.Length == 0)
        {
            described.TryGetProperty("content", out var none).Should().BeFalse($"an empty answer is documented without content ({what})");
            return default;
        }

        var mediaType = response.Content.Headers.ContentType!.MediaType!;
        described.GetProperty("content").TryGetProperty(mediaType, out var content).Should().BeTrue($"the document lists {mediaType} ({what})");
        var schema = JsonNode.Parse(content.GetProperty("schema").GetRawText()
            .Replace("#/components/schemas/", "#/$defs/", StringComparison.Ordinal))!.AsObject();
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema";
        schema["$defs"] = JsonNode.Parse(_definitions);
        var validator = JsonSchema.FromText(schema.ToJsonString(), baseUri: new Uri($"https://firmwaremanager.test/{Guid.NewGuid():N}"));
        var answer = JsonDocument.Parse(text).RootElement.Clone();
        var result = validator.Evaluate(answer, new EvaluationOptions { OutputFormat = OutputFormat.List });
        result.IsValid.Should().BeTrue($"the answer matches the document's schema ({what}): " + string.Join("; ",
            (result.Details ?? []).Where(d => d.Errors is { Count: > 0 }).SelectMany(d => d.Errors!.Select(e => $"{d.InstanceLocation}: {e.Value}"))));
        return answer;
    }
}
