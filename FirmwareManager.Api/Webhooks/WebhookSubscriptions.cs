using Dapper;
using FirmwareManager.Api.Audit;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Firmware;
using Npgsql;

namespace FirmwareManager.Api.Webhooks;

/// <summary>The kinds of events a webhook subscribes to: <c>event.</c> and a report's status, and <c>rollout.halted</c>.</summary>
public static class WebhookEventTypes
{
    public const string RolloutHalted = "rollout.halted";

    public static readonly IReadOnlyList<string> All = [.. FirmwareStatus.All.Select(s => "event." + s), RolloutHalted];
}

/// <summary>A webhook. Properties, not a constructor: Dapper reads a text[] column as System.Array, which no constructor takes.</summary>
public sealed record Webhook
{
    public long Id { get; init; }

    public long ProjectId { get; init; }

    public string Url { get; init; } = "";

    public string[] EventTypes { get; init; } = [];

    public string? Firmware { get; init; }

    public DateTime CreatedAt { get; init; }
}

/// <summary>One delivery of an event to a webhook; its id, <c>{webhook_id}-{event_id}</c>, is what receivers de-duplicate by.</summary>
public sealed record WebhookDelivery(
    long WebhookId, long EventId, long DeviceId, string EventType, DateTime CreatedAt, DateTime NextAttemptAt, long Attempts,
    DateTime? LastAttemptAt, long? LastStatus, string? LastError, DateTime? DeliveredAt, DateTime? GivenUpAt, long Redeliveries)
{
    public string Id => FormattableString.Invariant($"{WebhookId}-{EventId}");

    /// <summary>
    /// The message a receiver gets (<c>webhook-id</c>): the delivery's id, the same on every attempt; the nth
    /// redelivery an admin asks for is a new message, <c>{id}.{n}</c>, so a receiver that de-duplicates processes it.
    /// </summary>
    public static string MessageId(long webhookId, long eventId, long redeliveries) => redeliveries == 0
        ? FormattableString.Invariant($"{webhookId}-{eventId}")
        : FormattableString.Invariant($"{webhookId}-{eventId}.{redeliveries}");
}

/// <summary>The webhooks and webhook_deliveries tables (migration 0029), as admins manage them; each change audited in its transaction.</summary>
public sealed class WebhookSubscriptions(NpgsqlDataSource dataSource, WebhookSecrets secrets)
{
    private const string Columns = """
        w.id AS Id,
               w.project_id AS ProjectId,
               w.url AS Url,
               w.event_types AS EventTypes,
               w.firmware AS Firmware,
               w.created_at AS CreatedAt
        """;

    private const string CreateSql = $"""
        INSERT INTO webhooks AS w (project_id, url, event_types, firmware, secret_ciphertext)
        VALUES (@ProjectId, @Url, @EventTypes, @Firmware, @SecretCiphertext)
        RETURNING {Columns}
        """;

    /// <summary>Makes a webhook; its secret is returned this once.</summary>
    public async Task<(Webhook Webhook, string Secret)> CreateAsync(
        long projectId, string url, string[] eventTypes, string? firmware, Actor actor, CancellationToken cancellationToken)
    {
        var (secret, ciphertext) = secrets.New();
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        await actor.ConfirmStillAuthorizedAsync(connection, transaction, projectId, requireAdmin: true, cancellationToken);
        var webhook = await connection.QuerySingleAsync<Webhook>(new CommandDefinition(CreateSql, new
        {
            ProjectId = projectId,
            Url = url,
            EventTypes = eventTypes,
            Firmware = firmware,
            SecretCiphertext = ciphertext,
        }, transaction, cancellationToken: cancellationToken));
        await AuditLog.RecordAsync(connection, transaction, projectId, actor, "webhook.created", "webhook", webhook.Id,
            new { url, events = eventTypes, firmware });
        await transaction.CommitAsync(cancellationToken);
        return (webhook, secret);
    }

    private const string ListSql = $"""
        SELECT {Columns}
        FROM webhooks AS w
        WHERE w.project_id = @ProjectId
          AND w.deleted_at IS NULL
          AND (@WebhookId::bigint IS NULL OR w.id = @WebhookId)
        ORDER BY w.id
        """;

    /// <summary>The project's webhooks (at most 100 may exist), or one of them.</summary>
    public async Task<IReadOnlyList<Webhook>> ListAsync(long projectId, long? webhookId, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        return (await connection.QueryAsync<Webhook>(new CommandDefinition(
            ListSql, new { ProjectId = projectId, WebhookId = webhookId }, cancellationToken: cancellationToken))).AsList();
    }

