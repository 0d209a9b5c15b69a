using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Text.Json;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Net.Http.Headers;

namespace FirmwareManager.Api.Http;

/// <summary>
/// Reads a small JSON request body with the checks every write endpoint needs, each answered with a problem
/// response: 415 for anything but JSON, 413 above the endpoint's limit, 400 for bytes that are
/// not JSON (duplicate property names included, so no one has to guess which of two values counts).
/// Kestrel's own limit is raised or lowered to <c>maxBytes</c> for the request, so chunked bodies stop there too.
/// </summary>
public static class JsonBody
{
    private const int InitialChunkedBufferBytes = 16 * 1024;

    private static readonly JsonDocumentOptions ParseOptions = new()
    {
        AllowDuplicateProperties = false,
        MaxDepth = 16,
    };

    public static async Task<(JsonDocument? Document, ProblemHttpResult? Problem)> ReadAsync(
        HttpContext http, int maxBytes, CancellationToken cancellationToken)
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
                // Parsed from a stream, the document copies the bytes into an array of its own: parsed from the
                // memory, it would keep reading this buffer after the finally below has returned it to the pool,
                // where the next request on the thread rents and overwrites it.
                return (JsonDocument.Parse(new MemoryStream(buffer, 0, length, writable: false), ParseOptions), null);
            }
            catch (InvalidOperationException)
            {
                // The duplicate-name check unescapes every property name, and throws for one that is not text.
                return (null, InvalidNames());
            }
            catch (JsonException e)
            {
                return (null, Problems.Validation(
                    new Dictionary<string, string[]> { ["body"] = [$"The body is not valid JSON: {e.Message}"] },
                    "The request body is not valid JSON."));
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>The message for a string that <see cref="TryGetText"/> refuses.</summary>
    public const string InvalidTextMessage =
        "Must be valid Unicode text: no unpaired surrogate (\\ud800), no byte that is not UTF-8, no NUL (\\u0000).";

    /// <summary>
    /// The value of a JSON string, when it is text the service can keep: <see cref="JsonElement.GetString"/> throws
    /// for an escaped lone surrogate (<c>"\ud800"</c>) or bytes that are not UTF-8, and PostgreSQL refuses NUL in
    /// <c>text</c>. Each would otherwise end as a 500; callers answer 400 naming the field.
    /// </summary>
    public static bool TryGetText(this JsonElement value, [NotNullWhen(true)] out string? text)
    {
        text = null;
        if (value.ValueKind != JsonValueKind.String)
        {
            return false;
        }

        try
        {
            text = value.GetString()!;
        }
        catch (InvalidOperationException)
        {
            return false;
        }

        if (text.Contains('\0', StringComparison.Ordinal))
        {
            text = null;
            return false;
        }

        return true;
    }

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

    private static ProblemHttpResult InvalidNames() => Problems.Validation(
        new Dictionary<string, string[]> { ["body"] = [$"A property name is not text. {InvalidTextMessage}"] },
        "The request body is not valid JSON.");

    private static ProblemHttpResult TooLarge(int maxBytes) => TypedResults.Problem(
        statusCode: StatusCodes.Status413PayloadTooLarge,
        title: "Request body too large",
        detail: $"The body may be at most {maxBytes} bytes.");
}
