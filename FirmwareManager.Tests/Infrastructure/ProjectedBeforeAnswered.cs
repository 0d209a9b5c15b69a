using Dapper;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Npgsql;

namespace FirmwareManager.Tests.Infrastructure;

/// <summary>
/// For the tests' service only: a report's answer (one that carries <c>X-Feed-Position</c>) leaves once every
/// project's projection has reached its feed, so that a test that reports and then reads derived state reads what
/// the real background projection made of it, as a client that passes <c>min_position</c> would (waiting for every
/// project, not only the report's: a test may report to several). Tests of the projection's own timing
/// (ProjectionTests) run without it. Waits at most 10 s; a projection that never catches up then fails the test's
/// own assertions.
/// </summary>
internal sealed class ProjectedBeforeAnswered(string connectionString) : IStartupFilter
{
    // SELECT 1, not an empty select list: Citus plans this subquery apart, and refuses one without columns.
    private const string BehindSql = """
        SELECT EXISTS (
            SELECT 1
            FROM project_event_arrivals AS a
            LEFT JOIN project_projections AS p ON p.project_id = a.project_id
            WHERE a.last_arrival > COALESCE(p.position, 0))
        """;

    public Action<IApplicationBuilder> Configure(Action<IApplicationBuilder> next) => app =>
    {
        app.Use(async (context, nextMiddleware) =>
        {
            if (HttpMethods.IsPost(context.Request.Method))
            {
                context.Response.OnStarting(async () =>
                {
                    if (context.Response.StatusCode is >= 200 and < 300 && context.Response.Headers.ContainsKey("X-Feed-Position"))
                    {
                        await WaitUntilProjectedAsync();
                    }
                });
            }

            await nextMiddleware();
        });
        next(app);
    };

    // A database that fails or is gone (the outage and fault tests) ends the wait: the answer goes as it is.
    private async Task WaitUntilProjectedAsync()
    {
        try
        {
            await using var connection = new NpgsqlConnection(connectionString);
            await connection.OpenAsync();
            var deadline = Environment.TickCount64 + 10_000;
            while (await connection.ExecuteScalarAsync<bool>(BehindSql) && Environment.TickCount64 < deadline)
            {
                await Task.Delay(5);
            }
        }
        catch (Exception e) when (e is NpgsqlException or TimeoutException or InvalidOperationException)
        {
        }
    }
}
