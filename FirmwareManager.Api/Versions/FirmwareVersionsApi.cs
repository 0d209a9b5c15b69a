using System.Globalization;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Http;
using FirmwareManager.Api.Projections;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;

namespace FirmwareManager.Api.Versions;

/// <summary><c>/firmware-versions</c>: which versions the project's fleet runs, and where updates failed or were rolled back.</summary>
public static class FirmwareVersionsApi
{
    public static RouteGroupBuilder MapFirmwareVersionsApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/firmware-versions")
            .RequireAuthorization(Policies.Member)
            .WithTags("Firmware versions")
            .WithKeyProblems()
            .ProducesValidationProblem();

        group.MapGet("/", ListAsync)
            .ReadsProjectedState()
            .WithSummary("The project's firmware versions by SemVer precedence: devices running each, devices whose newest event for it is failed or rolled_back, silent after updating to it, and come down to it without a rollback (member keys)")
            .WithDescription("Filters: hardware (exact), tag (repeat for devices with every one; counted from the tagged devices). by=hardware adds each version's counts per hardware revision. Paged: limit 1-1000 (default 100); follow the Link rel=\"next\" header for more.");
        return group;
    }

    private static async Task<Results<Ok<List<FirmwareVersionCount>>, ProblemHttpResult>> ListAsync(
        [FromQuery] string? limit, [FromQuery] string? cursor, [FromQuery] string? hardware, [FromQuery] string[]? tag,
        [FromQuery] string? by, HttpContext http, FirmwareVersions versions, Cursors cursors, ReadRouting reads,
        CancellationToken cancellationToken)
    {
        var errors = new Dictionary<string, string[]>();
        var page = PageRequest.Parse(limit, cursor, errors);
        if (hardware is not null && !Devices.DeviceLabelRules.IsHardware(hardware))
        {
            errors["hardware"] = [Devices.DeviceLabelRules.HardwareMessage];
        }

        var tags = Devices.DeviceLabelRules.Tags("tag", tag, errors) ?? [];
        if (by is not (null or "hardware"))
        {
            errors["by"] = ["Must be hardware, or left out."];
        }

        if (page is null || errors.Count > 0)
        {
            return Problems.Validation(errors, "Invalid query parameters.");
        }

        var filters = new VersionFilters(hardware, tags, by == "hardware");

        var caller = Caller.From(http.User);
        var projectId = caller.ProjectId;
        var (read, behind) = await reads.ForProjectedAsync(caller, http);
        if (behind is not null)
        {
            return behind;
        }

        // Without filters, the scope cursors had before there were filters: those already handed out stay valid.
        var scope = filters.IsNone
            ? string.Create(CultureInfo.InvariantCulture, $"versions|{projectId}")
            : string.Create(CultureInfo.InvariantCulture, $"versions|{projectId}|{filters.Key}");
        return await KeysetPage.ServeAsync(http, cursors, scope, page, read,
            (FirmwareVersionPosition? after, int limit) => versions.PageAsync(projectId, filters, after ?? FirmwareVersionPosition.First, limit, read, cancellationToken),
            version => version, cancellationToken);
    }
}
