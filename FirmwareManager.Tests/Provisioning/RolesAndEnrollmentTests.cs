using System.Net;
using System.Net.Http.Json;
using Dapper;
using FirmwareManager.Tests.Infrastructure;

namespace FirmwareManager.Tests.Provisioning;

public sealed class RolesAndEnrollmentTests(FirmwareManagerApp app) : ApiTest(app)
{
    public static TheoryData<string, string> AdminEndpoints => new()
    {
        { "POST", "/devices" },
        { "POST", "/devices/bulk" },
        { "DELETE", "/devices/1" },
        { "POST", "/devices/1/keys" },
        { "GET", "/devices/1/keys" },
        { "DELETE", "/devices/1/keys/1" },
        { "GET", "/members" },
        { "POST", "/members" },
        { "DELETE", "/members/1" },
        { "POST", "/members/1/keys" },
        { "GET", "/members/1/keys" },
        { "DELETE", "/members/1/keys/1" },
        { "GET", "/audit" },
    };

    [Theory]
    [MemberData(nameof(AdminEndpoints))]
    public async Task A_viewer_or_a_device_calling_an_admin_endpoint_gets_403_and_nothing_changes(string method, string path)
    {
        using var viewer = App.ClientWithKey(FirmwareManagerApp.MemberKey2);
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        using var anonymous = App.ClientWithKey(null);
        var before = await StateAsync();

        foreach (var (client, status) in new[] { (viewer, HttpStatusCode.Forbidden), (device, HttpStatusCode.Forbidden), (anonymous, HttpStatusCode.Unauthorized) })
        {
            using var request = new HttpRequestMessage(new HttpMethod(method), path);
            if (method == "POST")
            {
                request.Content = JsonContent.Create(new { name = "x", count = 1, email = "a@b.c", role = "admin" });
            }

            await (await client.SendAsync(request)).ShouldBeProblemAsync(status);
        }

        (await StateAsync()).Should().Be(before);
    }

    [Fact]
    public async Task Members_of_any_role_manage_their_own_keys()
    {
        using var viewer = App.ClientWithKey(FirmwareManagerApp.MemberKey2);

        var me = await (await viewer.GetAsync("/me")).JsonAsync();
        var created = await viewer.PostAsync("/me/keys", null);
        var keys = await (await viewer.GetAsync("/me/keys")).JsonAsync();

        me.GetProperty("role").GetString().Should().Be("viewer");
        created.StatusCode.Should().Be(HttpStatusCode.Created);
        keys.GetArrayLength().Should().Be(2);
        (await viewer.DeleteAsync($"/me/keys/{keys[1].GetProperty("id").GetInt64()}")).StatusCode.Should().Be(HttpStatusCode.NoContent);
        await (await viewer.DeleteAsync("/me/keys/1")).ShouldBeProblemAsync(HttpStatusCode.NotFound);
    }

    [Fact]
    public async Task Admins_act_only_in_their_own_project()
    {
        using var admin3 = App.ClientWithKey(FirmwareManagerApp.MemberKey3);

        await (await admin3.DeleteAsync("/devices/1")).ShouldBeProblemAsync(HttpStatusCode.NotFound);
        await (await admin3.PostAsync("/devices/1/keys", null)).ShouldBeProblemAsync(HttpStatusCode.NotFound);
        await (await admin3.GetAsync("/devices/1/keys")).ShouldBeProblemAsync(HttpStatusCode.NotFound);
        await (await admin3.DeleteAsync("/devices/1/keys/1")).ShouldBeProblemAsync(HttpStatusCode.NotFound);
        await (await admin3.DeleteAsync("/members/1")).ShouldBeProblemAsync(HttpStatusCode.NotFound);
        (await (await admin3.GetAsync("/members")).JsonAsync()).EnumerateArray().Select(m => m.GetProperty("id").GetInt64()).Should().Equal(3);
        using var device1 = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        (await device1.GetAsync("/firmware/1")).StatusCode.Should().Be(HttpStatusCode.OK, "device 1's key was not revoked by another project");
    }