    private const string CountSql = """
        SELECT count(*)
        FROM webhooks
        WHERE project_id = @ProjectId
          AND deleted_at IS NULL
        """;

    /// <summary>How many webhooks the project has.</summary>
    public async Task<long> CountAsync(long projectId, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        return await connection.ExecuteScalarAsync<long>(new CommandDefinition(CountSql, new { ProjectId = projectId }, cancellationToken: cancellationToken));
    }

    private const string DeleteSql = """
        UPDATE webhooks
        SET deleted_at = now()
        WHERE project_id = @ProjectId
          AND id = @WebhookId
          AND deleted_at IS NULL
        """;

    /// <summary>Deletes a webhook: its pending deliveries are given up when next due. False when there is no such webhook.</summary>
    public async Task<bool> DeleteAsync(long projectId, long webhookId, Actor actor, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        await actor.ConfirmStillAuthorizedAsync(connection, transaction, projectId, requireAdmin: true, cancellationToken);
        var deleted = await connection.ExecuteAsync(new CommandDefinition(
            DeleteSql, new { ProjectId = projectId, WebhookId = webhookId }, transaction, cancellationToken: cancellationToken));
        if (deleted == 0)
        {
            return false;
        }

        await AuditLog.RecordAsync(connection, transaction, projectId, actor, "webhook.deleted", "webhook", webhookId, new { });
        await transaction.CommitAsync(cancellationToken);
        return true;
    }

    private const string DeliveryColumns = """
        d.webhook_id AS WebhookId,
               d.event_id AS EventId,
               d.device_id AS DeviceId,
               d.event_type AS EventType,
               d.created_at AS CreatedAt,
               d.next_attempt_at AS NextAttemptAt,
               d.attempts AS Attempts,
               d.last_attempt_at AS LastAttemptAt,
               d.last_status AS LastStatus,
               d.last_error AS LastError,
               d.delivered_at AS DeliveredAt,
               d.given_up_at AS GivenUpAt,
               d.redeliveries AS Redeliveries
        """;

    // A webhook's deliveries, newest event first, from the cursor: its primary key read backwards.
    private const string DeliveriesPageSql = $"""
        SELECT {DeliveryColumns}
        FROM webhook_deliveries AS d
        WHERE d.project_id = @ProjectId
          AND d.webhook_id = @WebhookId
          AND d.event_id < @BeforeEventId
        ORDER BY d.event_id DESC
        LIMIT @Limit
        """;

    public async Task<IReadOnlyList<WebhookDelivery>> DeliveriesPageAsync(
        long projectId, long webhookId, long beforeEventId, int limit, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        return (await connection.QueryAsync<WebhookDelivery>(new CommandDefinition(DeliveriesPageSql, new
        {
            ProjectId = projectId,
            WebhookId = webhookId,
            BeforeEventId = beforeEventId,
            Limit = limit,
        }, cancellationToken: cancellationToken))).AsList();
    }

    // Due now, whatever it became, as a new message (migration 0039); its attempts so far stay counted. An attempt in
    // flight keeps its claim: the redelivery is sent once that attempt has ended, and that attempt's outcome cannot
    // mark it delivered nor put it off (WebhookSender records an outcome only for the redelivery count it claimed).
    private const string RedeliverSql = $"""
        UPDATE webhook_deliveries AS d
        SET next_attempt_at = now(),
            delivered_at = NULL,
            given_up_at = NULL,
            redelivered_at = now(),
            redeliveries = d.redeliveries + 1
        FROM webhooks AS w
        WHERE d.project_id = @ProjectId
          AND d.webhook_id = @WebhookId
          AND d.event_id = @EventId
          AND w.project_id = @ProjectId
          AND w.id = d.webhook_id
          AND w.deleted_at IS NULL
        RETURNING {DeliveryColumns}
        """;

    /// <summary>Sends a delivery again, as soon as the sender is next round; null when there is no such delivery.</summary>
    public async Task<WebhookDelivery?> RedeliverAsync(long projectId, long webhookId, long eventId, Actor actor, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        await actor.ConfirmStillAuthorizedAsync(connection, transaction, projectId, requireAdmin: true, cancellationToken);
        var delivery = await connection.QuerySingleOrDefaultAsync<WebhookDelivery>(new CommandDefinition(
            RedeliverSql, new { ProjectId = projectId, WebhookId = webhookId, EventId = eventId }, transaction, cancellationToken: cancellationToken));
        if (delivery is null)
        {
            return null;
        }

        await AuditLog.RecordAsync(connection, transaction, projectId, actor, "webhook.redelivered", "webhook", webhookId, new { delivery_id = delivery.Id });
        await transaction.CommitAsync(cancellationToken);
        return delivery;
    }
}
