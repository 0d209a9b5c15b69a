using System.Buffers;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Net.Http.Headers;

namespace FirmwareManager.Api.Http;

/// <summary>
/// Reads a small JSON request body into the record the endpoint documents, with the checks every write endpoint
/// needs, each answered with a problem response: 415 for anything but JSON, 413 above the endpoint's limit, 400 for
/// bytes that are not JSON, nested deeper than 16, or naming a property twice (so no one has to guess which of two
/// values counts), and 400 naming the field for a value of the wrong kind or text the service cannot keep
/// (<see cref="RequestFields"/>). Properties the record does not have are ignored.
/// Kestrel's own limit is raised or lowered to <c>maxBytes</c> for the request, so chunked bodies stop there too.
/// </summary>
public static class JsonBody
{
    private const int InitialChunkedBufferBytes = 16 * 1024;

    public static async Task<(T? Body, ProblemHttpResult? Problem)> ReadAsync<T>(
        HttpContext http, int maxBytes, JsonTypeInfo<T> typeInfo, CancellationToken cancellationToken)
        where T : class
    {
        var request = http.Request;
        if (http.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } sizeLimit)
        {
            sizeLimit.MaxRequestBodySize = maxBytes;
        }

        if (!IsJson(request.ContentType))
        {
            return (null, TypedResults.Problem(
                statusCode: StatusCodes.Status415UnsupportedMediaType,
                title: "Unsupported media type",
                detail: "Send the body as JSON, with Content-Type: application/json."));
        }

        if (request.ContentLength > maxBytes)
        {
            return (null, TooLarge(maxBytes));
        }

        // Sized to the body, not to the limit: a 200-byte report must not take a 128 KiB array, nor a bulk call's
        // {"count": n} a 32 MiB one (kept by the shared pool ever after). Without a Content-Length it starts small
        // and doubles, up to one byte past the limit.
        var buffer = ArrayPool<byte>.Shared.Rent(request.ContentLength is { } declared
            ? (int)declared + 1
            : Math.Min(maxBytes + 1, InitialChunkedBufferBytes));
        try
        {
            var length = 0;
            int read;
            try
            {
                while ((read = await request.Body.ReadAsync(buffer.AsMemory(length, Math.Min(buffer.Length, maxBytes + 1) - length), cancellationToken)) > 0)
                {
                    length += read;
                    if (length > maxBytes)
                    {
                        return (null, TooLarge(maxBytes));
                    }

                    if (length == buffer.Length)
                    {
                        var larger = ArrayPool<byte>.Shared.Rent((int)Math.Min(maxBytes + 1L, 2L * buffer.Length));
                        buffer.AsSpan(0, length).CopyTo(larger);
                        ArrayPool<byte>.Shared.Return(buffer);
                        buffer = larger;
                    }
                }
            }
            catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge)
            {
                return (null, TooLarge(maxBytes));
            }

            try
            {
                // The record owns copies of its strings: nothing refers to the buffer once it is back in the pool.
                var body = JsonSerializer.Deserialize(buffer.AsSpan(0, length), typeInfo);
                return body is null ? (null, Invalid("body", Shape(typeInfo))) : (body, null);
            }
            catch (JsonException e)
            {
                return (null, Invalid(e, typeInfo));
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>The field a failed read names, or <c>body</c>, and why.</summary>
    private static ProblemHttpResult Invalid<T>(JsonException e, JsonTypeInfo<T> typeInfo) => e switch
    {
        // A value of the wrong kind or bad text, from the converters: the serializer's path names the field.
        RequestFields.FieldException field => Invalid(field.Key(e.Path), field.Message),
        // The reader's: not JSON, or nested too deep.
        { InnerException: JsonException reader } => Invalid("body", $"The body is not valid JSON: {reader.Message}"),
        // Values are read by the converters above, so the reader's text errors left are in property names (matched
        // against the record's and compared for duplicates).
        { InnerException: InvalidOperationException } => Invalid("body", $"A property name is not text. {RequestFields.InvalidTextMessage}"),
        { Path: "$" } => Invalid("body", Shape(typeInfo)),
        // The serializer's own message: a property that appears twice.
        _ => Invalid("body", e.Message),
    };

    private static string Shape(JsonTypeInfo typeInfo) =>
        typeInfo.Kind == JsonTypeInfoKind.Enumerable ? "Must be a JSON array." : "Must be a JSON object.";

    private static ProblemHttpResult Invalid(string field, string message) => Problems.Validation(
        new Dictionary<string, string[]> { [field] = [message] }, "The request body is not valid.");

    private static bool IsJson(string? contentType)
    {
        if (!MediaTypeHeaderValue.TryParse(contentType, out var mediaType))
        {
            return false;
        }

        var charset = mediaType.Charset;
        return (mediaType.MediaType.Equals("application/json", StringComparison.OrdinalIgnoreCase) ||
                mediaType.Suffix.Equals("json", StringComparison.OrdinalIgnoreCase)) &&
               (!charset.HasValue || charset.Equals("utf-8", StringComparison.OrdinalIgnoreCase));
    }

    private static ProblemHttpResult TooLarge(int maxBytes) => TypedResults.Problem(
        statusCode: StatusCodes.Status413PayloadTooLarge,
        title: "Request body too large",
        detail: $"The body may be at most {maxBytes} bytes.");
}
