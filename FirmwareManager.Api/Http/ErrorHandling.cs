using FirmwareManager.Api.Observability;
using Microsoft.AspNetCore.Diagnostics;
using Npgsql;

namespace FirmwareManager.Api.Http;

public static class ErrorHandling
{
    /// <summary>RFC 9457 problem details for every error the service produces, with the request's trace id.</summary>
    public static IServiceCollection AddErrorHandling(this IServiceCollection services)
    {
        services.AddProblemDetails(options => options.CustomizeProblemDetails = context =>
            context.ProblemDetails.Extensions["trace_id"] = ObservabilityExtensions.TraceId(context.HttpContext));
        services.AddExceptionHandler<DatabaseUnavailableHandler>();
        return services;
    }
}

/// <summary>
/// The database being down or unreachable is not the client's fault and not a bug: 503 with Retry-After, so
/// devices retry later instead of dropping the report. Everything else falls through to a plain 500.
/// </summary>
internal sealed class DatabaseUnavailableHandler(IProblemDetailsService problems, ILogger<DatabaseUnavailableHandler> logger) : IExceptionHandler
{
    public const int RetryAfterSeconds = 5;

    public async ValueTask<bool> TryHandleAsync(HttpContext httpContext, Exception exception, CancellationToken cancellationToken)
    {
        if (!IsDatabaseUnavailable(exception))
        {
            return false;
        }

        logger.LogWarning("Database unavailable: {Reason}", exception.Message);
        httpContext.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
        httpContext.Response.Headers.RetryAfter = RetryAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return await problems.TryWriteAsync(new ProblemDetailsContext
        {
            HttpContext = httpContext,
            Exception = exception,
            ProblemDetails =
            {
                Status = StatusCodes.Status503ServiceUnavailable,
                Title = "Service temporarily unavailable",
                Detail = $"The database is not reachable. Retry in {RetryAfterSeconds} seconds; nothing was stored.",
            },
        });
    }

    private static bool IsDatabaseUnavailable(Exception exception) => exception switch
    {
        NpgsqlException { IsTransient: true } => true,
        PostgresException { SqlState: "57P01" or "57P02" or "57P03" or "53300" } => true,
        TimeoutException => true,
        _ => exception.InnerException is not null && IsDatabaseUnavailable(exception.InnerException),
    };
}
