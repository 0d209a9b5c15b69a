using System.ComponentModel.DataAnnotations;
using System.Globalization;
using FirmwareManager.Api.Audit;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Firmware;
using FirmwareManager.Api.Http;
using FirmwareManager.Api.Versions;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;

namespace FirmwareManager.Api.Webhooks;

/// <summary>Which events a webhook gets, besides their type.</summary>
/// <param name="Firmware">Only events of this version.</param>
public sealed record WebhookFilters(string? Firmware = null);

/// <summary>A webhook to make.</summary>
/// <param name="Filters">Optional: {"firmware": "2.0.0"}.</param>
public sealed record CreateWebhookBody(
    [property: Required, System.ComponentModel.Description(CreateWebhookBody.UrlDescription)] string? Url,
    [property: Required, System.ComponentModel.Description(CreateWebhookBody.EventsDescription)] string[]? Events,
    WebhookFilters? Filters = null)
{
    internal const string UrlDescription =
        "http or https, on port 80, 443 or above 1023; its host must resolve to public addresses (unless the service allows private ones).";

    internal const string EventsDescription =
        "1 to 16 of: event.downloading, event.downloaded, event.installing, event.installed, event.updated, event.failed, event.rolled_back, rollout.halted.";
}

public sealed record WebhookResponse(long Id, string Url, string[] Events, WebhookFilters Filters, string CreatedAt)
{
    public static WebhookResponse From(Webhook w) => new(w.Id, w.Url, w.EventTypes, new WebhookFilters(w.Firmware), Rfc3339.Format(w.CreatedAt));
}

/// <summary>What <c>POST /webhooks</c> answers: the webhook, and its signing secret, shown this once.</summary>
public sealed record CreatedWebhookResponse(WebhookResponse Webhook, string Secret);

/// <summary>A delivery as admins see it: <c>state</c> is pending, delivered or given_up.</summary>
public sealed record WebhookDeliveryResponse(
    string Id, long EventId, long DeviceId, string Type, string State, long Attempts, string CreatedAt, string? LastAttemptAt,
    long? LastStatus, string? LastError, string? NextAttemptAt, string? DeliveredAt, string? GivenUpAt, long Redeliveries)
{
    public static WebhookDeliveryResponse From(WebhookDelivery d) => new(
        d.Id, d.EventId, d.DeviceId, d.EventType,
        d.DeliveredAt is not null ? "delivered" : d.GivenUpAt is not null ? "given_up" : "pending",
        d.Attempts, Rfc3339.Format(d.CreatedAt), Format(d.LastAttemptAt), d.LastStatus, d.LastError,
        d.DeliveredAt is null && d.GivenUpAt is null ? Rfc3339.Format(d.NextAttemptAt) : null,
        Format(d.DeliveredAt), Format(d.GivenUpAt), d.Redeliveries);

    private static string? Format(DateTime? time) => time is { } t ? Rfc3339.Format(t) : null;
}

/// <summary><c>/webhooks</c>: admins subscribe URLs to the project's events and watch their deliveries.</summary>
public static class WebhooksApi
{
    public const int MaxWebhooksPerProject = 100;

