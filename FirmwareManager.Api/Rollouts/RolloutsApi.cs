using System.ComponentModel.DataAnnotations;
using System.Globalization;
using FirmwareManager.Api.Audit;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Devices;
using FirmwareManager.Api.Firmware;
using FirmwareManager.Api.Http;
using FirmwareManager.Api.Projections;
using FirmwareManager.Api.Versions;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;

namespace FirmwareManager.Api.Rollouts;

/// <summary>A rollout to declare (observation only: this service ships no firmware).</summary>
/// <param name="Firmware">The SemVer version going out.</param>
/// <param name="Hardware">Optional: only devices of this hardware revision.</param>
/// <param name="Tags">Optional: only devices with every one of these tags.</param>
/// <param name="FromFirmware">Optional: only devices coming from this version.</param>
/// <param name="MaxFailureRate">0 to 1: the rollout halts once (failed + rolled back) / attempted is above it.</param>
/// <param name="MinDevices">1 to 10,000,000: ... with at least this many devices attempted.</param>
public sealed record CreateRolloutBody(
    [property: Required] string? Firmware,
    string? Hardware = null,
    string[]? Tags = null,
    string? FromFirmware = null,
    [property: Required] double? MaxFailureRate = null,
    [property: Required] int? MinDevices = null);

/// <summary>
/// A rollout and how it goes. <c>state</c>: <c>active</c>; <c>halted</c> once its failure rate went above
/// <c>max_failure_rate</c> with at least <c>min_devices</c> attempted; <c>completed</c> when every eligible device has
/// updated, or an admin ended it.
/// </summary>
public sealed record RolloutResponse(
    long Id, string Firmware, string? FromFirmware, string? Hardware, string[] Tags, double MaxFailureRate, long MinDevices,
    string State, string CreatedAt, string? HaltedAt, string? EndedAt, long Eligible, long Attempted, long Updated, long Failed,
    long RolledBack, long InProgress, long Pending, long Silent, double FailureRate)
{
    public static RolloutResponse From(RolloutStatus status)
    {
        var r = status.Rollout;
        var state = r.EndedAt is not null ? "completed"
            : r.HaltedAt is not null ? "halted"
            : status.Eligible > 0 && r.Updated >= status.Eligible ? "completed"
            : "active";
        return new RolloutResponse(r.Id, r.Firmware, r.FromFirmware, r.Hardware, r.Tags, (double)r.MaxFailureRate, r.MinDevices, state,
            Rfc3339.Format(r.CreatedAt), Format(r.HaltedAt), Format(r.EndedAt), status.Eligible, r.Attempted, r.Updated, r.Failed,
            r.RolledBack, r.Attempted - r.Updated - r.Failed - r.RolledBack, Math.Max(0, status.Eligible - r.Attempted), status.Silent,
            r.Attempted == 0 ? 0 : Math.Round((double)(r.Failed + r.RolledBack) / r.Attempted, 6));
    }

    private static string? Format(DateTime? time) => time is { } t ? Rfc3339.Format(t) : null;
}

