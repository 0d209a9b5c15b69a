using System.Globalization;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;

namespace FirmwareManager.Api.Projections;

/// <summary>
/// Reads of projected state (devices, versions, transitions, rollouts): freshness visible and waitable. The answer
/// carries <c>X-Projected-Position</c>, the project's feed position the state includes (read on the node that served
/// it, before the read; with one database host, what this instance knew of it within
/// <see cref="ProjectionOptions.PositionRefreshMs"/>, <see cref="ProjectedPositions"/>); <c>min_position=N</c> makes
/// the request wait until the projection has reached N (a report's <c>X-Feed-Position</c>), at most
/// <see cref="ProjectionOptions.MaxWaitMs"/>, then answer 503 with <c>Retry-After</c>. The wait comes after the
/// request's own checks (<see cref="ForProjectedAsync"/>, called by each endpoint once its input is valid), so
/// that a request that is wrong is told so at once, not told to try again; and a position past the end of the
/// project's feed, which no wait can reach, is a 400 at once.
/// </summary>
public static class ProjectedReads
{
    public const string Header = "X-Projected-Position";
    public const string MinPositionParameter = "min_position";

    private static readonly object ItemKey = new();

    /// <summary>
    /// Adds <c>min_position</c> and <c>X-Projected-Position</c> to a read of projected state: the parameter read here
    /// (400 when it is not a position), the wait for it in the endpoint (<see cref="WaitForMinPositionAsync"/>).
    /// </summary>
    public static RouteHandlerBuilder ReadsProjectedState(this RouteHandlerBuilder endpoint) =>
        endpoint.AddEndpointFilter(ReadMinPositionAsync)
            .AddOpenApiOperationTransformer((operation, _, _) =>
            {
                operation.Parameters ??= [];
                operation.Parameters.Add(new Microsoft.OpenApi.OpenApiParameter
                {
                    Name = MinPositionParameter,
                    In = Microsoft.OpenApi.ParameterLocation.Query,
                    Description = "Wait until the project's projected state includes this feed position (a report's X-Feed-Position), " +
                                  "at most 5 s by default; then 503 with Retry-After and position_reached. A position past the end of the project's feed is a 400 at once.",
                    Schema = new Microsoft.OpenApi.OpenApiSchema { Type = Microsoft.OpenApi.JsonSchemaType.Integer, Format = "int64", Minimum = "0" },
                });
                if (operation.Responses?.TryGetValue("200", out var ok) == true && ok is Microsoft.OpenApi.OpenApiResponse response)
                {
                    response.Headers ??= new Dictionary<string, Microsoft.OpenApi.IOpenApiHeader>();
                    response.Headers[Header] = new Microsoft.OpenApi.OpenApiHeader
                    {
                        Description = "A position of the project's feed that the answer's state includes: with min_position, at least that; with one database host, " +
                                      "what this instance saw of the projection within FirmwareManager:Projections:PositionRefreshMs (1 s), so the state may be further on.",
                        Schema = new Microsoft.OpenApi.OpenApiSchema { Type = Microsoft.OpenApi.JsonSchemaType.Integer, Format = "int64" },
                    };
                }

                return Task.CompletedTask;
            })
            .ProducesProblem(StatusCodes.Status503ServiceUnavailable);

    /// <summary>
    /// The read context for <paramref name="caller"/>'s read of its project's projected state, once the projection has
    /// reached the request's <c>min_position</c>; with the problem to answer instead when it has not
    /// (<see cref="WaitForMinPositionAsync"/>). An endpoint asks for it once its own input is valid.
    /// </summary>
    public static async Task<(ReadContext Read, ProblemHttpResult? Behind)> ForProjectedAsync(this ReadRouting reads, Caller caller, HttpContext http)
    {
        var behind = await WaitForMinPositionAsync(http, caller);
        return (reads.ForProjected(caller, http), behind);
    }

    private static ReadContext ForProjected(this ReadRouting reads, Caller caller, HttpContext http)
    {
        var read = reads.For(caller);
        read.ProjectionOf = caller.ProjectId;
        read.MinProjected = http.Items.TryGetValue(ItemKey, out var min) ? (long)min! : 0;
        http.Response.OnStarting(() =>
        {
            if (read.Projected is { } position)
            {
                http.Response.Headers[Header] = position.ToString(CultureInfo.InvariantCulture);
            }

            return Task.CompletedTask;
        });
        return read;
    }

    // min_position, read before the endpoint runs: 400 when it is not a position; else kept for WaitForMinPositionAsync.
    private static async ValueTask<object?> ReadMinPositionAsync(EndpointFilterInvocationContext invocation, EndpointFilterDelegate next)
    {
        var http = invocation.HttpContext;
        var values = http.Request.Query[MinPositionParameter];
        if (values.Count == 0)
        {
            return await next(invocation);
        }

        if (values.Count > 1 || !long.TryParse(values[0], NumberStyles.None, CultureInfo.InvariantCulture, out var min))
        {
            return InvalidMinPosition("Must be a feed position: a whole number from 0 (a report's X-Feed-Position).");
        }

        http.Items[ItemKey] = min;
        return await next(invocation);
    }

    /// <summary>
    /// Waits until the caller's project's projection has reached the request's <c>min_position</c> (none: at once), at
    /// most <see cref="ProjectionOptions.MaxWaitMs"/>; null when it has, else the problem to answer: 503 with
    /// <c>Retry-After</c> naming the position reached, or 400 for a position the project's feed has not reached (no
    /// report was answered with it).
    /// </summary>
    private static async Task<ProblemHttpResult?> WaitForMinPositionAsync(HttpContext http, Caller caller)
    {
        if (!http.Items.TryGetValue(ItemKey, out var value) || value is not long min)
        {
            return null;
        }

        var steps = http.RequestServices.GetRequiredService<ProjectionSteps>();
        var options = http.RequestServices.GetRequiredService<IOptions<ProjectionOptions>>().Value;
        var deadline = Environment.TickCount64 + options.MaxWaitMs;
        var pause = 5;
        var feedChecked = false;
        long reached;
        while ((reached = await steps.PositionAsync(caller.ProjectId, http.RequestAborted)) < min)
        {
            if (!feedChecked)
            {
                // Asked once, when the projection is behind: the feed's end is on the primary, where every report's
                // position was taken before it was answered.
                feedChecked = true;
                var feedEnd = await steps.LastArrivalAsync(caller.ProjectId, http.RequestAborted);
                if (feedEnd < min)
                {
                    return InvalidMinPosition(string.Create(CultureInfo.InvariantCulture,
                        $"Past the end of the project's feed, at position {feedEnd}: a position is one a report of this project was answered with (X-Feed-Position)."));
                }
            }

            var left = deadline - Environment.TickCount64;
            if (left <= 0)
            {
                http.Response.Headers.RetryAfter = "1";
                return TypedResults.Problem(
                    statusCode: StatusCodes.Status503ServiceUnavailable,
                    title: "The projection has not reached that position yet.",
                    detail: string.Create(CultureInfo.InvariantCulture,
                        $"The project's projected state includes its feed up to position {reached}, not yet {min}. Try again shortly."),
                    extensions: new Dictionary<string, object?> { ["position_reached"] = reached, ["min_position"] = min });
            }

            await Task.Delay(TimeSpan.FromMilliseconds(Math.Min(pause, left)), http.RequestAborted);
            pause = Math.Min(pause * 2, 50);
        }

        return null;
    }

    private static ProblemHttpResult InvalidMinPosition(string message) =>
        Problems.Validation(new Dictionary<string, string[]> { [MinPositionParameter] = [message] }, "Invalid query parameters.");
}
