using System.Security.Cryptography;
using System.Text;
using Dapper;
using Microsoft.AspNetCore.DataProtection;
using Npgsql;
using StandardWebhooks;

namespace FirmwareManager.Api.Webhooks;

/// <summary>
/// Webhook signing secrets: made here (<c>whsec_</c> and 32 random bytes in base64, the Standard Webhooks form),
/// shown once, kept protected by ASP.NET Core Data Protection (its keys in <c>data_protection_keys</c>, migration
/// 0041): a copy of the webhooks table alone does not give them away, and a secret stays readable after the keys
/// rotate. Secrets kept before that (AES-256-GCM under the <c>webhook</c> key of <c>service_secrets</c>, migration
/// 0029) are still read.
/// </summary>
public sealed class WebhookSecrets(NpgsqlDataSource dataSource, IDataProtectionProvider protection)
{
    public const string Prefix = "whsec_";

    // The form before Data Protection: a 12-byte nonce, a 16-byte tag and the 32 bytes (Data Protection's are longer).
    private const int NonceLength = 12;
    private const int TagLength = 16;
    private const int LegacyLength = NonceLength + TagLength + 32;

    private const string LoadLegacyKeySql = """
        SELECT secret
        FROM service_secrets
        WHERE name = 'webhook'
        """;

    private readonly IDataProtector _protector = protection.CreateProtector("FirmwareManager.Webhooks.Secrets");
    private byte[]? _legacyKey;

    /// <summary>A new secret: its text (shown once) and its protected form (kept).</summary>
    public (string Secret, byte[] Protected) New()
    {
        var raw = RandomNumberGenerator.GetBytes(32);
        return (Prefix + Convert.ToBase64String(raw), _protector.Protect(raw));
    }

    /// <summary>The bytes a delivery is signed with.</summary>
    public async Task<byte[]> SigningKeyAsync(byte[] stored, CancellationToken cancellationToken)
    {
        if (stored.Length != LegacyLength)
        {
            return _protector.Unprotect(stored);
        }

        var key = await LegacyKeyAsync(cancellationToken);
        var raw = new byte[stored.Length - NonceLength - TagLength];
        using var aes = new AesGcm(key, TagLength);
        aes.Decrypt(stored.AsSpan(0, NonceLength), stored.AsSpan(NonceLength + TagLength), stored.AsSpan(NonceLength, TagLength), raw);
        return raw;
    }

    /// <summary>
    /// The Standard Webhooks signature (<c>v1,</c> and the base64 HMAC-SHA256 of <c>{id}.{timestamp}.{body}</c>), made
    /// by the StandardWebhooks package, whose receivers' side our receivers may use to verify it.
    /// </summary>
    public static string Sign(byte[] signingKey, string messageId, DateTimeOffset sentAt, byte[] body) =>
        new StandardWebhook(signingKey).Sign(messageId, sentAt, Encoding.UTF8.GetString(body));

    private async Task<byte[]> LegacyKeyAsync(CancellationToken cancellationToken)
    {
        if (_legacyKey is null)
        {
            await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
            var secret = await connection.ExecuteScalarAsync<byte[]>(new CommandDefinition(LoadLegacyKeySql, cancellationToken: cancellationToken))
                ?? throw new InvalidOperationException("service_secrets has no 'webhook' key: migration 0029 has not run.");
            _legacyKey = SHA256.HashData(secret);
        }

        return _legacyKey;
    }
}
