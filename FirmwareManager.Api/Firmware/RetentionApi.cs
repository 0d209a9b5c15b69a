using System.ComponentModel.DataAnnotations;
using Dapper;
using FirmwareManager.Api.Audit;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;
using Npgsql;

namespace FirmwareManager.Api.Firmware;

/// <param name="MaxAgeDays">Days, 1 to 36500: the project's events older than this (by their time) are deleted.</param>
public sealed record ProjectRetentionBody([property: Required] int? MaxAgeDays);

/// <summary>
/// The project's event retention: its own setting (null: none), the service's (<c>FirmwareManager:Retention:MaxAgeDays</c>,
/// null: none), the one that applies (the shorter), and the service's audit retention.
/// </summary>
public sealed record ProjectRetentionResponse(int? MaxAgeDays, int? ServiceMaxAgeDays, int? EffectiveMaxAgeDays, int? AuditMaxAgeDays);

/// <summary>
/// A project's own event retention, kept in <c>projects.event_max_age_days</c> (migration 0024) and applied by the
/// upkeep job (<see cref="RetentionService"/>). Changed by admins, in the transaction that audits it.
/// </summary>
public sealed class ProjectRetention(NpgsqlDataSource dataSource, IOptions<RetentionOptions> options)
{
    private const string ReadSql = "SELECT event_max_age_days FROM projects WHERE id = @ProjectId";

    // Locks the project's row until commit, so that two admins' changes are audited in the order they are made.
    private const string SetSql = """
        UPDATE projects AS p
        SET event_max_age_days = @MaxAgeDays
        FROM (SELECT id, event_max_age_days FROM projects WHERE id = @ProjectId FOR UPDATE) AS before
        WHERE p.id = before.id
        RETURNING before.event_max_age_days
        """;

    public async Task<ProjectRetentionResponse> GetAsync(long projectId, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        var own = await connection.ExecuteScalarAsync<int?>(new CommandDefinition(ReadSql, new { ProjectId = projectId }, cancellationToken: cancellationToken));
        return Describe(own);
    }

    public async Task<ProjectRetentionResponse> SetAsync(long projectId, int? maxAgeDays, Actor actor, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        await actor.ConfirmStillAuthorizedAsync(connection, transaction, projectId, requireAdmin: true, cancellationToken);
        var before = await connection.ExecuteScalarAsync<int?>(new CommandDefinition(
            SetSql, new { ProjectId = projectId, MaxAgeDays = maxAgeDays }, transaction, cancellationToken: cancellationToken));
        await AuditLog.RecordAsync(connection, transaction, projectId, actor, "project.retention_changed", "project", projectId,
            new { max_age_days_before = before, max_age_days = maxAgeDays });
        await transaction.CommitAsync(cancellationToken);
        return Describe(maxAgeDays);
    }

    private ProjectRetentionResponse Describe(int? own)
    {
        var service = options.Value.MaxAgeDays;
        int? effective = (own, service) switch
        {
            ({ } a, { } b) => Math.Min(a, b),
            ({ } a, null) => a,
            (null, var b) => b,
        };
        return new ProjectRetentionResponse(own, service, effective, options.Value.AuditMaxAgeDays);
    }
}

/// <summary><c>/project/retention</c>: any member reads it; admins set (PUT) or clear (DELETE) the project's own.</summary>
public static class RetentionApi
{
    public static IEndpointRouteBuilder MapRetentionApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/project/retention").WithTags("Retention").WithKeyProblems();
        group.MapGet("/", GetAsync).RequireAuthorization(Policies.Member)
            .WithSummary("The project's event retention: its own, the service's, the one that applies (the shorter), and the audit log's");
        group.MapPut("/", SetAsync).RequireAuthorization(Policies.Admin).Accepts<ProjectRetentionBody>("application/json")
            .ProducesValidationProblem()
            .WithSummary("Set the project's own event retention in days, 1-36500 (admin, audited)");
        group.MapDelete("/", ClearAsync).RequireAuthorization(Policies.Admin)
            .WithSummary("Clear the project's own event retention: only the service's applies (admin, audited)");
        return app;
    }

    private static async Task<Ok<ProjectRetentionResponse>> GetAsync(HttpContext http, ProjectRetention retention, CancellationToken cancellationToken) =>
        TypedResults.Ok(await retention.GetAsync(Caller.From(http.User).ProjectId, cancellationToken));

    private static async Task<Results<Ok<ProjectRetentionResponse>, ProblemHttpResult>> SetAsync(
        HttpContext http, ProjectRetention retention, CancellationToken cancellationToken)
    {
        var (body, problem) = await JsonBody.ReadAsync(http, RequestLimits.MaxBodyBytes, RequestJsonContext.Default.ProjectRetentionBody, cancellationToken);
        if (body is null)
        {
            return problem!;
        }

        if (body.MaxAgeDays is not (>= 1 and <= 36500))
        {
            return Problems.Validation(
                new Dictionary<string, string[]> { ["max_age_days"] = ["Must be a whole number of days from 1 to 36500 (DELETE clears it)."] },
                "Invalid retention.");
        }

        var caller = Caller.From(http.User);
        return TypedResults.Ok(await retention.SetAsync(caller.ProjectId, body.MaxAgeDays, Actor.From(caller), cancellationToken));
    }

    private static async Task<Ok<ProjectRetentionResponse>> ClearAsync(HttpContext http, ProjectRetention retention, CancellationToken cancellationToken)
    {
        var caller = Caller.From(http.User);
        return TypedResults.Ok(await retention.SetAsync(caller.ProjectId, null, Actor.From(caller), cancellationToken));
    }
}
