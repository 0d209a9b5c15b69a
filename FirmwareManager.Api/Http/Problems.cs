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

    public static ProblemHttpResult Forbidden(string detail) => TypedResults.Problem(
        statusCode: StatusCodes.Status403Forbidden, title: "Forbidden", detail: detail);

    public static ProblemHttpResult NotFound(string title, string detail) => TypedResults.Problem(
        statusCode: StatusCodes.Status404NotFound, title: title, detail: detail);
}
