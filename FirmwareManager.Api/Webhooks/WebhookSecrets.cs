using System.Security.Cryptography;
using Dapper;
using Npgsql;

namespace FirmwareManager.Api.Webhooks;

/// <summary>
/// Webhook signing secrets: made here (<c>whsec_</c> and 32 random bytes in base64, the Standard Webhooks form),
/// shown once, kept encrypted with AES-256-GCM under the <c>webhook</c> key of <c>service_secrets</c> (migration
/// 0029): a copy of the webhooks table alone does not give them away.
/// </summary>
public sealed class WebhookSecrets(NpgsqlDataSource dataSource)
{
    public const string Prefix = "whsec_";
    private const int NonceLength = 12;
    private const int TagLength = 16;

    private const string LoadKeySql = """
        SELECT secret
        FROM service_secrets
        WHERE name = 'webhook'
        """;

    private byte[]? _key;

    /// <summary>A new secret: its text (shown once) and its encrypted form (kept).</summary>
    public async Task<(string Secret, byte[] Ciphertext)> NewAsync(CancellationToken cancellationToken)
    {
        var raw = RandomNumberGenerator.GetBytes(32);
        var key = await KeyAsync(cancellationToken);
        var nonce = RandomNumberGenerator.GetBytes(NonceLength);
        var ciphertext = new byte[raw.Length];
        var tag = new byte[TagLength];
        using (var aes = new AesGcm(key, TagLength))
        {
            aes.Encrypt(nonce, raw, ciphertext, tag);
        }

        return (Prefix + Convert.ToBase64String(raw), [.. nonce, .. tag, .. ciphertext]);
    }

    /// <summary>The bytes a delivery is signed with.</summary>
    public async Task<byte[]> SigningKeyAsync(byte[] stored, CancellationToken cancellationToken)
    {
        var key = await KeyAsync(cancellationToken);
        var raw = new byte[stored.Length - NonceLength - TagLength];
        using var aes = new AesGcm(key, TagLength);
        aes.Decrypt(stored.AsSpan(0, NonceLength), stored.AsSpan(NonceLength + TagLength), stored.AsSpan(NonceLength, TagLength), raw);
        return raw;
    }

    /// <summary>The Standard Webhooks signature: <c>v1,</c> and the base64 HMAC-SHA256 of <c>{id}.{timestamp}.{body}</c>.</summary>
    public static string Sign(byte[] signingKey, string deliveryId, long timestamp, ReadOnlySpan<byte> body)
    {
        var prefix = System.Text.Encoding.UTF8.GetBytes(FormattableString.Invariant($"{deliveryId}.{timestamp}."));
        var content = new byte[prefix.Length + body.Length];
        prefix.CopyTo(content, 0);
        body.CopyTo(content.AsSpan(prefix.Length));
        return "v1," + Convert.ToBase64String(HMACSHA256.HashData(signingKey, content));
    }

    private async Task<byte[]> KeyAsync(CancellationToken cancellationToken)
    {
        if (_key is null)
        {
            await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
            var secret = await connection.ExecuteScalarAsync<byte[]>(new CommandDefinition(LoadKeySql, cancellationToken: cancellationToken))
                ?? throw new InvalidOperationException("service_secrets has no 'webhook' key: migration 0029 has not run.");
            _key = SHA256.HashData(secret);
        }

        return _key;
    }
}
