using System.Text;
using FirmwareManager.Api.Auth;

namespace FirmwareManager.Tests.Auth;

public sealed class IssuedDeviceKeysTests
{
    [Fact]
    public void Bulk_keys_have_the_single_key_format_and_are_stored_as_a_single_key_would_be()
    {
        var keys = IssuedDeviceKeys.Generate(2_500);

        keys.Count.Should().Be(2_500);
        var texts = Enumerable.Range(0, keys.Count).Select(keys.Key).ToArray();
        texts.Should().OnlyContain(k => System.Text.RegularExpressions.Regex.IsMatch(k, "^fmd_[0-9A-Za-z]{43}$"));
        texts.Should().OnlyHaveUniqueItems();
        for (var i = 0; i < keys.Count; i++)
        {
            keys.Hash(i).Should().Equal(ApiKeyHasher.Hash(texts[i]), "the lookup hashes the key as the device sends it");
            keys.Prefix(i).Should().Be(texts[i][..12]);
            var written = new byte[IssuedDeviceKeys.KeyLength];
            keys.CopyKeyTo(i, written).Should().Be(IssuedDeviceKeys.KeyLength);
            Encoding.ASCII.GetString(written).Should().Be(texts[i]);
        }
    }

    [Fact]
    public void Every_character_of_the_alphabet_is_drawn_and_no_other()
    {
        var keys = IssuedDeviceKeys.Generate(1_000);

        var drawn = Enumerable.Range(0, keys.Count).SelectMany(i => keys.Key(i)[4..]).ToHashSet();

        drawn.Should().BeEquivalentTo("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".ToHashSet(),
            "43,000 draws from 62 characters leave none out unless the draw is broken");
    }
}
