using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;

namespace FirmwareManager.Api;

/// <summary>RFC 3339 date-times with an explicit offset and at most six fractional digits (PostgreSQL keeps microseconds).</summary>
public static partial class Rfc3339
{
    [GeneratedRegex(
        @"^(?<y>[0-9]{4})-(?<mo>[0-9]{2})-(?<d>[0-9]{2})[Tt](?<h>[0-9]{2}):(?<mi>[0-9]{2}):(?<s>[0-9]{2})" +
        @"(?:\.(?<f>[0-9]{1,6}))?(?:(?<z>[Zz])|(?<sign>[+-])(?<oh>[0-9]{2}):(?<om>[0-9]{2}))\z",
        RegexOptions.CultureInvariant | RegexOptions.ExplicitCapture)]
    private static partial Regex Syntax();

    /// <summary>Parses to a UTC <see cref="DateTime"/>; false for anything that is not a real instant in that syntax.</summary>
    public static bool TryParse(string text, out DateTime utc)
    {
        utc = default;
        var match = Syntax().Match(text);
        if (!match.Success)
        {
            return false;
        }

        int Part(string name) => int.Parse(match.Groups[name].ValueSpan, NumberStyles.None, CultureInfo.InvariantCulture);

        var offsetMinutes = 0;
        if (!match.Groups["z"].Success)
        {
            var (hours, minutes) = (Part("oh"), Part("om"));
            if (hours > 23 || minutes > 59)
            {
                return false;
            }

            offsetMinutes = (match.Groups["sign"].ValueSpan[0] == '-' ? -1 : 1) * (hours * 60 + minutes);
        }

        var fraction = match.Groups["f"];
        var ticks = fraction.Success
            ? int.Parse(fraction.Value.PadRight(7, '0'), NumberStyles.None, CultureInfo.InvariantCulture)
            : 0;

        try
        {
            // Seconds 60 (a leap second) and impossible dates throw here and are rejected.
            var local = new DateTime(Part("y"), Part("mo"), Part("d"), Part("h"), Part("mi"), Part("s"), DateTimeKind.Utc);
            utc = local.AddTicks(ticks).AddMinutes(-offsetMinutes);
            return utc.Year >= 1;
        }
        catch (ArgumentOutOfRangeException)
        {
            return false;
        }
    }

    /// <summary>The one format the API writes: UTC with microseconds, as the reference API did (yyyy-MM-ddTHH:mm:ss.ffffffZ).</summary>
    /// <remarks>
    /// Written digit by digit: every event of every page and export has two of these, and the custom format string
    /// that wrote the same text was 1.1% of the API's samples on history reads, half of what building the page's
    /// response objects cost (perf during bench/history-baselines.sh). The fraction is cut, not rounded, to the
    /// microsecond, as "ffffff" did.
    /// </remarks>
    public static string Format(DateTime utc) => string.Create(Length, utc, static (text, at) =>
    {
        Span<byte> utf8 = stackalloc byte[Length];
        Write(utf8, at);
        for (var i = 0; i < Length; i++)
        {
            text[i] = (char)utf8[i];
        }
    });

    /// <summary>The length of <see cref="Format"/>'s text.</summary>
    public const int Length = 27;

    /// <summary><see cref="Format"/>'s text as UTF-8 (ASCII) into <paramref name="text"/>, <see cref="Length"/> bytes.</summary>
    public static void Write(Span<byte> text, DateTime utc)
    {
        var at = utc.ToUniversalTime();
        Digits(text[..4], at.Year);
        text[4] = (byte)'-';
        Digits(text[5..7], at.Month);
        text[7] = (byte)'-';
        Digits(text[8..10], at.Day);
        text[10] = (byte)'T';
        Digits(text[11..13], at.Hour);
        text[13] = (byte)':';
        Digits(text[14..16], at.Minute);
        text[16] = (byte)':';
        Digits(text[17..19], at.Second);
        text[19] = (byte)'.';
        Digits(text[20..26], (int)(at.Ticks % TimeSpan.TicksPerSecond / 10));
        text[26] = (byte)'Z';
    }

    private static void Digits(Span<byte> text, int value)
    {
        for (var i = text.Length - 1; i >= 0; i--)
        {
            text[i] = (byte)('0' + (value % 10));
            value /= 10;
        }
    }
}

/// <summary>
/// A time in a response as <see cref="Rfc3339.Format"/> writes it, straight into the response's UTF-8: an event's two
/// times as strings were 7.7% of a history read's allocated bytes (dotnet-trace during bench/history-baselines.sh,
/// 2026-12-06). Reads the same syntax <see cref="Rfc3339.TryParse"/> accepts.
/// </summary>
public sealed class Rfc3339JsonConverter : JsonConverter<DateTime>
{
    public override DateTime Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        reader.TokenType == JsonTokenType.String && Rfc3339.TryParse(reader.GetString()!, out var utc)
            ? utc
            : throw new JsonException("Expected an RFC 3339 date-time with an offset.");

    public override void Write(Utf8JsonWriter writer, DateTime value, JsonSerializerOptions options)
    {
        Span<byte> text = stackalloc byte[Rfc3339.Length];
        Rfc3339.Write(text, value);
        writer.WriteStringValue(text);
    }
}
