using Microsoft.AspNetCore.Http.HttpResults;

namespace FirmwareManager.Api.Http;

/// <summary>The problem responses endpoints return; all are RFC 9457 <c>application/problem+json</c>.</summary>
public static class Problems
{
    /// <summary>400 with per-field messages under <c>errors</c>, keyed by the JSON field or route value.</summary>
    public static ProblemHttpResult Validation(IDictionary<string, string[]> errors, string title) =>
        TypedResults.Problem(new HttpValidationProblemDetails(errors)
        {
            Status = StatusCodes.Status400BadRequest,
            Title = title,
        });

    /// <summary>Ids are whole numbers from 0 to 2^63-1 in decimal: no sign, no spaces, no exponent.</summary>
    public static bool TryParseId(string text, out long id) =>
        long.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out id);

    /// <summary>400 naming the route or query value that is not an id.</summary>
    public static ProblemHttpResult InvalidId(string name, string text) => Validation(
        new Dictionary<string, string[]>
        {
            [name] = [$"Must be a whole number from 0 to 9223372036854775807, not '{(text.Length <= 40 ? text : text[..40] + "…")}'."],
        },
        "Invalid id.");

    public static ProblemHttpResult Forbidden(string detail) => TypedResults.Problem(
        statusCode: StatusCodes.Status403Forbidden, title: "Forbidden", detail: detail);

    public static ProblemHttpResult NotFound(string title, string detail) => TypedResults.Problem(
        statusCode: StatusCodes.Status404NotFound, title: title, detail: detail);

    /// <summary>404 for a thing that is not in the caller's project: the same answer whether it exists elsewhere or not.</summary>
    public static ProblemHttpResult NotFoundIn(string kind, long id) =>
        NotFound("Not found", string.Create(System.Globalization.CultureInfo.InvariantCulture, $"There is no {kind} {id} in your project."));

    public static ProblemHttpResult Conflict(string detail) => TypedResults.Problem(
        statusCode: StatusCodes.Status409Conflict, title: "Conflict", detail: detail);

    /// <summary>Writes a problem outside an endpoint (middleware, rate limiter, timeouts), with the request's trace id.</summary>
    public static async ValueTask WriteAsync(HttpContext context, int status, string title, string detail)
    {
        context.Response.StatusCode = status;
        await context.RequestServices.GetRequiredService<IProblemDetailsService>().WriteAsync(new ProblemDetailsContext
        {
            HttpContext = context,
            ProblemDetails = { Status = status, Title = title, Detail = detail },
        });
    }
}