    public static RouteGroupBuilder MapWebhooksApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/webhooks")
            .RequireAuthorization(Policies.Admin)
            .WithTags("Webhooks")
            .WithKeyProblems()
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status404NotFound);

        group.MapPost("/", CreateAsync).Accepts<CreateWebhookBody>("application/json")
            .ProducesProblem(StatusCodes.Status409Conflict)
            .WithSummary("Subscribe a URL to the project's events (admin); the answer shows the signing secret once")
            .WithDescription("Each matching event is sent as a POST with a JSON body and the Standard Webhooks headers webhook-id, webhook-timestamp and webhook-signature (README, \"Webhooks\").");
        group.MapGet("/", ListAsync).WithSummary("The project's webhooks (admin)");
        group.MapGet("/{webhook_id}", GetAsync).WithSummary("One webhook (admin)");
        group.MapDelete("/{webhook_id}", DeleteAsync).WithSummary("Delete a webhook: nothing more is sent to it (admin)");
        group.MapGet("/{webhook_id}/deliveries", DeliveriesAsync)
            .WithSummary("A webhook's deliveries, newest event first, with their state and last attempt (admin)")
            .WithDescription("Paged: limit 1-1000 (default 100); follow the Link rel=\"next\" header for more.");
        group.MapPost("/{webhook_id}/deliveries/{delivery_id}/redeliver", RedeliverAsync)
            .WithSummary("Send a delivery again, whatever became of it (admin)");
        return group;
    }

    private static async Task<Results<Created<CreatedWebhookResponse>, ProblemHttpResult>> CreateAsync(
        HttpContext http, WebhookSubscriptions webhooks, WebhookTargets targets, CancellationToken cancellationToken)
    {
        var (body, problem) = await JsonBody.ReadAsync(http, RequestLimits.MaxBodyBytes, RequestJsonContext.Default.CreateWebhookBody, cancellationToken);
        if (body is null)
        {
            return problem!;
        }

        var errors = new Dictionary<string, string[]>();
        if (body.Url is null)
        {
            errors["url"] = ["Required."];
        }
        else if (body.Url.Length > 2048)
        {
            errors["url"] = ["Must be at most 2048 characters."];
        }
        else if (await targets.CheckAsync(body.Url, cancellationToken) is { } refused)
        {
            errors["url"] = [refused];
        }

        var events = body.Events?.Distinct(StringComparer.Ordinal).ToArray();
        if (events is null || events.Length == 0)
        {
            errors["events"] = ["Required: one or more of " + string.Join(", ", WebhookEventTypes.All) + "."];
        }
        else if (events.Any(e => !WebhookEventTypes.All.Contains(e)))
        {
            errors["events"] = ["Each must be one of " + string.Join(", ", WebhookEventTypes.All) + "."];
        }

        if (body.Filters?.Firmware is { } firmware && !SemanticVersion.IsValid(firmware))
        {
            errors["filters.firmware"] = ["Must be a SemVer 2.0.0 version such as 1.4.2."];
        }

        if (errors.Count > 0)
        {
            return Problems.Validation(errors, "The webhook is not valid.");
        }

        var caller = Caller.From(http.User);
        if (await webhooks.CountAsync(caller.ProjectId, cancellationToken) >= MaxWebhooksPerProject)
        {
            return TypedResults.Problem(statusCode: StatusCodes.Status409Conflict, title: "Too many webhooks",
                detail: $"A project has at most {MaxWebhooksPerProject} webhooks: delete one first.");
        }

        var (webhook, secret) = await webhooks.CreateAsync(caller.ProjectId, body.Url!, events!, body.Filters?.Firmware, Actor.From(caller), cancellationToken);
        return TypedResults.Created(
            string.Create(CultureInfo.InvariantCulture, $"/webhooks/{webhook.Id}"), new CreatedWebhookResponse(WebhookResponse.From(webhook), secret));
    }

    private static async Task<Ok<List<WebhookResponse>>> ListAsync(HttpContext http, WebhookSubscriptions webhooks, CancellationToken cancellationToken) =>
        TypedResults.Ok((await webhooks.ListAsync(Caller.From(http.User).ProjectId, null, cancellationToken)).Select(WebhookResponse.From).ToList());

    private static async Task<Results<Ok<WebhookResponse>, ProblemHttpResult>> GetAsync(
        [FromRoute(Name = "webhook_id")] string webhookIdText, HttpContext http, WebhookSubscriptions webhooks, CancellationToken cancellationToken)
    {
        if (!Problems.TryParseId(webhookIdText, out var webhookId))
        {
            return Problems.InvalidId("webhook_id", webhookIdText);
        }

        var found = await webhooks.ListAsync(Caller.From(http.User).ProjectId, webhookId, cancellationToken);
        return found.Count == 0 ? NotFound(webhookId) : TypedResults.Ok(WebhookResponse.From(found[0]));
    }

    private static async Task<Results<NoContent, ProblemHttpResult>> DeleteAsync(
        [FromRoute(Name = "webhook_id")] string webhookIdText, HttpContext http, WebhookSubscriptions webhooks, CancellationToken cancellationToken)
    {
        if (!Problems.TryParseId(webhookIdText, out var webhookId))
        {
            return Problems.InvalidId("webhook_id", webhookIdText);
        }

        var caller = Caller.From(http.User);
        return await webhooks.DeleteAsync(caller.ProjectId, webhookId, Actor.From(caller), cancellationToken) ? TypedResults.NoContent() : NotFound(webhookId);
    }

    private static async Task<Results<Ok<List<WebhookDeliveryResponse>>, ProblemHttpResult>> DeliveriesAsync(
        [FromRoute(Name = "webhook_id")] string webhookIdText,
        [FromQuery] string? limit,
        [FromQuery] string? cursor,
        HttpContext http,
        WebhookSubscriptions webhooks,
        Cursors cursors,
        CancellationToken cancellationToken)
    {
        var errors = new Dictionary<string, string[]>();
        var page = PageRequest.Parse(limit, cursor, errors);
        if (!Problems.TryParseId(webhookIdText, out var webhookId))
        {
            return Problems.InvalidId("webhook_id", webhookIdText);
        }

        if (page is null)
        {
            return Problems.Validation(errors, "Invalid query parameters.");
        }

        var caller = Caller.From(http.User);
        if ((await webhooks.ListAsync(caller.ProjectId, webhookId, cancellationToken)).Count == 0)
        {
            return NotFound(webhookId);
        }

        var read = Database.ReadContext.OnPrimary();
        var scope = string.Create(CultureInfo.InvariantCulture, $"deliveries|{caller.ProjectId}|{webhookId}");
        return await KeysetPage.ServeAsync(http, cursors, scope, page, read,
            (IdPosition? before, int count) => webhooks.DeliveriesPageAsync(caller.ProjectId, webhookId, before?.Id ?? long.MaxValue, count, cancellationToken),
            delivery => new IdPosition(delivery.EventId), WebhookDeliveryResponse.From, cancellationToken);
    }

    private static async Task<Results<Accepted<WebhookDeliveryResponse>, ProblemHttpResult>> RedeliverAsync(
        [FromRoute(Name = "webhook_id")] string webhookIdText,
        [FromRoute(Name = "delivery_id")] string deliveryId,
        HttpContext http,
        WebhookSubscriptions webhooks,
        CancellationToken cancellationToken)
    {
        if (!Problems.TryParseId(webhookIdText, out var webhookId))
        {
            return Problems.InvalidId("webhook_id", webhookIdText);
        }

        if (!TryParseDeliveryId(deliveryId, webhookIdText, out var eventId))
        {
            return Problems.Validation(
                new Dictionary<string, string[]> { ["delivery_id"] = ["Must be a delivery id of this webhook, such as 12-3456 (an event's) or 12--7 (a rollout's)."] },
                "Invalid delivery id.");
        }

        var caller = Caller.From(http.User);
        var delivery = await webhooks.RedeliverAsync(caller.ProjectId, webhookId, eventId, Actor.From(caller), cancellationToken);
        return delivery is null
            ? Problems.NotFound("Delivery not found", $"Webhook {webhookId} has no delivery {deliveryId} in your project.")
            : TypedResults.Accepted(string.Create(CultureInfo.InvariantCulture, $"/webhooks/{webhookId}/deliveries"), WebhookDeliveryResponse.From(delivery));
    }

    /// <summary>
    /// A delivery id is <c>{webhook_id}-{event_id}</c>, as the webhook-id header carries it; a rollout's halt is
    /// delivered under the rollout's id negated, so its id is <c>{webhook_id}--{rollout_id}</c>.
    /// </summary>
    internal static bool TryParseDeliveryId(string deliveryId, string webhookIdText, out long eventId)
    {
        eventId = 0;
        var dash = deliveryId.IndexOf('-', StringComparison.Ordinal);
        if (dash < 0 || deliveryId[..dash] != webhookIdText)
        {
            return false;
        }

        var rest = deliveryId[(dash + 1)..];
        var halt = rest.StartsWith('-');
        if (!Problems.TryParseId(halt ? rest[1..] : rest, out var id) || (halt && id == 0))
        {
            return false;
        }

        eventId = halt ? -id : id;
        return true;
    }

    private static ProblemHttpResult NotFound(long webhookId) => Problems.NotFoundIn("webhook", webhookId);
}