    [Fact]
    public async Task Bulk_enrollment_answers_a_key_per_device_as_NDJSON_or_CSV()
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);

        var ndjson = await admin.PostAsJsonAsync("/devices/bulk", new { count = 3 });
        using var csvRequest = new HttpRequestMessage(HttpMethod.Post, "/devices/bulk") { Content = JsonContent.Create(new { serials = new[] { "A-1", "B,2" } }) };
        csvRequest.Headers.Accept.ParseAdd("text/csv");
        var csv = await admin.SendAsync(csvRequest);

        ndjson.Content.Headers.ContentType!.MediaType.Should().Be("application/x-ndjson");
        var lines = (await ndjson.Content.ReadAsStringAsync()).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        lines.Should().HaveCount(3);
        var first = System.Text.Json.JsonDocument.Parse(lines[0]).RootElement;
        first.GetProperty("key").GetString().Should().MatchRegex("^fmd_[0-9A-Za-z]{43}$");
        first.GetProperty("serial").ValueKind.Should().Be(System.Text.Json.JsonValueKind.Null);
        using (var enrolled = App.ClientWithKey(first.GetProperty("key").GetString()))
        {
            (await enrolled.PostEventAsync(first.GetProperty("id").GetInt64(), new { firmware = "1.0.0", status = "installed" }))
                .StatusCode.Should().Be(HttpStatusCode.Created);
        }

        csv.Content.Headers.ContentType!.MediaType.Should().Be("text/csv");
        var rows = (await csv.Content.ReadAsStringAsync()).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        rows[0].Should().Be("id,serial,key");
        rows[1].Should().MatchRegex("^[0-9]+,A-1,fmd_[0-9A-Za-z]{43}$");
        rows[2].Should().MatchRegex("^[0-9]+,\"B,2\",fmd_[0-9A-Za-z]{43}$");
    }

    [Fact]
    public async Task Serials_that_need_escaping_come_back_as_sent_in_NDJSON_and_CSV()
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        string[] serials = ["Q\"uote-<1>", "Zähler-\\2", "Line,\"3\""];

        var ndjson = await admin.PostAsJsonAsync("/devices/bulk", new { serials = serials.Take(2).ToArray() });
        using var csvRequest = new HttpRequestMessage(HttpMethod.Post, "/devices/bulk") { Content = JsonContent.Create(new { serials = serials.Skip(2).ToArray() }) };
        csvRequest.Headers.Accept.ParseAdd("text/csv");
        var csv = await admin.SendAsync(csvRequest);

        ndjson.StatusCode.Should().Be(HttpStatusCode.OK);
        (await ndjson.Content.ReadAsStringAsync()).Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement.GetProperty("serial").GetString())
            .Should().Equal(serials.Take(2));
        var rows = (await csv.Content.ReadAsStringAsync()).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        rows.Should().HaveCount(2);
        rows[1].Should().MatchRegex("^[0-9]+,\"Line,\"\"3\"\"\",fmd_[0-9A-Za-z]{43}$");
    }

    [Fact]
    public async Task A_bulk_call_with_a_duplicate_serial_stores_nothing()
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        (await admin.PostAsJsonAsync("/devices", new { serial = "TAKEN" })).StatusCode.Should().Be(HttpStatusCode.Created);
        var before = await StateAsync();

        var repeated = await admin.PostAsJsonAsync("/devices/bulk", new { serials = new[] { "N-1", "N-2", "N-1" } });
        var taken = await admin.PostAsJsonAsync("/devices/bulk", new { serials = new[] { "N-3", "TAKEN" } });

        (await repeated.ShouldBeValidationProblemAsync()).Should().ContainKey("serials[2]");
        await taken.ShouldBeProblemAsync(HttpStatusCode.Conflict);
        (await StateAsync()).Should().Be(before);
    }

    [Fact]
    public async Task A_bulk_call_of_many_chunks_matches_every_key_to_its_device_and_stores_all_or_nothing()
    {
        // Enrollment writes 5,000 devices a statement: 12,000 make three, the last one short.
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        (await admin.PostAsJsonAsync("/devices", new { serial = "TAKEN-LATE" })).StatusCode.Should().Be(HttpStatusCode.Created);
        var serials = Enumerable.Range(0, 12_000).Select(i => $"CH-{i:D5}").ToArray();
        var before = await StateAsync();

        var taken = await admin.PostAsJsonAsync("/devices/bulk", new { serials = serials.Take(11_000).Append("TAKEN-LATE").ToArray() });
        await taken.ShouldBeProblemAsync(HttpStatusCode.Conflict);
        (await StateAsync()).Should().Be(before, "the chunks stored before the taken serial are rolled back with it");

        var enrolled = await admin.PostAsJsonAsync("/devices/bulk", new { serials });
        enrolled.StatusCode.Should().Be(HttpStatusCode.OK);
        var lines = (await enrolled.Content.ReadAsStringAsync()).Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(line => System.Text.Json.JsonDocument.Parse(line).RootElement)
            .Select(e => (Id: e.GetProperty("id").GetInt64(), Serial: e.GetProperty("serial").GetString(), Key: e.GetProperty("key").GetString()!))
            .ToArray();
        lines.Select(l => l.Serial).Should().Equal(serials);

        await using var connection = App.OpenConnection();
        var stored = (await connection.QueryAsync<(long Id, string Serial, byte[] KeyHash)>("""
            SELECT d.id, d.serial, k.key_hash
            FROM devices d
            JOIN device_api_keys k ON k.project_id = d.project_id AND k.device_id = d.id
            WHERE d.id = ANY(@Ids)
            """, new { Ids = lines.Select(l => l.Id).ToArray() })).ToDictionary(r => r.Id);
        stored.Should().HaveCount(serials.Length, "each device has exactly one key");
        foreach (var line in lines)
        {
            stored[line.Id].Serial.Should().Be(line.Serial);
            stored[line.Id].KeyHash.Should().Equal(FirmwareManager.Api.Auth.ApiKeyHasher.Hash(line.Key));
        }
    }

    [Theory]
    [InlineData("{}", "body")]
    [InlineData("{\"count\": 0}", "count")]
    [InlineData("{\"count\": 100001}", "count")]
    [InlineData("{\"count\": 2, \"serials\": [\"a\"]}", "body")]
    [InlineData("{\"serials\": []}", "serials")]
    [InlineData("{\"serials\": [\"\"]}", "serials[0]")]
    [InlineData("{\"serials\": [\"a\", 1]}", "serials[1]")]
    [InlineData("{\"serials\": [\"a\", [\"b\"]]}", "serials[1]")]
    [InlineData("{\"serials\": \"a\"}", "serials")]
    [InlineData("{\"count\": 1.5}", "count")]
    [InlineData("{\"count\": \"5\"}", "count")]
    [InlineData("{\"count\": 4294967297}", "count")]
    [InlineData("{\"count\": 2, \"count\": 3}", "body")]
    [InlineData("{\"x\": [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]], \"count\": 2}", "body")]
    public async Task A_bad_enrollment_is_400(string body, string field)
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);

        (await (await admin.PostRawAsync("/devices/bulk", body)).ShouldBeValidationProblemAsync()).Should().ContainKey(field);
    }

    [Fact]
    public async Task Inviting_an_active_member_again_is_409_and_a_bad_invitation_is_400()
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);

        await (await admin.PostAsJsonAsync("/members", new { email = "member_2@project-1.example", role = "admin" })).ShouldBeProblemAsync(HttpStatusCode.Conflict);
        (await (await admin.PostAsJsonAsync("/members", new { email = "nobody", role = "owner" })).ShouldBeValidationProblemAsync())
            .Keys.Should().BeEquivalentTo("email", "role");
    }

    private async Task<string> StateAsync()
    {
        await using var connection = App.OpenConnection();
        return await connection.ExecuteScalarAsync<string>("""
            SELECT format('%s devices, %s decommissioned, %s device keys, %s revoked, %s members, %s removed, %s member keys, %s revoked, %s audit',
                (SELECT count(*) FROM devices), (SELECT count(*) FROM devices WHERE decommissioned_at IS NOT NULL),
                (SELECT count(*) FROM device_api_keys), (SELECT count(*) FROM device_api_keys WHERE revoked_at IS NOT NULL),
                (SELECT count(*) FROM project_memberships), (SELECT count(*) FROM project_memberships WHERE removed_at IS NOT NULL),
                (SELECT count(*) FROM membership_api_keys), (SELECT count(*) FROM membership_api_keys WHERE revoked_at IS NOT NULL),
                (SELECT count(*) FROM audit_log))
            """) ?? "";
    }
}
