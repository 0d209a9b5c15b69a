using System.Security.Cryptography;

namespace FirmwareManager.Api.Auth;

/// <summary>
/// A newly issued API key: <c>fmd_</c> (device) or <c>fmm_</c> (member) and 43 base62 characters (256 random
/// bits). The prefix lets secret scanners recognise a leaked key; <see cref="Prefix"/> (the first 12 characters,
/// 48 of the 256 bits) is stored to tell keys apart. Only <see cref="Hash"/> is stored; <see cref="Key"/> is shown
/// once, in the response that creates it.
/// </summary>
public sealed record IssuedKey(string Key, string Prefix, byte[] Hash)
{
    public const string DevicePrefix = "fmd_";
    public const string MemberPrefix = "fmm_";
    private const int PrefixLength = 12;
    private const string Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

    /// <summary>The same 62 characters as ASCII bytes, for <see cref="IssuedDeviceKeys"/>.</summary>
    internal static readonly byte[] AlphabetAscii = System.Text.Encoding.ASCII.GetBytes(Alphabet);

    public static IssuedKey ForDevice() => Create(DevicePrefix);

    public static IssuedKey ForMember() => Create(MemberPrefix);

    private static IssuedKey Create(string kind)
    {
        // 43 characters drawn without modulo bias: 62^43 > 2^256.
        var key = kind + RandomNumberGenerator.GetString(Alphabet, 43);
        return new IssuedKey(key, key[..PrefixLength], ApiKeyHasher.Hash(key));
    }
}
