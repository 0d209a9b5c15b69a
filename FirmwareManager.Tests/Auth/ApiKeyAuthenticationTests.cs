using System.Net;
using System.Net.Http.Headers;
using Dapper;
using FirmwareManager.Tests.Infrastructure;

namespace FirmwareManager.Tests.Auth;

public sealed class ApiKeyAuthenticationTests(FirmwareManagerApp app) : ApiTest(app)
{
    private static readonly object AnEvent = new { firmware = "1.0.3", status = "updated", timestamp = "2023-02-01T00:00:00Z" };

    [Theory]
    [InlineData("GET")]
    [InlineData("POST")]
    public async Task A_request_without_a_key_is_401_with_a_challenge(string method)
    {
        using var client = App.ClientWithKey(null);
        using var request = new HttpRequestMessage(new HttpMethod(method), "/firmware/1");
        if (method == "POST")
        {
            request.Content = System.Net.Http.Json.JsonContent.Create(AnEvent);
        }

        var response = await client.SendAsync(request);

        await response.ShouldBeProblemAsync(HttpStatusCode.Unauthorized);
        response.Headers.WwwAuthenticate.Should().ContainSingle().Which.Scheme.Should().Be("Bearer");
    }

    [Fact]
    public async Task An_unknown_key_is_401()
    {
        using var client = App.ClientWithKey("not_a_key_anyone_has");

        var response = await client.GetAsync("/firmware/1");

        var problem = await response.ShouldBeProblemAsync(HttpStatusCode.Unauthorized);
        problem.GetProperty("detail").GetString().Should().Contain("unknown or has been revoked");
        response.Headers.WwwAuthenticate.Single().Parameter.Should().Contain("invalid_token");
    }

    [Fact]
    public async Task A_revoked_key_is_401_while_the_devices_other_key_still_works()
    {
        var (deviceId, oldKey) = await App.AddDeviceAsync(projectId: 1);
        var newKey = await App.AddDeviceKeyAsync(deviceId);
        await using (var connection = App.OpenConnection())
        {
            await connection.ExecuteAsync(
                "UPDATE device_api_keys SET revoked_at = now() WHERE key_hash = @Hash",
                new { Hash = FirmwareManager.Api.Auth.ApiKeyHasher.Hash(oldKey) });
        }

        using var revoked = App.ClientWithKey(oldKey);
        using var current = App.ClientWithKey(newKey);

        await (await revoked.GetAsync($"/firmware/{deviceId}")).ShouldBeProblemAsync(HttpStatusCode.Unauthorized);
        (await current.GetAsync($"/firmware/{deviceId}")).StatusCode.Should().Be(HttpStatusCode.OK);
    }

    [Fact]
    public async Task A_revoked_member_key_is_401()
    {
        await using (var connection = App.OpenConnection())
        {
            await connection.ExecuteAsync("UPDATE membership_api_keys SET revoked_at = now() WHERE membership_id = 1");
        }

        using var client = App.ClientWithKey(FirmwareManagerApp.MemberKey1);

        await (await client.GetAsync("/firmware/1")).ShouldBeProblemAsync(HttpStatusCode.Unauthorized);
    }

    [Fact]
    public async Task The_key_is_accepted_in_X_Api_Key_and_as_a_bearer_token()
    {
        using var viaHeader = App.CreateClient();
        viaHeader.DefaultRequestHeaders.Add("X-Api-Key", FirmwareManagerApp.MemberKey1);
        using var viaBearer = App.CreateClient();
        viaBearer.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", FirmwareManagerApp.MemberKey1);

        (await viaHeader.GetAsync("/firmware/1")).StatusCode.Should().Be(HttpStatusCode.OK);
        (await viaBearer.GetAsync("/firmware/1")).StatusCode.Should().Be(HttpStatusCode.OK);
    }

    [Fact]
    public async Task The_same_key_in_two_headers_is_accepted()
    {
        using var client = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        client.DefaultRequestHeaders.Add("X-Api-Key", FirmwareManagerApp.MemberKey1);

        (await client.GetAsync("/firmware/1")).StatusCode.Should().Be(HttpStatusCode.OK);
    }

