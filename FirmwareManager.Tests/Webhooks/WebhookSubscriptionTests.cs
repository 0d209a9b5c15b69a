using System.Net;
using System.Net.Http.Json;
using FirmwareManager.Api.Webhooks;
using FirmwareManager.Tests.Infrastructure;
using Microsoft.Extensions.Options;

namespace FirmwareManager.Tests.Webhooks;

/// <summary>Making, listing and deleting webhooks; bad input; and the targets a webhook may not reach.</summary>
public sealed class WebhookSubscriptionTests(FirmwareManagerApp app) : ApiTest(app)
{
    [Fact]
    public async Task An_admin_makes_a_webhook_sees_its_secret_once_and_never_again()
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);

        var created = await admin.PostAsJsonAsync("/webhooks", new { url = "http://127.0.0.1:1024/hook", events = new[] { "event.failed", "event.rolled_back" } });

        created.StatusCode.Should().Be(HttpStatusCode.Created);
        var body = await created.JsonAsync();
        var id = body.GetProperty("webhook").GetProperty("id").GetInt64();
        created.Headers.Location!.ToString().Should().Be($"/webhooks/{id}");
        body.GetProperty("secret").GetString().Should().MatchRegex("^whsec_[A-Za-z0-9+/]{43}=$");
        var listed = await (await admin.GetAsync("/webhooks")).Content.ReadAsStringAsync();
        listed.Should().Contain("event.rolled_back").And.NotContain("whsec_").And.NotContain("secret");
        (await (await admin.GetAsync($"/webhooks/{id}")).JsonAsync()).GetProperty("url").GetString().Should().Be("http://127.0.0.1:1024/hook");
        var audit = await (await admin.GetAsync("/audit")).Content.ReadAsStringAsync();
        audit.Should().Contain("webhook.created").And.NotContain("whsec_");
    }

    [Theory]
    [InlineData("""{"url":"ftp://example.com/hook","events":["event.failed"]}""", "url")]
    [InlineData("""{"url":"/hook","events":["event.failed"]}""", "url")]
    [InlineData("""{"url":"http://user:pass@example.com/hook","events":["event.failed"]}""", "url")]
    [InlineData("""{"url":"http://no-such-host.invalid/hook","events":["event.failed"]}""", "url")]
    [InlineData("""{"events":["event.failed"]}""", "url")]
    [InlineData("""{"url":"http://127.0.0.1/hook","events":[]}""", "events")]
    [InlineData("""{"url":"http://127.0.0.1/hook","events":["event.exploded"]}""", "events")]
    [InlineData("""{"url":"http://127.0.0.1/hook","events":"event.failed"}""", "events")]
    [InlineData("""{"url":"http://127.0.0.1/hook"}""", "events")]
    [InlineData("""{"url":"http://127.0.0.1/hook","events":["event.failed"],"filters":{"firmware":"v2"}}""", "filters.firmware")]
    [InlineData("""{"url":"http://127.0.0.1/hook","events":["event.failed"],"filters":{"firmware":7}}""", "filters.firmware")]
    [InlineData("""{"url":7,"events":["event.failed"]}""", "url")]
    public async Task A_bad_webhook_is_400_naming_the_field_and_makes_nothing(string body, string field)
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);

        var errors = await (await admin.PostRawAsync("/webhooks", body)).ShouldBeValidationProblemAsync();

        errors.Should().ContainKey(field);
        (await (await admin.GetAsync("/webhooks")).JsonAsync()).GetArrayLength().Should().Be(0);
    }

    [Fact]
    public async Task Viewers_and_devices_may_not_touch_webhooks()
    {
        using var viewer = App.ClientWithKey(FirmwareManagerApp.MemberKey2);
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);

        await (await viewer.PostAsJsonAsync("/webhooks", new { url = "http://127.0.0.1/hook", events = new[] { "event.failed" } })).ShouldBeProblemAsync(HttpStatusCode.Forbidden);
        await (await viewer.GetAsync("/webhooks")).ShouldBeProblemAsync(HttpStatusCode.Forbidden);
        await (await device.GetAsync("/webhooks")).ShouldBeProblemAsync(HttpStatusCode.Forbidden);
    }

    [Theory]
    [InlineData("http://127.0.0.1/hook")]
    [InlineData("http://localhost:8080/hook")]
    [InlineData("http://10.1.2.3/hook")]
    [InlineData("http://172.16.0.1/hook")]
    [InlineData("http://192.168.1.1/hook")]
    [InlineData("http://169.254.169.254/latest/meta-data")]
    [InlineData("http://100.64.0.1/hook")]
    [InlineData("http://0.0.0.0/hook")]
    [InlineData("http://[::1]/hook")]
    [InlineData("http://[fd00::1]/hook")]
    [InlineData("http://[fe80::1]/hook")]
    [InlineData("http://[::ffff:127.0.0.1]/hook")]
    [InlineData("http://2130706433/hook")]
    [InlineData("http://0x7f000001/hook")]
    [InlineData("http://0177.0.0.1/hook")]
    [InlineData("http://[2002:7f00:1::1]/hook")]
    [InlineData("http://[2002:c0a8:101::1]/hook")]
    [InlineData("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook")]
    [InlineData("http://[::ffff:0:7f00:1]/hook")]
    [InlineData("http://[::ffff:0:a00:1]/hook")]
    [InlineData("http://[100::1]/hook")]
    [InlineData("http://[64:ff9b::7f00:1]/hook")]
    [InlineData("http://[64:ff9b:1::a00:1]/hook")]
    [InlineData("http://[::7f00:1]/hook")]
    [InlineData("http://[::]/hook")]
    [InlineData("http://[ff02::1]/hook")]
    [InlineData("http://[fec0::1]/hook")]
    [InlineData("http://[2001:db8::1]/hook")]
    [InlineData("http://192.88.99.1/hook")]
    [InlineData("http://168.63.129.16/hook")]
    [InlineData("http://192.0.0.192/hook")]
    [InlineData("http://255.255.255.255/hook")]
    public async Task Targets_on_private_networks_are_refused_unless_the_service_allows_them(string url)
    {
        var strict = new WebhookTargets(Options.Create(new WebhookOptions()));
        var lenient = new WebhookTargets(Options.Create(new WebhookOptions { AllowPrivateTargets = true }));

        (await strict.CheckAsync(url, CancellationToken.None)).Should().NotBeNull();
        (await lenient.CheckAsync(url, CancellationToken.None)).Should().BeNull();
    }

    [Theory]
    [InlineData("http://93.184.215.14/hook")]
    [InlineData("https://93.184.215.14:8443/hook")]
    [InlineData("http://93.184.215.14:1024/hook")]
    [InlineData("http://[::ffff:93.184.215.14]/hook")]
    [InlineData("https://[2606:4700::1111]/hook")]
    [InlineData("https://[2a00:1450:4001:82a::200e]:65535/hook")]
    public async Task Targets_on_public_addresses_are_allowed(string url) =>
        (await new WebhookTargets(Options.Create(new WebhookOptions())).CheckAsync(url, CancellationToken.None)).Should().BeNull();

    [Theory]
    [InlineData("http://93.184.215.14:22/hook")]
    [InlineData("http://93.184.215.14:25/hook")]
    [InlineData("https://93.184.215.14:1023/hook")]
    [InlineData("http://127.0.0.1:993/hook")]
    public async Task Targets_on_system_ports_are_refused_whatever_the_address_switch_says(string url)
    {
        var lenient = new WebhookTargets(Options.Create(new WebhookOptions { AllowPrivateTargets = true }));

        (await lenient.CheckAsync(url, CancellationToken.None)).Should().Contain("port");
    }

    [Fact]
    public async Task A_delivery_to_a_system_port_is_refused_at_connection_time()
    {
        var targets = new WebhookTargets(Options.Create(new WebhookOptions { AllowPrivateTargets = true }));
        using var client = new HttpClient(new SocketsHttpHandler { ConnectCallback = targets.ConnectAsync });

        var send = () => client.PostAsync("http://127.0.0.1:25/hook", new StringContent("{}"));

        (await send.Should().ThrowAsync<HttpRequestException>()).Which.InnerException.Should().BeOfType<WebhookTargetRefusedException>();
    }

    [Fact]
    public async Task A_delivery_that_would_connect_to_a_private_address_is_refused_at_connection_time()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        var targets = new WebhookTargets(Options.Create(new WebhookOptions()));
        using var client = new HttpClient(new SocketsHttpHandler { ConnectCallback = targets.ConnectAsync });

        var send = () => client.PostAsync(receiver.Url, new StringContent("{}"));

        (await send.Should().ThrowAsync<HttpRequestException>()).Which.InnerException.Should().BeOfType<WebhookTargetRefusedException>();
        receiver.Requests.Should().BeEmpty();
    }
}
