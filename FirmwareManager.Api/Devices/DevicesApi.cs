using System.Globalization;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Firmware;
using FirmwareManager.Api.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;

namespace FirmwareManager.Api.Devices;

/// <summary><c>/devices</c>: the project's devices, for members.</summary>
public static class DevicesApi
{
    public static RouteGroupBuilder MapDevicesApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/devices")
            .RequireAuthorization(Policies.Member)
            .WithTags("Devices")
            .WithKeyProblems()
            .ProducesValidationProblem();

        group.MapGet("/", ListAsync)
            .WithSummary("The project's devices in id order, paged (member keys)")
            .WithDescription("Filters: firmware (the current version, exact), status_of_last_event (repeat or comma-separate), silent_since (devices with no report since then, or never).");
        group.MapGet("/{device_id}", GetAsync)
            .ProducesProblem(StatusCodes.Status404NotFound)
            .WithSummary("One device: current firmware, its newest event and when it last reported (member keys)");
        return group;
    }

    private static async Task<Results<Ok<List<DeviceResponse>>, ProblemHttpResult>> ListAsync(
        [FromQuery] string? limit,
        [FromQuery] string? cursor,
        [FromQuery] string? firmware,
        [FromQuery(Name = "status_of_last_event")] string[]? statusOfLastEvent,
        [FromQuery(Name = "silent_since")] string? silentSince,
        HttpContext http,
        Devices devices,
        Cursors cursors,
        CancellationToken cancellationToken)
    {
        var errors = new Dictionary<string, string[]>();
        var page = PageRequest.Parse(limit, cursor, errors);
        var filters = EventFilters.Parse(silentSince, null, statusOfLastEvent, firmware, errors);
        if (page is null || filters is null)
        {
            return Problems.Validation(RenameFilters(errors), "Invalid query parameters.");
        }

        var caller = Caller.From(http.User);
        var scope = string.Create(CultureInfo.InvariantCulture, $"devices|{caller.ProjectId}|{filters.Key}");
        long afterId = 0;
        if (page.Cursor is not null)
        {
            var after = await cursors.DecodeAsync(scope, page.Cursor, reader => new IdPosition(reader.ReadInt64()), cancellationToken);
            if (after is null)
            {
                return PageResults.InvalidCursor();
            }

            afterId = after.Id;
        }

        var found = await devices.PageAsync(caller.ProjectId, filters.Firmware, filters.Statuses, filters.Since, afterId, page.Limit + 1, cancellationToken);
        string? next = null;
        if (found.Count > page.Limit)
        {
            var lastId = found[page.Limit - 1].Id;
            next = await cursors.EncodeAsync(scope, writer => writer.Write(lastId), cancellationToken);
        }

        return PageResults.Page(http, found.Take(page.Limit).Select(DeviceResponse.From).ToList(), next);
    }

    private static async Task<Results<Ok<DeviceResponse>, ProblemHttpResult>> GetAsync(
        [FromRoute(Name = "device_id")] string deviceIdText,
        HttpContext http,
        Devices devices,
        CancellationToken cancellationToken)
    {
        if (!Problems.TryParseId(deviceIdText, out var deviceId))
        {
            return Problems.InvalidId("device_id", deviceIdText);
        }

        var device = await devices.FindAsync(Caller.From(http.User).ProjectId, deviceId, cancellationToken);
        return device is null
            ? Problems.NotFound("Device not found", $"There is no device {deviceId} in your project.")
            : TypedResults.Ok(DeviceResponse.From(device));
    }

    /// <summary>The shared filter parser names since and status; here they are silent_since and status_of_last_event.</summary>
    private static Dictionary<string, string[]> RenameFilters(Dictionary<string, string[]> errors) =>
        errors.ToDictionary(
            e => e.Key switch { "since" => "silent_since", "status" => "status_of_last_event", var key => key },
            e => e.Value);
}
