using System.Globalization;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Firmware;
using FirmwareManager.Api.Http;
using FirmwareManager.Api.Projections;
using FirmwareManager.Api.Versions;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;

namespace FirmwareManager.Api.FleetHealth;

/// <summary><c>/firmware-transitions</c>: how updates from one version to another went, with why they failed.</summary>
public static class FirmwareTransitionsApi
{
    public static RouteGroupBuilder MapFirmwareTransitionsApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/firmware-transitions")
            .RequireAuthorization(Policies.Member)
            .WithTags("Fleet health")
            .WithKeyProblems()
            .ProducesValidationProblem();

        group.MapGet("/", ListAsync)
            .ReadsProjectedState()
            .WithSummary("For each from -> to pair: devices that attempted, succeeded, failed, rolled back and are in progress, with the top error codes (member keys)")
            .WithDescription("Filters: to, from (SemVer); hardware, tag (the devices' states counted when asked). Ordered by to, then from (from null: not known, first). Paged: limit 1-1000 (default 100); follow the Link rel=\"next\" header for more. Each device counts once per target version, by its newest report on it.");
        return group;
    }

    private static async Task<Results<Ok<List<FirmwareTransition>>, ProblemHttpResult>> ListAsync(
        [FromQuery] string? limit,
        [FromQuery] string? cursor,
        [FromQuery] string? to,
        [FromQuery] string? from,
        [FromQuery] string? hardware,
        [FromQuery] string[]? tag,
        HttpContext http,
        FirmwareTransitions transitions,
        Cursors cursors,
        ReadRouting reads,
        CancellationToken cancellationToken)
    {
        var errors = new Dictionary<string, string[]>();
        var page = PageRequest.Parse(limit, cursor, errors);
        foreach (var (name, value) in new[] { ("to", to), ("from", from) })
        {
            if (value is not null && !SemanticVersion.IsValid(value))
            {
                errors[name] = ["Must be a SemVer 2.0.0 version such as 1.4.2."];
            }
        }

        if (hardware is not null && !Devices.DeviceLabelRules.IsHardware(hardware))
        {
            errors["hardware"] = [Devices.DeviceLabelRules.HardwareMessage];
        }

        var devices = new FirmwareTransitions.DeviceFilter(hardware, Devices.DeviceLabelRules.Tags("tag", tag, errors) ?? []);
        if (page is null || errors.Count > 0)
        {
            return Problems.Validation(errors, "Invalid query parameters.");
        }

        var caller = Caller.From(http.User);
        var (read, behind) = await reads.ForProjectedAsync(caller, http);
        if (behind is not null)
        {
            return behind;
        }

        var scope = string.Create(CultureInfo.InvariantCulture, $"transitions|{caller.ProjectId}|{to}|{from}|{hardware}|{string.Join(',', devices.Tags)}");
        return await KeysetPage.ServeAsync(http, cursors, scope, page, read,
            (FirmwareTransitions.Position? after, int limit) => transitions.PageAsync(caller.ProjectId, to, from, devices, after, limit, read, cancellationToken),
            transition => transition, cancellationToken);
    }
}
