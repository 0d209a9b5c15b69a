using System.Buffers.Text;
using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text;
using Dapper;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Http;
using FirmwareManager.Api.Webhooks;
using FirmwareManager.Tests.Infrastructure;
using Microsoft.AspNetCore.DataProtection;
using Microsoft.AspNetCore.DataProtection.KeyManagement;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using static FirmwareManager.Tests.Firmware.PagingHistoryTests;

namespace FirmwareManager.Tests.Http;

/// <summary>
/// Paging cursors and webhook secrets are protected by Data Protection, its keys kept in the database: what one
/// instance protected another reads, what was protected before the keys rotated stays readable, and what was
/// protected before Data Protection (the hand-made HMAC and AES-GCM forms) too.
/// </summary>
public sealed class ProtectionKeyTests(FirmwareManagerApp app) : ApiTest(app)
{
    [Fact]
    public async Task After_the_keys_rotate_a_cursor_and_a_secret_made_before_are_still_read_on_every_instance_and_new_ones_use_the_new_key()
    {
        var (deviceId, key) = await App.AddDeviceAsync(projectId: 1);
        using var device = App.ClientWithKey(key);
        foreach (var firmware in new[] { "1.0.0", "1.1.0", "1.2.0" })
        {
            (await device.PostEventAsync(deviceId, new { firmware, status = "installed" })).StatusCode.Should().Be(HttpStatusCode.Created);
        }

        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        var second = NextLink(await member.GetAsync($"/firmware/{deviceId}?limit=1"));
        var secrets = App.Services.GetRequiredService<WebhookSecrets>();
        var (secret, stored) = secrets.New();
        var keys = App.Services.GetRequiredService<IKeyManager>();
        var before = KeyIdOf(Cursor(second));
        KeyIdOf(stored).Should().Be(before);

        var rotated = keys.CreateNewKey(DateTimeOffset.UtcNow.AddSeconds(-1), DateTimeOffset.UtcNow.AddDays(90));

        // Data Protection takes up the new key when it next reads its key ring, which the new key's creation makes due.
        var deadline = DateTime.UtcNow.AddSeconds(15);
        while (KeyIdOf(Cursor(NextLink(await member.GetAsync($"/firmware/{deviceId}?limit=1")))) != rotated.KeyId)
        {
            DateTime.UtcNow.Should().BeBefore(deadline, "the new key is taken up within seconds");
            await Task.Delay(100);
        }

        var page = await member.GetAsync(second);
        page.StatusCode.Should().Be(HttpStatusCode.OK, "a cursor made before the rotation is read after it");
        (await page.JsonAsync()).EnumerateArray().Single().GetProperty("firmware").GetString().Should().Be("1.1.0");
        var third = NextLink(page);
        KeyIdOf(Cursor(third)).Should().Be(rotated.KeyId).And.NotBe(before);
        (await secrets.SigningKeyAsync(stored, CancellationToken.None)).Should().Equal(Convert.FromBase64String(secret[WebhookSecrets.Prefix.Length..]));
        var (newSecret, newStored) = secrets.New();
        KeyIdOf(newStored).Should().Be(rotated.KeyId);

        // Another instance's Data Protection, which reads the key ring from the database (its own services, as a
        // second process would have them; not a second web host, whose meters would join this one's).
        var services = new ServiceCollection().AddLogging().AddSingleton(_ => NpgsqlDataSource.Create(App.ApiConnectionString));
        services.AddDataProtectionInDatabase();
        await using var other = services.BuildServiceProvider();
        var otherProtection = other.GetRequiredService<IDataProtectionProvider>();
        var otherSecrets = new WebhookSecrets(other.GetRequiredService<NpgsqlDataSource>(), otherProtection);
        (await otherSecrets.SigningKeyAsync(stored, CancellationToken.None)).Should().Equal(Convert.FromBase64String(secret[WebhookSecrets.Prefix.Length..]));
        (await otherSecrets.SigningKeyAsync(newStored, CancellationToken.None)).Should().Equal(Convert.FromBase64String(newSecret[WebhookSecrets.Prefix.Length..]));
        var cursors = App.Services.GetRequiredService<Cursors>();
        var made = cursors.Encode("test|rotation", new ReadContext(), new IdPosition(42));
        var otherCursors = new Cursors(other.GetRequiredService<NpgsqlDataSource>(), otherProtection);
        (await otherCursors.DecodeAsync<IdPosition>("test|rotation", made, new ReadContext(), CancellationToken.None)).Should().Be(new IdPosition(42));
        (await otherCursors.DecodeAsync<IdPosition>("test|another", made, new ReadContext(), CancellationToken.None)).Should().BeNull("a cursor is bound to its query");
    }

