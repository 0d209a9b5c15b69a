using System.Globalization;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Http;
using FirmwareManager.Api.Observability;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;

namespace FirmwareManager.Api.Firmware;

/// <summary>What the API returns for an event. <c>timestamp</c> is the device's time (or the receive time when it sent none).</summary>
public sealed record FirmwareEventResponse(
    long Id, long DeviceId, long ProjectId, string Firmware, string Status, string Timestamp, string ReceivedAt)
{
    public static FirmwareEventResponse From(FirmwareEvent e) => new(
        e.Id, e.DeviceId, e.ProjectId, e.Firmware, e.Status, Rfc3339.Format(e.OccurredAt), Rfc3339.Format(e.ReceivedAt));
}

/// <summary><c>/firmware/{device_id}</c>: devices report their events; the device and its project's members read them.</summary>
public static class FirmwareApi
{
    public static RouteGroupBuilder MapFirmwareApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/firmware")
            .RequireAuthorization()
            .WithTags("Firmware");

        group.MapPost("/{device_id}", RecordAsync).RequireAuthorization(Policies.Device);
        group.MapGet("/{device_id}", ListAsync);
        group.MapGet("/{device_id}/events/{event_id}", GetAsync);
        return group;
    }

    private static async Task<Results<Created<FirmwareEventResponse>, Ok<FirmwareEventResponse>, ProblemHttpResult>> RecordAsync(
        [FromRoute(Name = "device_id")] string deviceIdText,
        HttpContext http,
        FirmwareEvents events,
        FirmwareMetrics metrics,
        CancellationToken cancellationToken)
    {
        if (!TryParseId(deviceIdText, out var deviceId))
        {
            return InvalidId("device_id", deviceIdText);
        }

        var caller = Caller.From(http.User);
        if (!caller.IsDevice(deviceId))
        {
            return Forbidden("A device key may report events only for its own device.");
        }

        var (body, problem) = await JsonBody.ReadAsync(http.Request, cancellationToken);
        if (body is null)
        {
            metrics.EventRejected(null);
            return problem!;
        }

        NewFirmwareEvent? report;
        Dictionary<string, string[]> errors;
        using (body)
        {
            report = FirmwareEventRequest.Validate(body.RootElement, out errors);
            if (report is null)
            {
                metrics.EventRejected(FirmwareEventRequest.StatusOf(body.RootElement));
                return Problems.Validation(errors, "The firmware event is not valid.");
            }
        }

        var recorded = await events.RecordAsync(deviceId, report, cancellationToken);
        if (recorded is null)
        {
            return DeviceNotFound(deviceId);
        }

        var response = FirmwareEventResponse.From(recorded.Event);
        if (recorded.Created)
        {
            metrics.EventCreated(report.Status);
            return TypedResults.Created(EventLocation(recorded.Event), response);
        }

        metrics.EventRepeated(report.Status);
        return TypedResults.Ok(response);
    }

    private static async Task<Results<Ok<List<FirmwareEventResponse>>, ProblemHttpResult>> ListAsync(
        [FromRoute(Name = "device_id")] string deviceIdText,
        HttpContext http,
        FirmwareEvents events,
        CancellationToken cancellationToken)
    {
        if (!TryParseId(deviceIdText, out var deviceId))
        {
            return InvalidId("device_id", deviceIdText);
        }

        var caller = Caller.From(http.User);
        if (caller.Kind == CallerKind.Device && !caller.IsDevice(deviceId))
        {
            return Forbidden("A device key may read only its own device's events.");
        }

        var history = await events.ListForDeviceAsync(deviceId, caller.ProjectId, cancellationToken);
        return history is null
            ? DeviceNotFound(deviceId)
            : TypedResults.Ok(history.Select(FirmwareEventResponse.From).ToList());
    }

    private static async Task<Results<Ok<FirmwareEventResponse>, ProblemHttpResult>> GetAsync(
        [FromRoute(Name = "device_id")] string deviceIdText,
        [FromRoute(Name = "event_id")] string eventIdText,
        HttpContext http,
        FirmwareEvents events,
        CancellationToken cancellationToken)
    {
        if (!TryParseId(deviceIdText, out var deviceId))
        {
            return InvalidId("device_id", deviceIdText);
        }

        if (!TryParseId(eventIdText, out var eventId))
        {
            return InvalidId("event_id", eventIdText);
        }

        var caller = Caller.From(http.User);
        if (caller.Kind == CallerKind.Device && !caller.IsDevice(deviceId))
        {
            return Forbidden("A device key may read only its own device's events.");
        }

        var found = await events.FindAsync(deviceId, caller.ProjectId, eventId, cancellationToken);
        return found is null
            ? Problems.NotFound("Event not found", $"Device {deviceId} has no event {eventId} in your project.")
            : TypedResults.Ok(FirmwareEventResponse.From(found));
    }

    private static string EventLocation(FirmwareEvent e) =>
        string.Create(CultureInfo.InvariantCulture, $"/firmware/{e.DeviceId}/events/{e.Id}");

    /// <summary>Ids are positive decimal integers that fit in a bigint: no sign, no spaces, no exponent.</summary>
    private static bool TryParseId(string text, out long id) =>
        long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out id);

    private static ProblemHttpResult InvalidId(string name, string text) => Problems.Validation(
        new Dictionary<string, string[]> { [name] = [$"Must be a whole number from 0 to 9223372036854775807, not '{Truncate(text)}'."] },
        "Invalid id.");

    private static ProblemHttpResult Forbidden(string detail) => Problems.Forbidden(detail);

    // The same answer whether the device does not exist or belongs to another project: ids cannot be probed.
    private static ProblemHttpResult DeviceNotFound(long deviceId) =>
        Problems.NotFound("Device not found", $"There is no device {deviceId} in your project.");

    private static string Truncate(string text) => text.Length <= 40 ? text : text[..40] + "…";
}
