using System.Security.Cryptography;
using System.Text;

namespace FirmwareManager.Api.Auth;

/// <summary>
/// Device keys issued in bulk, in the same format as <see cref="IssuedKey.ForDevice"/>, held as the 43 random
/// characters of each in one ASCII array: 43 bytes a key, where a string and a record per key took about 200.
/// A bulk call keeps its keys from the first INSERT until the answer is written, seconds in which the collector
/// promotes whatever is still alive; one array the size of the answer is all it finds.
/// </summary>
public sealed class IssuedDeviceKeys
{
    /// <summary>Characters of a key: <c>fmd_</c> and the 43 random ones.</summary>
    public const int KeyLength = 4 + SecretLength;

    private const int SecretLength = 43;
    private const int PrefixLength = 12;

    private readonly byte[] _secrets;

    private IssuedDeviceKeys(byte[] secrets, int count) => (_secrets, Count) = (secrets, count);

    public int Count { get; }

    /// <summary>Draws <paramref name="count"/> keys, spreading the work over the cores.</summary>
    public static IssuedDeviceKeys Generate(int count)
    {
        var secrets = new byte[count * SecretLength];
        const int keysPerTask = 1_000;
        Parallel.For(0, (count + keysPerTask - 1) / keysPerTask, part =>
        {
            var first = part * keysPerTask;
            var keys = Math.Min(keysPerTask, count - first);
            RandomNumberGenerator.GetItems<byte>(IssuedKey.AlphabetAscii, secrets.AsSpan(first * SecretLength, keys * SecretLength));
        });
        return new IssuedDeviceKeys(secrets, count);
    }

    /// <summary>Writes key <paramref name="index"/> as UTF-8 (it is ASCII) and returns its length.</summary>
    public int CopyKeyTo(int index, Span<byte> destination)
    {
        "fmd_"u8.CopyTo(destination);
        _secrets.AsSpan(index * SecretLength, SecretLength).CopyTo(destination[4..]);
        return KeyLength;
    }

    /// <summary>What is stored to tell keys apart: the first 12 characters, as <see cref="IssuedKey.Prefix"/>.</summary>
    public string Prefix(int index)
    {
        Span<byte> key = stackalloc byte[KeyLength];
        CopyKeyTo(index, key);
        return Encoding.ASCII.GetString(key[..PrefixLength]);
    }

    /// <summary>The stored digest: <see cref="ApiKeyHasher"/>'s, from the key's bytes.</summary>
    public byte[] Hash(int index)
    {
        Span<byte> key = stackalloc byte[KeyLength];
        CopyKeyTo(index, key);
        return ApiKeyHasher.Hash(key);
    }

    /// <summary>Key <paramref name="index"/> as text; for tests, not for writing a bulk answer.</summary>
    public string Key(int index)
    {
        Span<byte> key = stackalloc byte[KeyLength];
        CopyKeyTo(index, key);
        return Encoding.ASCII.GetString(key);
    }
}