/// <summary><c>/rollouts</c>: admins declare rollouts; members watch how they go.</summary>
public static class RolloutsApi
{
    public static RouteGroupBuilder MapRolloutsApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/rollouts")
            .RequireAuthorization(Policies.Member)
            .WithTags("Rollouts")
            .WithKeyProblems()
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status404NotFound);

        group.MapPost("/", CreateAsync).RequireAuthorization(Policies.Admin).Accepts<CreateRolloutBody>("application/json")
            .ProducesProblem(StatusCodes.Status409Conflict)
            .WithSummary("Declare a rollout of a version to an audience, with a failure threshold (admin, audited); 409 past 100 open rollouts, or 10 of one version")
            .WithDescription("Observation only: devices are not told to update. The projection counts, from then on, the reports of the audience's devices on the version.");
        group.MapGet("/", ListAsync)
            .ReadsProjectedState()
            .WithSummary("The project's rollouts, newest first, with their progress and state (member keys)")
            .WithDescription("Paged: limit 1-1000 (default 100); follow the Link rel=\"next\" header for more.");
        group.MapGet("/{rollout_id}", GetAsync).ReadsProjectedState().WithSummary("One rollout: eligible, updated, failed, rolled back, pending and silent devices, failure rate, state (member keys)");
        group.MapPost("/{rollout_id}/end", EndAsync).RequireAuthorization(Policies.Admin)
            .WithSummary("End a rollout: it is completed and counts nothing more (admin, audited)");
        return group;
    }

    private static async Task<Results<Created<RolloutResponse>, ProblemHttpResult>> CreateAsync(
        HttpContext http, DeclaredRollouts rollouts, CancellationToken cancellationToken)
    {
        var (body, problem) = await JsonBody.ReadAsync(http, RequestLimits.MaxBodyBytes, RequestJsonContext.Default.CreateRolloutBody, cancellationToken);
        if (body is null)
        {
            return problem!;
        }

        var errors = new Dictionary<string, string[]>();
        foreach (var (name, value) in new[] { ("firmware", body.Firmware), ("from_firmware", body.FromFirmware) })
        {
            if ((value is not null || name == "firmware") && !SemanticVersion.IsValid(value ?? ""))
            {
                errors[name] = ["Must be a SemVer 2.0.0 version such as 1.4.2."];
            }
        }

        if (body.Hardware is not null && !DeviceLabelRules.IsHardware(body.Hardware))
        {
            errors["hardware"] = [DeviceLabelRules.HardwareMessage];
        }

        var tags = DeviceLabelRules.Tags("tags", body.Tags, errors) ?? [];
        if (body.MaxFailureRate is not (>= 0 and <= 1) || Math.Round(body.MaxFailureRate.Value, 4) != body.MaxFailureRate.Value)
        {
            errors["max_failure_rate"] = ["Must be a number from 0 to 1 with at most 4 decimals, such as 0.05."];
        }

        if (body.MinDevices is not (>= 1 and <= 10_000_000))
        {
            errors["min_devices"] = ["Must be a whole number from 1 to 10000000."];
        }

        if (errors.Count > 0)
        {
            return Problems.Validation(errors, "The rollout is not valid.");
        }

        var caller = Caller.From(http.User);
        var created = await rollouts.CreateAsync(caller.ProjectId, new NewRollout(
            body.Firmware!, body.FromFirmware, body.Hardware, tags, (decimal)body.MaxFailureRate!.Value, body.MinDevices!.Value), Actor.From(caller), cancellationToken);
        var status = (await rollouts.PageAsync(caller.ProjectId, created.Id, long.MaxValue, 1, ReadContext.OnPrimary(), cancellationToken)).Single();
        return TypedResults.Created(string.Create(CultureInfo.InvariantCulture, $"/rollouts/{created.Id}"), RolloutResponse.From(status));
    }

    private static async Task<Results<Ok<List<RolloutResponse>>, ProblemHttpResult>> ListAsync(
        [FromQuery] string? limit, [FromQuery] string? cursor, HttpContext http, DeclaredRollouts rollouts, Cursors cursors, ReadRouting reads,
        CancellationToken cancellationToken)
    {
        var errors = new Dictionary<string, string[]>();
        var page = PageRequest.Parse(limit, cursor, errors);
        if (page is null)
        {
            return Problems.Validation(errors, "Invalid query parameters.");
        }

        var caller = Caller.From(http.User);
        var (read, behind) = await reads.ForProjectedAsync(caller, http);
        if (behind is not null)
        {
            return behind;
        }

        var scope = string.Create(CultureInfo.InvariantCulture, $"rollouts|{caller.ProjectId}");
        return await KeysetPage.ServeAsync(http, cursors, scope, page, read,
            (IdPosition? before, int count) => rollouts.PageAsync(caller.ProjectId, null, before?.Id ?? long.MaxValue, count, read, cancellationToken),
            status => new IdPosition(status.Rollout.Id), RolloutResponse.From, cancellationToken);
    }

    private static async Task<Results<Ok<RolloutResponse>, ProblemHttpResult>> GetAsync(
        [FromRoute(Name = "rollout_id")] string rolloutIdText, HttpContext http, DeclaredRollouts rollouts, ReadRouting reads, CancellationToken cancellationToken)
    {
        if (!Problems.TryParseId(rolloutIdText, out var rolloutId))
        {
            return Problems.InvalidId("rollout_id", rolloutIdText);
        }

        var caller = Caller.From(http.User);
        var (read, behind) = await reads.ForProjectedAsync(caller, http);
        if (behind is not null)
        {
            return behind;
        }

        var found = await rollouts.PageAsync(caller.ProjectId, rolloutId, long.MaxValue, 1, read, cancellationToken);
        return found.Count == 0 ? Problems.NotFoundIn("rollout", rolloutId) : TypedResults.Ok(RolloutResponse.From(found[0]));
    }

    private static async Task<Results<Ok<RolloutResponse>, ProblemHttpResult>> EndAsync(
        [FromRoute(Name = "rollout_id")] string rolloutIdText, HttpContext http, DeclaredRollouts rollouts, CancellationToken cancellationToken)
    {
        if (!Problems.TryParseId(rolloutIdText, out var rolloutId))
        {
            return Problems.InvalidId("rollout_id", rolloutIdText);
        }

        var caller = Caller.From(http.User);
        if (await rollouts.EndAsync(caller.ProjectId, rolloutId, Actor.From(caller), cancellationToken) is null)
        {
            return Problems.NotFoundIn("open rollout", rolloutId);
        }

        var status = (await rollouts.PageAsync(caller.ProjectId, rolloutId, long.MaxValue, 1, ReadContext.OnPrimary(), cancellationToken)).Single();
        return TypedResults.Ok(RolloutResponse.From(status));
    }
}
