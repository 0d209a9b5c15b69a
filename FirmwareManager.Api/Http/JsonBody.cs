using System.Buffers;
using System.Text.Json;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Net.Http.Headers;

namespace FirmwareManager.Api.Http;

/// <summary>
/// Reads a small JSON request body with the checks every write endpoint needs, each answered with a problem
/// response: 415 for anything but JSON, 413 above <see cref="RequestLimits.MaxBodyBytes"/>, 400 for bytes that are
/// not JSON (duplicate property names included, so no one has to guess which of two values counts).
/// </summary>
public static class JsonBody
{
    private static readonly JsonDocumentOptions ParseOptions = new()
    {
        AllowDuplicateProperties = false,
        MaxDepth = 16,
    };

    public static async Task<(JsonDocument? Document, ProblemHttpResult? Problem)> ReadAsync(HttpRequest request, CancellationToken cancellationToken)
    {
        if (!IsJson(request.ContentType))
        {
            return (null, TypedResults.Problem(
                statusCode: StatusCodes.Status415UnsupportedMediaType,
                title: "Unsupported media type",
                detail: "Send the body as JSON, with Content-Type: application/json."));
        }

        if (request.ContentLength > RequestLimits.MaxBodyBytes)
        {
            return (null, TooLarge());
        }

        var buffer = ArrayPool<byte>.Shared.Rent(RequestLimits.MaxBodyBytes + 1);
        try
        {
            var length = 0;
            int read;
            try
            {
                while ((read = await request.Body.ReadAsync(buffer.AsMemory(length, RequestLimits.MaxBodyBytes + 1 - length), cancellationToken)) > 0)
                {
                    length += read;
                    if (length > RequestLimits.MaxBodyBytes)
                    {
                        return (null, TooLarge());
                    }
                }
            }
            catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge)
            {
                return (null, TooLarge());
            }

            try
            {
                return (JsonDocument.Parse(buffer.AsMemory(0, length), ParseOptions), null);
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

    private static ProblemHttpResult TooLarge() => TypedResults.Problem(
        statusCode: StatusCodes.Status413PayloadTooLarge,
        title: "Request body too large",
        detail: $"The body may be at most {RequestLimits.MaxBodyBytes} bytes.");
}
