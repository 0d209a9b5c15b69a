using System.Security.Cryptography;
using System.Text;

namespace FirmwareManager.Api.Auth;

/// <summary>
/// Keys are stored and looked up only as SHA-256(UTF-8 key). Keys the service issues carry at least 128 random
/// bits, so the digest cannot be reversed by guessing; the lookup is an equality match on the digest, which
/// reveals nothing about the key through timing.
/// </summary>
public static class ApiKeyHasher
{
    /// <summary>Longer header values are rejected before they are hashed.</summary>
    public const int MaxKeyLength = 256;

    public static byte[] Hash(string key) => Hash(Encoding.UTF8.GetBytes(key));

    /// <summary>The same digest from the key's UTF-8 bytes, for keys that were never a string (bulk enrollment).</summary>
    public static byte[] Hash(ReadOnlySpan<byte> utf8Key) => SHA256.HashData(utf8Key);
}
