using FirmwareManager.Api.Database;
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
        // After AddProblemDetails' own writer, so that it answers only what that one declines.
        services.AddSingleton<IProblemDetailsWriter>(provider => new ProblemJsonWhateverIsAccepted(provider));
        services.AddExceptionHandler<ClientFaultHandler>();
        services.AddExceptionHandler<DatabaseUnavailableHandler>();
        return services;
    }
}

/// <summary>
/// ASP.NET Core's problem writer declines a request whose <c>Accept</c> names no JSON type (a browser's
/// <c>text/html</c>, a <c>text/csv</c> export), and with no writer left, an error answer became a 500. An error is
/// answered with its own status and an <c>application/problem+json</c> body whatever the client accepts: a status
/// the client cannot misread, and a body it may ignore (RFC 9110 allows a response the Accept header did not ask for).
/// </summary>
internal sealed class ProblemJsonWhateverIsAccepted(IServiceProvider services) : IProblemDetailsWriter
{
    private IProblemDetailsWriter? _json;

    public bool CanWrite(ProblemDetailsContext context) => true;

    // The framework's writer writes whatever it is given (it checks Accept only in CanWrite): defaults for the
    // status, the trace id, the JSON options; resolved on first use, when the container holds every writer.
    public ValueTask WriteAsync(ProblemDetailsContext context) =>
        (_json ??= services.GetServices<IProblemDetailsWriter>().First(w => w is not ProblemJsonWhateverIsAccepted)).WriteAsync(context);
}

/// <summary>
/// Failures that are the client's doing, not the service's: a body that ends before its Content-Length (a
/// device losing its link mid-upload), a body sent too slowly, a client that hangs up while its request runs.
/// These are 4xx (Kestrel's own status for the first two; 499, as nginx logs it, for a client that left and
/// will never read the answer), logged without a stack trace, never a 500. Nothing was stored: the request's
/// transaction, if it had begun, is rolled back.
/// </summary>
internal sealed class ClientFaultHandler(IProblemDetailsService problems, ILogger<ClientFaultHandler> logger) : IExceptionHandler
{
    public const int ClientClosedRequest = 499;

    public async ValueTask<bool> TryHandleAsync(HttpContext httpContext, Exception exception, CancellationToken cancellationToken)
    {
        if (exception is OperationCanceledException && httpContext.RequestAborted.IsCancellationRequested)
        {
            logger.LogInformation("The client closed the connection before the answer");
            httpContext.Response.StatusCode = ClientClosedRequest;
            return true;
        }

        if (exception is LimitReachedException limit)
        {
            logger.LogInformation("A change would pass a limit: {Limit}", limit.Message);
            httpContext.Response.StatusCode = StatusCodes.Status409Conflict;
            return await problems.TryWriteAsync(new ProblemDetailsContext
            {
                HttpContext = httpContext,
                ProblemDetails = { Status = StatusCodes.Status409Conflict, Title = "Limit reached", Detail = $"{limit.Message} Nothing was stored." },
            });
        }

        if (exception is not BadHttpRequestException badRequest)
        {
            return false;
        }

        logger.LogInformation("Bad request from the client: {Reason}", badRequest.Message);
        httpContext.Response.StatusCode = badRequest.StatusCode;
        return await problems.TryWriteAsync(new ProblemDetailsContext
        {
            HttpContext = httpContext,
            ProblemDetails =
            {
                Status = badRequest.StatusCode,
                Title = "Bad request",
                Detail = $"{badRequest.Message} Nothing was stored.",
            },
        });
    }
}

/// <summary>
/// The database being down or unreachable, a conflict that retries did not resolve, or more key lookups waiting
/// than the service holds: not the client's fault and not a bug. 503 with Retry-After, so devices retry later
/// instead of dropping the report. Everything else falls through to a plain 500.
/// </summary>
internal sealed class DatabaseUnavailableHandler(IProblemDetailsService problems, ILogger<DatabaseUnavailableHandler> logger) : IExceptionHandler
{
    public const int RetryAfterSeconds = 5;

    public async ValueTask<bool> TryHandleAsync(HttpContext httpContext, Exception exception, CancellationToken cancellationToken)
    {
        var (retryAfter, detail) = exception switch
        {
            ServiceOverloadedException overloaded => (overloaded.RetryAfterSeconds, overloaded.Message),
            _ when DatabaseFailures.IsConflict(exception) => (1, "The change met a concurrent one and could not be ordered after retries. Retry in 1 second; nothing was stored."),
            _ when DatabaseFailures.IsCommitOutcomeUnknown(exception) => (RetryAfterSeconds,
                $"A database node went away while the change was committed, so it may or may not be stored. Retry in {RetryAfterSeconds} seconds: a repeated report is stored once."),
            _ when DatabaseFailures.IsDatabaseUnavailable(exception) => (RetryAfterSeconds, $"The database is not reachable. Retry in {RetryAfterSeconds} seconds; nothing was stored."),
            _ when DatabaseFailures.IsBeingPartitioned(exception) => (RetryAfterSeconds,
                $"The events table is being partitioned (a migration is running), and this report's time is after the boundary. Retry in {RetryAfterSeconds} seconds; nothing was stored."),
            _ => (0, null),
        };
        if (detail is null)
        {
            return false;
        }

        logger.LogWarning("Service unavailable: {Reason}", exception.Message);
        httpContext.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
        httpContext.Response.Headers.RetryAfter = retryAfter.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return await problems.TryWriteAsync(new ProblemDetailsContext
        {
            HttpContext = httpContext,
            Exception = exception,
            ProblemDetails =
            {
                Status = StatusCodes.Status503ServiceUnavailable,
                Title = "Service temporarily unavailable",
                Detail = detail,
            },
        });
    }
}

/// <summary>More work of one kind waits than the service holds (key lookups, say): answered 503 with the message and <c>Retry-After</c>.</summary>
public class ServiceOverloadedException(string message, int retryAfterSeconds) : Exception(message)
{
    public int RetryAfterSeconds { get; } = retryAfterSeconds;
}
