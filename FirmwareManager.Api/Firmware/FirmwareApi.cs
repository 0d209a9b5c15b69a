using System.Globalization;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Http;
using FirmwareManager.Api.Observability;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Http.Timeouts;
using Microsoft.AspNetCore.Mvc;

namespace FirmwareManager.Api.Firmware;

/// <summary>
/// What the API returns for an event. <c>timestamp</c> is the device's time (or the receive time when it sent none);
/// <c>from_firmware</c>, <c>error_code</c> and <c>detail</c> are left out when the report left them out, so an event
/// reported as before reads as before.
/// </summary>
public sealed record FirmwareEventResponse(
    long Id, long DeviceId, long ProjectId, string Firmware, string Status,
    [property: JsonConverter(typeof(Rfc3339JsonConverter))] DateTime Timestamp,
    [property: JsonConverter(typeof(Rfc3339JsonConverter))] DateTime ReceivedAt,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? FromFirmware,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? ErrorCode,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Detail)
{
    public static FirmwareEventResponse From(FirmwareEvent e) => new(
        e.Id, e.DeviceId, e.ProjectId, e.Firmware, e.Status, e.OccurredAt, e.ReceivedAt,
        e.FromFirmware, e.ErrorCode, e.Detail);
}

/// <summary>The answer to a batch: events stored now, and events that were stored before (or repeated within the batch).</summary>
public sealed record BatchResult(int Created, int AlreadyKnown);

/// <summary><c>/firmware/{device_id}</c>: devices report their events; the device and its project's members read them.</summary>
public static class FirmwareApi
{
    public const int MaxBatchEvents = 1000;

