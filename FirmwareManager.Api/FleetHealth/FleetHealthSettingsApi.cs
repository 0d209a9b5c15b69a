using System.ComponentModel.DataAnnotations;
using Dapper;
using FirmwareManager.Api.Audit;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Npgsql;

namespace FirmwareManager.Api.FleetHealth;

/// <param name="SilentAfterHours">Hours, 1 to 8760: a device whose newest report is installed or updated and that has reported nothing for longer counts as silent after its update.</param>
public sealed record FleetHealthSettingsBody([property: Required] int? SilentAfterHours);

/// <summary>The project's own setting (null: none) and the one that applies (the default when none).</summary>
public sealed record FleetHealthSettingsResponse(int? SilentAfterHours, int EffectiveSilentAfterHours);

/// <summary>
/// The project's fleet-health settings, kept in <c>projects.silent_after_hours</c> (migration 0027). Changed by
/// admins, in the transaction that audits it.
/// </summary>
public sealed class FleetHealthSettings(NpgsqlDataSource dataSource)
{
    public const int DefaultSilentAfterHours = 24;

    private const string ReadSql = "SELECT silent_after_hours FROM projects WHERE id = @ProjectId";

    // Locks the project's row until commit, so that two admins' changes are audited in the order they are made.
    private const string SetSql = """
        UPDATE projects AS p
        SET silent_after_hours = @SilentAfterHours
        FROM (SELECT id, silent_after_hours FROM projects WHERE id = @ProjectId FOR UPDATE) AS before
        WHERE p.id = before.id
        RETURNING before.silent_after_hours
        """;

    public async Task<FleetHealthSettingsResponse> GetAsync(long projectId, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        return Describe(await connection.ExecuteScalarAsync<int?>(new CommandDefinition(ReadSql, new { ProjectId = projectId }, cancellationToken: cancellationToken)));
    }

    public async Task<FleetHealthSettingsResponse> SetAsync(long projectId, int? silentAfterHours, Actor actor, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        await actor.ConfirmStillAuthorizedAsync(connection, transaction, projectId, requireAdmin: true, cancellationToken);
        var before = await connection.ExecuteScalarAsync<int?>(new CommandDefinition(
            SetSql, new { ProjectId = projectId, SilentAfterHours = silentAfterHours }, transaction, cancellationToken: cancellationToken));
        await AuditLog.RecordAsync(connection, transaction, projectId, actor, "project.fleet_health_changed", "project", projectId,
            new { silent_after_hours_before = before, silent_after_hours = silentAfterHours });
        await transaction.CommitAsync(cancellationToken);
        return Describe(silentAfterHours);
    }

    private static FleetHealthSettingsResponse Describe(int? own) => new(own, own ?? DefaultSilentAfterHours);
}

/// <summary><c>/project/fleet-health</c>: any member reads it; admins set (PUT) or clear (DELETE) it.</summary>
public static class FleetHealthSettingsApi
{
    public static IEndpointRouteBuilder MapFleetHealthSettingsApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/project/fleet-health").WithTags("Fleet health").WithKeyProblems();
        group.MapGet("/", GetAsync).RequireAuthorization(Policies.Member)
            .WithSummary("The project's fleet-health settings: after how many hours without a report an updated device counts as silent");
        group.MapPut("/", SetAsync).RequireAuthorization(Policies.Admin).Accepts<FleetHealthSettingsBody>("application/json")
            .ProducesValidationProblem()
            .WithSummary("Set silent_after_hours, 1-8760 (admin, audited)");
        group.MapDelete("/", ClearAsync).RequireAuthorization(Policies.Admin)
            .WithSummary("Clear the project's setting: the default, 24 hours, applies (admin, audited)");
        return app;
    }

    private static async Task<Ok<FleetHealthSettingsResponse>> GetAsync(HttpContext http, FleetHealthSettings settings, CancellationToken cancellationToken) =>
        TypedResults.Ok(await settings.GetAsync(Caller.From(http.User).ProjectId, cancellationToken));

    private static async Task<Results<Ok<FleetHealthSettingsResponse>, ProblemHttpResult>> SetAsync(
        HttpContext http, FleetHealthSettings settings, CancellationToken cancellationToken)
    {
        var (body, problem) = await JsonBody.ReadAsync(http, RequestLimits.MaxBodyBytes, RequestJsonContext.Default.FleetHealthSettingsBody, cancellationToken);
        if (body is null)
        {
            return problem!;
        }

        if (body.SilentAfterHours is not (>= 1 and <= 8760))
        {
            return Problems.Validation(
                new Dictionary<string, string[]> { ["silent_after_hours"] = ["Must be a whole number of hours from 1 to 8760 (DELETE clears it)."] },
                "Invalid fleet-health settings.");
        }

        var caller = Caller.From(http.User);
        return TypedResults.Ok(await settings.SetAsync(caller.ProjectId, body.SilentAfterHours, Actor.From(caller), cancellationToken));
    }

    private static async Task<Ok<FleetHealthSettingsResponse>> ClearAsync(HttpContext http, FleetHealthSettings settings, CancellationToken cancellationToken)
    {
        var caller = Caller.From(http.User);
        return TypedResults.Ok(await settings.SetAsync(caller.ProjectId, null, Actor.From(caller), cancellationToken));
    }
}
