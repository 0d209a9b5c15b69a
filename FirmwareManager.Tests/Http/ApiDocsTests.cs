using System.Net;
using FirmwareManager.Tests.Infrastructure;

namespace FirmwareManager.Tests.Http;

public sealed class ApiDocsTests(FirmwareManagerApp app) : ApiTest(app)
{
    [Fact]
    public async Task The_OpenAPI_document_describes_every_endpoint_its_errors_and_the_key_schemes()
    {
        using var client = App.ClientWithKey(null);

        var response = await client.GetAsync("/openapi/v1.json");

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        var document = await response.JsonAsync();
        var paths = document.GetProperty("paths");
        paths.EnumerateObject().Select(p => p.Name).Should().BeEquivalentTo(
            "/health", "/firmware/{device_id}", "/firmware/{device_id}/batch", "/firmware/{device_id}/events/{event_id}",
            "/events", "/devices", "/devices/{device_id}", "/firmware-versions",
            "/devices/bulk", "/devices/{device_id}/keys", "/devices/{device_id}/keys/{key_id}",
            "/members", "/members/{member_id}", "/members/{member_id}/keys", "/members/{member_id}/keys/{key_id}",
            "/me", "/me/keys", "/me/keys/{key_id}", "/audit", "/project/retention",
            "/firmware-transitions", "/project/fleet-health", "/webhooks", "/webhooks/{webhook_id}",
            "/webhooks/{webhook_id}/deliveries", "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
            "/rollouts", "/rollouts/{rollout_id}", "/rollouts/{rollout_id}/end");
        var schemes = document.GetProperty("components").GetProperty("securitySchemes");
        schemes.GetProperty("api_key").GetProperty("in").GetString().Should().Be("header");
        schemes.GetProperty("api_key").GetProperty("name").GetString().Should().Be("api_key");
        schemes.GetProperty("bearer").GetProperty("scheme").GetString().Should().Be("bearer");

        var report = paths.GetProperty("/firmware/{device_id}").GetProperty("post");
        report.GetProperty("responses").EnumerateObject().Select(r => r.Name).Should().Contain(["200", "201", "400", "401", "403", "404", "413", "415", "503"]);
        report.GetProperty("responses").GetProperty("401").GetProperty("content").TryGetProperty("application/problem+json", out _).Should().BeTrue();
        report.GetProperty("requestBody").GetProperty("content").TryGetProperty("application/json", out _).Should().BeTrue();
        report.GetProperty("security").GetArrayLength().Should().Be(2);
        paths.GetProperty("/health").GetProperty("get").TryGetProperty("security", out _).Should().BeFalse();
        paths.GetProperty("/firmware/{device_id}").GetProperty("get").GetProperty("parameters").EnumerateArray()
            .Select(p => p.GetProperty("name").GetString()).Should().Contain(["limit", "cursor", "since", "until", "status", "firmware"]);

        // Reads of projected state: min_position and the position the answer includes; history is the record itself.
        foreach (var path in new[] { "/devices", "/devices/{device_id}", "/firmware-versions", "/firmware-transitions", "/rollouts", "/rollouts/{rollout_id}" })
        {
            var read = paths.GetProperty(path).GetProperty("get");
            read.GetProperty("parameters").EnumerateArray().Select(p => p.GetProperty("name").GetString()).Should().Contain("min_position", path);
            read.GetProperty("responses").GetProperty("200").GetProperty("headers").TryGetProperty("X-Projected-Position", out _).Should().BeTrue(path);
            read.GetProperty("responses").TryGetProperty("503", out _).Should().BeTrue(path);
        }

        paths.GetProperty("/firmware/{device_id}").GetProperty("get").GetProperty("parameters").EnumerateArray()
            .Select(p => p.GetProperty("name").GetString()).Should().NotContain("min_position");

        // Exports: the lists answer CSV and NDJSON beside their JSON page, and 429 when too many run.
        foreach (var path in new[] { "/devices", "/events", "/firmware/{device_id}", "/audit" })
        {
            var list = paths.GetProperty(path).GetProperty("get");
            list.GetProperty("responses").GetProperty("200").GetProperty("content").EnumerateObject().Select(c => c.Name)
                .Should().Contain(["application/json", "text/csv", "application/x-ndjson"], path);
            list.GetProperty("responses").TryGetProperty("429", out _).Should().BeTrue(path);
        }
    }

    [Theory]
    [InlineData("/firmware/{device_id}", "FirmwareEventBody", new[] { "firmware", "status", "timestamp", "from_firmware", "error_code", "detail" }, new[] { "firmware", "status" })]
    [InlineData("/devices", "CreateDeviceBody", new[] { "name", "serial", "hardware", "tags" }, new string[0])]
    [InlineData("/devices/bulk", "EnrollDevicesBody", new[] { "count", "serials", "hardware", "tags" }, new string[0])]
    [InlineData("/members", "InviteMemberBody", new[] { "email", "role" }, new[] { "email", "role" })]
    [InlineData("/rollouts", "CreateRolloutBody", new[] { "firmware", "hardware", "tags", "from_firmware", "max_failure_rate", "min_devices" }, new[] { "firmware", "max_failure_rate", "min_devices" })]
    [InlineData("/webhooks", "CreateWebhookBody", new[] { "url", "events", "filters" }, new[] { "url", "events" })]
    public async Task Each_request_body_is_described_by_the_record_the_endpoint_reads(
        string path, string schema, string[] properties, string[] required)
    {
        using var client = App.ClientWithKey(null);
        var document = await (await client.GetAsync("/openapi/v1.json")).JsonAsync();

        var reference = document.GetProperty("paths").GetProperty(path).GetProperty("post").GetProperty("requestBody")
            .GetProperty("content").GetProperty("application/json").GetProperty("schema").GetProperty("$ref").GetString();
        reference.Should().Be($"#/components/schemas/{schema}");
        var described = document.GetProperty("components").GetProperty("schemas").GetProperty(schema);
        described.GetProperty("properties").EnumerateObject().Select(p => p.Name).Should().BeEquivalentTo(properties);
        (described.TryGetProperty("required", out var names) ? names.EnumerateArray().Select(n => n.GetString()) : [])
            .Should().BeEquivalentTo(required);
    }

    [Fact]
    public async Task Interactive_docs_are_served_at_docs()
    {
        using var client = App.CreateClient(new Microsoft.AspNetCore.Mvc.Testing.WebApplicationFactoryClientOptions { AllowAutoRedirect = true });

        var response = await client.GetAsync("/docs");

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        response.Content.Headers.ContentType!.MediaType.Should().Be("text/html");
        // Scalar resolves the document's address against the site's base path: /openapi/v1.json.
        (await response.Content.ReadAsStringAsync()).Should().Contain("\"url\":\"openapi/v1.json\"");
        (await client.GetAsync("/docs/scalar.js")).StatusCode.Should().Be(HttpStatusCode.OK, "the docs page ships its script itself");
    }
}