    public static RouteGroupBuilder MapFirmwareApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/firmware")
            .RequireAuthorization()
            .WithTags("Firmware")
            .WithKeyProblems()
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status404NotFound);

        group.MapPost("/{device_id}", RecordAsync)
            .RequireAuthorization(Policies.Device)
            .Accepts<FirmwareEventBody>("application/json")
            .ProducesProblem(StatusCodes.Status413PayloadTooLarge)
            .ProducesProblem(StatusCodes.Status415UnsupportedMediaType)
            .WithSummary("A device reports one firmware event (device key, own device only)")
            .WithDescription("201 with the event and its Location; 200 with the stored event when it is an identical repeat.");
        group.MapPost("/{device_id}/batch", RecordBatchAsync)
            .RequireAuthorization(Policies.Device)
            .Accepts<FirmwareEventBody[]>("application/json")
            .ProducesProblem(StatusCodes.Status413PayloadTooLarge)
            .ProducesProblem(StatusCodes.Status415UnsupportedMediaType)
            .WithSummary("A device uploads a backlog of up to 1000 events in one transaction (device key, own device only)")
            .WithDescription("All events are validated first: one invalid event rejects the batch (errors keyed [index].field) and nothing is stored.");
        group.MapGet("/{device_id}", ListAsync)
            .WithSummary("A device's history in the caller's project, newest first by the device's clock, paged")
            .WithDescription("For members of the device's project and for the device itself. Filters: since (inclusive), until (exclusive), status (repeat or comma-separate), firmware, error_code. limit 1-1000 (default 100); follow the Link rel=\"next\" header for more. " +
                             "Members may export the whole history the filters select with Accept: text/csv or application/x-ndjson.")
            .Exports();
        group.MapGet("/{device_id}/events/{event_id}", GetAsync)
            .WithSummary("One event of a device (the Location of a report)");
        return group;
    }

    private static async Task<Results<Created<FirmwareEventResponse>, Ok<FirmwareEventResponse>, ProblemHttpResult>> RecordAsync(
        [FromRoute(Name = "device_id")] string deviceIdText,
        HttpContext http,
        ReportGroupCommit groupCommit,
        FirmwareMetrics metrics,
        CancellationToken cancellationToken)
    {
        var (deviceId, keyId, body, problem) = await ReadOwnReportAsync(
            deviceIdText, http, RequestLimits.MaxBodyBytes, RequestJsonContext.Default.FirmwareEventBody, metrics, cancellationToken);
        if (body is null)
        {
            return problem!;
        }

        var report = FirmwareEventRequest.Validate(body, out var errors);
        if (report is null)
        {
            metrics.EventRejected(FirmwareEventRequest.StatusLabel(body));
            return Problems.Validation(errors, "The firmware event is not valid.");
        }

        var recorded = await groupCommit.RecordAsync(Caller.From(http.User).ProjectId, deviceId, keyId, report, RequestTimeout(http), cancellationToken);
        if (recorded is null)
        {
            return DeviceNotFound(deviceId);
        }

        var response = FirmwareEventResponse.From(recorded.Event);
        SetFeedPosition(http, recorded.Event.Arrival);
        if (recorded.Created)
        {
            metrics.EventCreated(report.Status);
            return TypedResults.Created(EventLocation(recorded.Event), response);
        }

        metrics.EventRepeated(report.Status);
        return TypedResults.Ok(response);
    }

    private static async Task<Results<Ok<List<FirmwareEventResponse>>, ProblemHttpResult, ExportResult>> ListAsync(
        [FromRoute(Name = "device_id")] string deviceIdText,
        [FromQuery] string? limit,
        [FromQuery] string? cursor,
        [FromQuery] string? since,
        [FromQuery] string? until,
        [FromQuery] string[]? status,
        [FromQuery] string? firmware,
        [FromQuery(Name = "error_code")] string? errorCode,
        HttpContext http,
        DeviceHistory history,
        Cursors cursors,
        ReadRouting reads,
        Exports exports,
        CancellationToken cancellationToken)
    {
        var errors = new Dictionary<string, string[]>();
        if (!Problems.TryParseId(deviceIdText, out var deviceId))
        {
            return Problems.InvalidId("device_id", deviceIdText);
        }

        var export = ExportNegotiation.Requested(http.Request);
        // An export has every row the filters select: limit and cursor do not apply to it.
        var page = export is null ? PageRequest.Parse(limit, cursor, errors) : PageRequest.Parse(null, null, errors);
        var filters = EventFilters.Parse(since, until, status, firmware, errorCode, errors);
        if (page is null || filters is null)
        {
            return Problems.Validation(errors, "Invalid query parameters.");
        }

        var caller = Caller.From(http.User);
        if (caller.Kind == CallerKind.Device && !caller.IsDevice(deviceId))
        {
            return Forbidden("A device key may read only its own device's events.");
        }

        var read = reads.For(caller);
        if (export is { } format)
        {
            if (caller.Kind == CallerKind.Device)
            {
                return Forbidden("Exports are for the project's members; a device reads its history by pages.");
            }

            return exports.Of<FirmwareEvent, FirmwareEventResponse>(
                format, "history", caller.ProjectId, read, history.Export(deviceId, caller.ProjectId, filters), FirmwareEventResponse.From,
                async snapshot => await DeviceHistory.DeviceKnownToProjectAsync(
                    snapshot.Connection, snapshot.Transaction, deviceId, caller.ProjectId, http.RequestAborted) ? null : DeviceNotFound(deviceId));
        }

        var scope = string.Create(CultureInfo.InvariantCulture, $"history|{caller.ProjectId}|{deviceId}|{filters.Key}");
        return (await KeysetPage.ServeAsync(http, cursors, scope, page, read,
            (DeviceHistory.Position? after, int count) => history.PageAsync(deviceId, caller.ProjectId, filters, after, count, read, cancellationToken),
            DeviceHistory.Position.Of, FirmwareEventResponse.From, () => DeviceNotFound(deviceId), cancellationToken)).OrExport();
    }

    private static async Task<Results<Ok<BatchResult>, ProblemHttpResult>> RecordBatchAsync(
        [FromRoute(Name = "device_id")] string deviceIdText,
        HttpContext http,
        ReportGroupCommit groupCommit,
        FirmwareEvents events,
        FirmwareMetrics metrics,
        CancellationToken cancellationToken)
    {
        var (deviceId, keyId, body, problem) = await ReadOwnReportAsync(
            deviceIdText, http, RequestLimits.MaxBatchBodyBytes, RequestJsonContext.Default.FirmwareEventBodyArray, metrics, cancellationToken);
        if (body is null)
        {
            return problem!;
        }

        var reports = new List<NewFirmwareEvent>();
        var errors = new Dictionary<string, string[]>();
        if (body.Length is 0 or > MaxBatchEvents)
        {
            errors["body"] = [$"Must be a JSON array of 1 to {MaxBatchEvents} events."];
        }
        else
        {
            for (var index = 0; index < body.Length; index++)
            {
                var report = FirmwareEventRequest.Validate(body[index], out var itemErrors);
                if (report is null)
                {
                    foreach (var (field, messages) in itemErrors)
                    {
                        errors[string.Create(CultureInfo.InvariantCulture, $"[{index}].{field}")] = messages;
                    }
                }
                else
                {
                    reports.Add(report);
                }
            }
        }

        if (errors.Count > 0)
        {
            metrics.EventRejected(FirmwareEventRequest.InvalidStatusLabel);
            return Problems.Validation(errors, "The batch is not valid; nothing was stored.");
        }

        var created = await groupCommit.RecordBatchAsync(Caller.From(http.User).ProjectId, deviceId, keyId, reports, RequestTimeout(http), cancellationToken);
        if (created is null)
        {
            return DeviceNotFound(deviceId);
        }

        foreach (var e in created)
        {
            metrics.EventCreated(e.Status);
        }

        // The highest position of the batch's events: of those created, or, when all were stored before, the
        // project's newest (at or past each of them).
        SetFeedPosition(http, created.Count > 0
            ? created.Max(e => e.Arrival)
            : await events.LastFeedPositionAsync(Caller.From(http.User).ProjectId, cancellationToken));
        return TypedResults.Ok(new BatchResult(created.Count, reports.Count - created.Count));
    }

    /// <summary>The header that tells a reporter where its report stands in its project's feed (numbered in commit order).</summary>
    public const string FeedPositionHeader = "X-Feed-Position";

    private static void SetFeedPosition(HttpContext http, long position) =>
        http.Response.Headers[FeedPositionHeader] = position.ToString(CultureInfo.InvariantCulture);

    // Fires when the request reaches its time limit (and only then, unlike the request's own cancellation).
    private static CancellationToken RequestTimeout(HttpContext http) =>
        http.Features.Get<IHttpRequestTimeoutFeature>()?.RequestTimeoutToken ?? CancellationToken.None;

    private static async Task<Results<Ok<FirmwareEventResponse>, ProblemHttpResult>> GetAsync(
        [FromRoute(Name = "device_id")] string deviceIdText,
        [FromRoute(Name = "event_id")] string eventIdText,
        HttpContext http,
        FirmwareEvents events,
        ReadRouting reads,
        CancellationToken cancellationToken)
    {
        if (!Problems.TryParseId(deviceIdText, out var deviceId))
        {
            return Problems.InvalidId("device_id", deviceIdText);
        }

        if (!Problems.TryParseId(eventIdText, out var eventId))
        {
            return Problems.InvalidId("event_id", eventIdText);
        }

        var caller = Caller.From(http.User);
        if (caller.Kind == CallerKind.Device && !caller.IsDevice(deviceId))
        {
            return Forbidden("A device key may read only its own device's events.");
        }

        var found = await events.FindAsync(deviceId, caller.ProjectId, eventId, reads.For(caller), cancellationToken);
        return found is null
            ? Problems.NotFound("Event not found", $"Device {deviceId} has no event {eventId} in your project.")
            : TypedResults.Ok(FirmwareEventResponse.From(found));
    }

    /// <summary>What every report checks first: a well-formed id, the device's own key, and a JSON body within the limit.</summary>
    /// <remarks>Answers the key's id too: the report's transaction checks that key again (it may be revoked meanwhile).</remarks>
    private static async Task<(long DeviceId, long KeyId, T? Body, ProblemHttpResult? Problem)> ReadOwnReportAsync<T>(
        string deviceIdText, HttpContext http, int maxBytes, JsonTypeInfo<T> typeInfo, FirmwareMetrics metrics, CancellationToken cancellationToken)
        where T : class
    {
        if (!Problems.TryParseId(deviceIdText, out var deviceId))
        {
            return (0, 0, null, Problems.InvalidId("device_id", deviceIdText));
        }

        var caller = Caller.From(http.User);
        if (!caller.IsDevice(deviceId))
        {
            return (deviceId, caller.KeyId, null, Forbidden("A device key may report events only for its own device."));
        }

        var (body, problem) = await JsonBody.ReadAsync(http, maxBytes, typeInfo, cancellationToken);
        if (body is null)
        {
            metrics.EventRejected(FirmwareEventRequest.InvalidStatusLabel);
        }

        return (deviceId, caller.KeyId, body, problem);
    }

    private static string EventLocation(FirmwareEvent e) =>
        string.Create(CultureInfo.InvariantCulture, $"/firmware/{e.DeviceId}/events/{e.Id}");


    private static ProblemHttpResult Forbidden(string detail) => Problems.Forbidden(detail);

    // The same answer whether the device does not exist or belongs to another project: ids cannot be probed.
    private static ProblemHttpResult DeviceNotFound(long deviceId) =>
        Problems.NotFound("Device not found", $"There is no device {deviceId} in your project.");

}
