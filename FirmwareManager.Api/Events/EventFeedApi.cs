using System.Globalization;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Firmware;
using FirmwareManager.Api.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;

namespace FirmwareManager.Api.Events;

/// <summary>
/// <c>/events</c>: every event of the caller's project. Newest arrival first, paged with <c>cursor</c>; or, with
/// <c>after</c>, in arrival order from a position, for tools that poll for what is new: <c>after=beginning</c>
/// starts at the first event, <c>after=latest</c> after the newest one (an empty page: only what arrives next), and
/// every such page carries a <c>Link: rel="next"</c> to poll next (the same position when nothing new has arrived).
/// </summary>
public static class EventFeedApi
{
    public const string FromBeginning = "beginning";

    /// <summary>Polling from now on: the position of the newest event so far, so that only what arrives next is served.</summary>
    public const string FromLatest = "latest";

    public static RouteGroupBuilder MapEventFeedApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/events")
            .RequireAuthorization(Policies.Member)
            .WithTags("Events")
            .WithKeyProblems()
            .ProducesValidationProblem();

        group.MapGet("/", ListAsync)
            .WithSummary("Every event of the caller's project (member keys), newest arrival first, or in arrival order after a position")
            .WithDescription("Filters as for a device's history, plus device_id. Page with cursor; or poll with after=beginning (or after=latest: only what arrives from now on) and then the Link rel=\"next\" URL, which every polling answer carries: an event that commits late is never skipped. " +
                             "With Accept: text/csv or application/x-ndjson, every event the filters select in one snapshot, streamed, with X-Feed-Position and a Link rel=\"next\" to poll from after it.")
            .Exports();
        return group;
    }

    private static async Task<Results<Ok<List<FirmwareEventResponse>>, ProblemHttpResult, ExportResult>> ListAsync(
        [FromQuery] string? limit,
        [FromQuery] string? cursor,
        [FromQuery] string? after,
        [FromQuery] string? since,
        [FromQuery] string? until,
        [FromQuery] string[]? status,
        [FromQuery] string? firmware,
        [FromQuery(Name = "error_code")] string? errorCode,
        [FromQuery(Name = "device_id")] string? deviceIdText,
        HttpContext http,
        EventFeed events,
        Cursors cursors,
        ReadRouting reads,
        Exports exports,
        CancellationToken cancellationToken)
    {
        var errors = new Dictionary<string, string[]>();
        var export = ExportNegotiation.Requested(http.Request);
        // An export has every row the filters select: limit and cursor do not apply to it.
        var page = export is null ? PageRequest.Parse(limit, cursor, errors) : PageRequest.Parse(null, null, errors);
        var filters = EventFilters.Parse(since, until, status, firmware, errorCode, errors);
        long? deviceId = null;
        if (deviceIdText is not null)
        {
            if (Problems.TryParseId(deviceIdText, out var id))
            {
                deviceId = id;
            }
            else
            {
                errors["device_id"] = ["Must be a whole number from 0 to 9223372036854775807."];
            }
        }

        if (export is not null && after is not null)
        {
            errors["after"] = ["An export has every event the filters select, and answers with the Link to poll from after it; it takes no after."];
        }
        else if (cursor is not null && after is not null)
        {
            errors["after"] = ["Use either cursor (newest first) or after (arrival order), not both."];
        }

        if (page is null || filters is null || errors.Count > 0)
        {
            return Problems.Validation(errors, "Invalid query parameters.");
        }

        var caller = Caller.From(http.User);
        var read = reads.For(caller);
        if (export is { } format)
        {
            return ExportEvents(format, http, caller.ProjectId, deviceId, filters, read, cursors, exports);
        }

        var polling = after is not null;
        var scope = Scope(polling, caller.ProjectId, deviceId, filters);
        ArrivalPosition? position = null;
        var token = polling ? after : page.Cursor;
        if (polling && after == FromBeginning)
        {
            position = new ArrivalPosition(0, 0);
        }
        else if (polling && after == FromLatest)
        {
            var newest = await events.FeedPageAsync(caller.ProjectId, deviceId, filters, null, null, 1, read, cancellationToken);
            position = newest.Count > 0 ? newest[0].Position : new ArrivalPosition(0, 0);
        }
        else if (token is not null)
        {
            position = await cursors.DecodeAsync<ArrivalPosition>(scope, token, read, cancellationToken);
            if (position is null)
            {
                return PageResults.InvalidCursor(polling ? "after" : "cursor");
            }
        }

        var found = await events.FeedPageAsync(
            caller.ProjectId, deviceId, filters, polling ? null : position, polling ? position : null, page.Limit + 1, read, cancellationToken);
        var served = found.Take(page.Limit).ToList();

        // Polling always gets a next position, even from an empty page; newest-first only while more remain.
        var nextPosition = polling
            ? served.Count > 0 ? served[^1].Position : position
            : found.Count > page.Limit ? served[^1].Position : null;
        var next = nextPosition is null ? null : cursors.Encode(scope, read, nextPosition);

        return PageResults.Page(
            http, served.Select(e => FirmwareEventResponse.From(e.Event)).ToList(), next, polling ? "after" : "cursor");
    }

    private static string Scope(bool polling, long projectId, long? deviceId, EventFilters filters) =>
        string.Create(CultureInfo.InvariantCulture, $"events|{(polling ? "after" : "newest")}|arrival|{projectId}|{deviceId}|{filters.Key}");

    /// <summary>
    /// Every event the filters select, newest arrival first, in one snapshot; answered with the project's feed position
    /// in that snapshot (<c>X-Feed-Position</c>) and the <c>Link</c> to poll from there with the same filters
    /// (<c>after</c>): exactly the events the export did not have, none twice (numbers are handed out in commit order).
    /// </summary>
    private static ExportResult ExportEvents(
        ExportFormat format, HttpContext http, long projectId, long? deviceId, EventFilters filters, ReadContext read, Cursors cursors,
        Exports exports) =>
        exports.Of<EventFeed.FeedEvent, FirmwareEventResponse>(
            format, "events", projectId, read, EventFeed.Export(projectId, deviceId, filters), e => FirmwareEventResponse.From(e.Event),
            async snapshot =>
            {
                var position = await FirmwareEvents.LastFeedPositionAsync(snapshot.Connection, snapshot.Transaction, projectId, http.RequestAborted);
                var after = cursors.Encode(Scope(polling: true, projectId, deviceId, filters), snapshot.Read, new ArrivalPosition(position, long.MaxValue));
                http.Response.Headers[FirmwareApi.FeedPositionHeader] = position.ToString(CultureInfo.InvariantCulture);
                PageResults.SetNextLink(http, "after", after, "limit", "cursor");
                return null;
            });

}
