using System.Text.Json;
using System.Text.Json.Serialization;

namespace FirmwareManager.Api.Http;

/// <summary>
/// The converters the request records are read with (<c>RequestJsonContext</c>): each value of the wrong kind,
/// and each string that is not text the service can keep, fails as a <see cref="FieldException"/>, which
/// <see cref="JsonBody"/> answers with a 400 naming the field. The serializer's own converters would fail with a
/// message naming .NET types, and the string one lets NUL through, which PostgreSQL refuses in <c>text</c>.
/// </summary>
public static class RequestFields
{
    /// <summary>The message for a string that is not text the service can keep.</summary>
    public const string InvalidTextMessage =
        "Must be valid Unicode text: no unpaired surrogate (\\ud800), no byte that is not UTF-8, no NUL (\\u0000).";

    /// <summary>A field's value is not what the record declares. The serializer adds the path, which names the field.</summary>
    /// <param name="index">The item of an array that failed, when the converter read the array itself.</param>
    public sealed class FieldException(string message, int? index = null) : JsonException(message)
    {
        /// <summary>The error's key: the path without <c>$.</c> (<c>firmware</c>, <c>[3].status</c>, <c>serials[1]</c>).</summary>
        public string Key(string? path)
        {
            var key = path is null or "$" ? "body" : path.StartsWith("$.", StringComparison.Ordinal) ? path[2..] : path[1..];
            return index is { } i ? string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{key}[{i}]") : key;
        }
    }

    /// <summary>A JSON string that is valid Unicode without NUL.</summary>
    public sealed class Text : JsonConverter<string>
    {
        public override string Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => ReadText(ref reader);

        public override void Write(Utf8JsonWriter writer, string value, JsonSerializerOptions options) => writer.WriteStringValue(value);

        internal static string ReadText(ref Utf8JsonReader reader)
        {
            if (reader.TokenType != JsonTokenType.String)
            {
                throw new FieldException("Must be a string.");
            }

            string text;
            try
            {
                // Throws for an escaped lone surrogate and for bytes that are not UTF-8.
                text = reader.GetString()!;
            }
            catch (InvalidOperationException)
            {
                throw new FieldException(InvalidTextMessage);
            }

            return text.Contains('\0', StringComparison.Ordinal) ? throw new FieldException(InvalidTextMessage) : text;
        }
    }

    /// <summary>An array of <see cref="Text"/>; a bad item is named by its index.</summary>
    public sealed class TextArray : JsonConverter<string[]>
    {
        public override string[] Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
        {
            if (reader.TokenType != JsonTokenType.StartArray)
            {
                throw new FieldException("Must be an array of strings.");
            }

            var items = new List<string>();
            while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
            {
                try
                {
                    items.Add(Text.ReadText(ref reader));
                }
                catch (FieldException e)
                {
                    throw new FieldException(e.Message, items.Count);
                }
            }

            return [.. items];
        }

        public override void Write(Utf8JsonWriter writer, string[] value, JsonSerializerOptions options)
        {
            writer.WriteStartArray();
            foreach (var item in value)
            {
                writer.WriteStringValue(item);
            }

            writer.WriteEndArray();
        }
    }

    /// <summary>A JSON number that is a whole number within <see cref="int"/>: not 1.5, not "5".</summary>
    public sealed class WholeNumber : JsonConverter<int>
    {
        public override int Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
            reader.TokenType == JsonTokenType.Number && reader.TryGetInt32(out var value)
                ? value
                : throw new FieldException("Must be a whole number.");

        public override void Write(Utf8JsonWriter writer, int value, JsonSerializerOptions options) => writer.WriteNumberValue(value);
    }

    /// <summary>A JSON array of ids: whole numbers from 1 up; a bad item is named by its index.</summary>
    public sealed class IdArray : JsonConverter<long[]>
    {
        public override long[] Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
        {
            if (reader.TokenType != JsonTokenType.StartArray)
            {
                throw new FieldException("Must be an array of ids.");
            }

            var ids = new List<long>();
            while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
            {
                if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt64(out var id) || id < 1)
                {
                    throw new FieldException("Must be an id: a whole number from 1 up.", ids.Count);
                }

                ids.Add(id);
            }

            return [.. ids];
        }

        public override void Write(Utf8JsonWriter writer, long[] value, JsonSerializerOptions options)
        {
            writer.WriteStartArray();
            foreach (var id in value)
            {
                writer.WriteNumberValue(id);
            }

            writer.WriteEndArray();
        }
    }

    /// <summary>A JSON true or false: not "true", not 1.</summary>
    public sealed class Flag : JsonConverter<bool>
    {
        public override bool Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => reader.TokenType switch
        {
            JsonTokenType.True => true,
            JsonTokenType.False => false,
            _ => throw new FieldException("Must be true or false."),
        };

        public override void Write(Utf8JsonWriter writer, bool value, JsonSerializerOptions options) => writer.WriteBooleanValue(value);
    }

    /// <summary>A JSON number (not a string): a fraction such as 0.05.</summary>
    public sealed class Number : JsonConverter<double>
    {
        public override double Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
            reader.TokenType == JsonTokenType.Number && reader.TryGetDouble(out var value) && double.IsFinite(value)
                ? value
                : throw new FieldException("Must be a number.");

        public override void Write(Utf8JsonWriter writer, double value, JsonSerializerOptions options) => writer.WriteNumberValue(value);
    }
}