    [Fact]
    public async Task Two_different_keys_are_401_even_when_both_are_valid()
    {
        using var client = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        client.DefaultRequestHeaders.Add("X-Api-Key", FirmwareManagerApp.DeviceKey1);

        var problem = await (await client.GetAsync("/firmware/1")).ShouldBeProblemAsync(HttpStatusCode.Unauthorized);
        problem.GetProperty("detail").GetString().Should().Contain("more than one");
    }

    [Fact]
    public async Task A_member_posting_an_event_is_forbidden_and_nothing_is_stored()
    {
        using var client = App.ClientWithKey(FirmwareManagerApp.MemberKey1);

        await (await client.PostEventAsync(1, AnEvent)).ShouldBeProblemAsync(HttpStatusCode.Forbidden);
        (await EventCountAsync()).Should().Be(6);
    }

    [Fact]
    public async Task Device_posting_for_another_device_is_forbidden()
    {
        using var client = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);

        await (await client.PostEventAsync(2, AnEvent)).ShouldBeProblemAsync(HttpStatusCode.Forbidden);
        await (await client.PostEventAsync(3, AnEvent)).ShouldBeProblemAsync(HttpStatusCode.Forbidden);
        await (await client.PostEventAsync(999, AnEvent)).ShouldBeProblemAsync(HttpStatusCode.Forbidden);
        (await EventCountAsync()).Should().Be(6);
    }

    [Fact]
    public async Task Device_reading_another_devices_history_is_forbidden()
    {
        using var client = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);

        await (await client.GetAsync("/firmware/2")).ShouldBeProblemAsync(HttpStatusCode.Forbidden);
        await (await client.GetAsync("/firmware/3")).ShouldBeProblemAsync(HttpStatusCode.Forbidden);
        await (await client.GetAsync("/firmware/2/events/2")).ShouldBeProblemAsync(HttpStatusCode.Forbidden);
    }

    [Fact]
    public async Task Device_reads_its_own_history()
    {
        using var client = App.ClientWithKey(FirmwareManagerApp.DeviceKey2);

        var response = await client.GetAsync("/firmware/2");

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        (await response.JsonAsync()).GetArrayLength().Should().Be(2);
    }

    [Fact]
    public async Task A_device_in_another_project_and_an_unknown_device_get_the_same_404()
    {
        // Project 2's member asks for device 1, which was never project 2's (device 3, which left project 1, still
        // shows project 1 the events it reported there: ReadingHistoryTests).
        using var client = App.ClientWithKey(FirmwareManagerApp.MemberKey3);

        var otherProject = await (await client.GetAsync("/firmware/1")).ShouldBeProblemAsync(HttpStatusCode.NotFound);
        var unknown = await (await client.GetAsync("/firmware/3000")).ShouldBeProblemAsync(HttpStatusCode.NotFound);

        otherProject.GetProperty("title").GetString().Should().Be(unknown.GetProperty("title").GetString());
        otherProject.GetProperty("detail").GetString().Should().Be("There is no device 1 in your project.");
        unknown.GetProperty("detail").GetString().Should().Be("There is no device 3000 in your project.");
    }

    [Fact]
    public async Task Members_read_every_device_of_their_own_project()
    {
        using var member1 = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        using var member2 = App.ClientWithKey(FirmwareManagerApp.MemberKey2);
        using var member3 = App.ClientWithKey(FirmwareManagerApp.MemberKey3);

        (await member1.GetAsync("/firmware/1")).StatusCode.Should().Be(HttpStatusCode.OK);
        (await member2.GetAsync("/firmware/2")).StatusCode.Should().Be(HttpStatusCode.OK);
        (await member3.GetAsync("/firmware/3")).StatusCode.Should().Be(HttpStatusCode.OK);
        await (await member3.GetAsync("/firmware/1")).ShouldBeProblemAsync(HttpStatusCode.NotFound);
    }

    [Fact]
    public async Task Health_needs_no_key()
    {
        using var client = App.ClientWithKey(null);

        var response = await client.GetAsync("/health");

        response.StatusCode.Should().Be(HttpStatusCode.OK);
    }

    private async Task<long> EventCountAsync()
    {
        await using var connection = App.OpenConnection();
        return await connection.ExecuteScalarAsync<long>("SELECT count(*) FROM firmware_events");
    }
}