    [Fact]
    public async Task A_cursor_and_a_secret_kept_in_the_form_before_Data_Protection_are_still_read()
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        foreach (var days in new[] { 30, 31, 32 })
        {
            (await admin.PutAsJsonAsync("/project/retention", new { max_age_days = days })).StatusCode.Should().Be(HttpStatusCode.OK);
        }

        var newest = (await (await admin.GetAsync("/audit?limit=2")).JsonAsync()).EnumerateArray().Select(e => e.GetProperty("id").GetInt64()).ToList();

        // The audit log's cursor as the service made it before: format 2, the WAL position, the id, and 16 bytes of
        // HMAC-SHA256 under service_secrets' cursor key over "audit|1", a zero byte and the body.
        byte[] body = [2, .. BitConverter.GetBytes(0UL), .. BitConverter.GetBytes(newest[0])];
        var mac = await App.Services.GetRequiredService<Cursors>().LegacyMacAsync("audit|1", body, CancellationToken.None);
        var legacy = Base64Url.EncodeToString([.. body, .. mac]);
        await using (var connection = App.OpenConnection())
        {
            var cursorKey = await connection.QuerySingleAsync<byte[]>("SELECT secret FROM service_secrets WHERE name = 'cursor'");
            mac.Should().Equal(HMACSHA256.HashData(cursorKey, (byte[])[.. Encoding.UTF8.GetBytes("audit|1"), 0, .. body])[..16], "the test makes the old form itself");
        }

        var page = await admin.GetAsync($"/audit?limit=1&cursor={legacy}");
        page.StatusCode.Should().Be(HttpStatusCode.OK);
        (await page.JsonAsync()).EnumerateArray().Single().GetProperty("id").GetInt64().Should().Be(newest[1]);
        KeyIdOf(Cursor(NextLink(page))).Should().NotBeEmpty("the next page's cursor is in the new form");

        // A webhook secret as migration 0029's form kept it: AES-256-GCM under SHA-256 of service_secrets' webhook key.
        var raw = RandomNumberGenerator.GetBytes(32);
        byte[] stored;
        await using (var connection = App.OpenConnection())
        {
            var webhookKey = SHA256.HashData(await connection.QuerySingleAsync<byte[]>("SELECT secret FROM service_secrets WHERE name = 'webhook'"));
            var nonce = RandomNumberGenerator.GetBytes(12);
            var ciphertext = new byte[32];
            var tag = new byte[16];
            using (var aes = new AesGcm(webhookKey, 16))
            {
                aes.Encrypt(nonce, raw, ciphertext, tag);
            }

            stored = [.. nonce, .. tag, .. ciphertext];
        }

        (await App.Services.GetRequiredService<WebhookSecrets>().SigningKeyAsync(stored, CancellationToken.None)).Should().Equal(raw);
    }

    private static byte[] Cursor(string link)
    {
        var query = link[(link.IndexOf('?', StringComparison.Ordinal) + 1)..].Split('&').Single(p => p.StartsWith("cursor=", StringComparison.Ordinal));
        return Base64Url.DecodeFromChars(Uri.UnescapeDataString(query["cursor=".Length..]));
    }

    // Data Protection's payload: its 4-byte magic header, then the key's id.
    private static Guid KeyIdOf(byte[] payload)
    {
        payload[..4].Should().Equal(0x09, 0xF0, 0xC9, 0xF0);
        return new Guid(payload.AsSpan(4, 16));
    }
}
