using System.Globalization;
using Dapper;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Projections;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace FirmwareManager.Tests.Infrastructure;

/// <summary>
/// For the tests' service only: a report's answer (one that carries <c>X-Feed-Position</c>) leaves once its project's
/// projection has reached that position, so that a test that reports and then reads derived state reads what the
/// real background projection made of it, as a client that passes <c>min_position</c> would. Tests of the
/// projection's own timing (ProjectionTests) run without it. It waits for this instance's projector to say it stepped
/// past the position, and looks at the stored position every 50 ms meanwhile (another instance on the same database
/// may be the one that projects it): one project's row, one shard on Citus. Waits at most 10 s; a projection that
/// never catches up then fails the test's own assertions.
/// </summary>
internal sealed class ProjectedBeforeAnswered(string connectionString) : IStartupFilter
{
    private const string PositionSql = """
        SELECT COALESCE(max(position), 0)
        FROM project_projections
        WHERE project_id = @ProjectId
        """;

    public Action<IApplicationBuilder> Configure(Action<IApplicationBuilder> next) => app =>
    {
        var projector = app.ApplicationServices.GetService<Projector>();
        app.Use(async (context, nextMiddleware) =>
        {
            if (HttpMethods.IsPost(context.Request.Method))
            {
                context.Response.OnStarting(async () =>
                {
                    if (context.Response.StatusCode is >= 200 and < 300
                        && long.TryParse(context.Response.Headers["X-Feed-Position"], NumberStyles.None, CultureInfo.InvariantCulture, out var position)
                        && context.User.Identity?.IsAuthenticated == true)
                    {
                        await WaitUntilProjectedAsync(projector, Caller.From(context.User).ProjectId, position);
                    }
                });
            }

            await nextMiddleware();
        });
        next(app);
    };

    // A database that fails or is gone (the outage and fault tests) ends the wait: the answer goes as it is.
    private async Task WaitUntilProjectedAsync(Projector? projector, long projectId, long position)
    {
        var stepped = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        void OnStepped(long project, long reached)
        {
            if (project == projectId && reached >= position)
            {
                stepped.TrySetResult();
            }
        }

        if (projector is not null)
        {
            projector.Stepped += OnStepped;
        }

        try
        {
            await using var connection = new NpgsqlConnection(connectionString);
            await connection.OpenAsync();
            var deadline = Environment.TickCount64 + 10_000;
            while (!stepped.Task.IsCompleted
                   && await connection.ExecuteScalarAsync<long>(PositionSql, new { ProjectId = projectId }) < position
                   && Environment.TickCount64 < deadline)
            {
                await Task.WhenAny(stepped.Task, Task.Delay(50));
            }
        }
        catch (Exception e) when (e is NpgsqlException or TimeoutException or InvalidOperationException)
        {
        }
        finally
        {
            if (projector is not null)
            {
                projector.Stepped -= OnStepped;
            }
        }
    }
}
