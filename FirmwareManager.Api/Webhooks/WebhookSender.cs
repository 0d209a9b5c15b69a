using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;
using System.Text.Json;
using Dapper;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Firmware;
using Microsoft.Extensions.Options;
using Npgsql;

namespace FirmwareManager.Api.Webhooks;

/// <summary>What a receiver gets: the kind of event, the delivery's id (as the deliveries list shows it), when it was sent, and the event.</summary>
public sealed record WebhookPayload(string Type, string DeliveryId, long ProjectId, string Timestamp, FirmwareEventResponse Data);

/// <summary>What a receiver gets for a rollout that halted: the rollout as <c>GET /rollouts/{id}</c> shows it then.</summary>
public sealed record RolloutWebhookPayload(string Type, string DeliveryId, long ProjectId, string Timestamp, Rollouts.RolloutResponse Data);

/// <summary>
/// Sends the deliveries that the projection records (the outbox, migration 0029), on every instance with
/// <see cref="WebhookOptions.SendDeliveries"/>: instances share the work by claiming deliveries with
/// <c>FOR UPDATE SKIP LOCKED</c>, and a claim lapses after twice the attempt timeout, so a delivery whose instance died
/// mid-send is sent again (receivers de-duplicate by its id). Per webhook and device, a delivery is sent only once
/// every older one is delivered or given up: in order. A failed attempt is retried after a wait that doubles, up to
/// <see cref="WebhookOptions.MaxRetryDelaySeconds"/>, until <see cref="WebhookOptions.GiveUpAfterHours"/> after it was
/// recorded. Each webhook has a lane of its own: a wave of at most <see cref="WebhookOptions.BatchSize"/> deliveries at
/// a time per instance, sent, recorded, then the next; the waves of different webhooks run side by side and nothing
/// waits for another's, so a slow, failing or hanging receiver delays only its own webhook, by at most the attempt
/// timeout a wave. Ingest and the projection never wait for any.
/// </summary>
public sealed partial class WebhookSender(
    NpgsqlDataSource dataSource,
    DatabaseEngine engine,
    WebhookSecrets secrets,
    Rollouts.DeclaredRollouts rollouts,
    IHttpClientFactory httpClients,
    IOptions<WebhookOptions> options,
    TimeProvider clock,
    ILogger<WebhookSender> logger) : BackgroundService
{
    public const string HttpClientName = "webhooks";

    // Every webhook with a delivery due (deleted ones too: theirs are given up), with its project: one probe of
    // webhook_deliveries_due_idx (migration 0038) per webhook, so it costs what the number of webhooks does, not the
    // number of deliveries pending. The only statement that spans projects (on Citus, every shard).
    private const string WebhooksWithDueDeliveriesSql = """
        SELECT w.project_id AS ProjectId,
               w.id AS WebhookId
        FROM webhooks AS w
        WHERE EXISTS (
            SELECT
            FROM webhook_deliveries AS d
            WHERE d.project_id = w.project_id
              AND d.webhook_id = w.id
              AND d.delivered_at IS NULL
              AND d.given_up_at IS NULL
              AND d.next_attempt_at <= @Now
              AND (d.claimed_until IS NULL OR d.claimed_until < @Now))
        """;

    // Claims the webhook's due deliveries whose device has no older one pending, oldest due first.
    private const string ClaimSql = """
        UPDATE webhook_deliveries AS d
        SET claimed_until = @ClaimedUntil,
            attempts = d.attempts + 1,
            last_attempt_at = @Now
        FROM (
            SELECT c.webhook_id,
                   c.event_id
            FROM webhook_deliveries AS c
            WHERE c.project_id = @ProjectId
              AND c.webhook_id = @WebhookId
              AND c.delivered_at IS NULL
              AND c.given_up_at IS NULL
              AND c.next_attempt_at <= @Now
              AND (c.claimed_until IS NULL OR c.claimed_until < @Now)
              AND NOT EXISTS (
                  SELECT
                  FROM webhook_deliveries AS older
                  WHERE older.project_id = @ProjectId
                    AND older.webhook_id = c.webhook_id
                    AND older.device_id = c.device_id
                    AND older.event_id < c.event_id
                    AND older.delivered_at IS NULL
                    AND older.given_up_at IS NULL)
            ORDER BY c.next_attempt_at
            LIMIT @Limit
            FOR UPDATE SKIP LOCKED
        ) AS due
        WHERE d.project_id = @ProjectId
          AND d.webhook_id = due.webhook_id
          AND d.event_id = due.event_id
        RETURNING d.webhook_id AS WebhookId,
                  d.event_id AS EventId,
                  d.event_type AS EventType,
                  d.attempts AS Attempts,
                  d.redeliveries AS Redeliveries,
                  COALESCE(d.redelivered_at, d.created_at) AS RetryFrom
        """;

    private const string TargetsSql = """
        SELECT w.id AS Id,
               w.url AS Url,
               w.secret_ciphertext AS SecretCiphertext,
               w.deleted_at IS NOT NULL AS Deleted
        FROM webhooks AS w
        WHERE w.project_id = @ProjectId
          AND w.id = ANY(@WebhookIds)
        """;

    private const string EventsSql = $"""
        SELECT {FirmwareEvents.EventColumns}
        FROM firmware_events AS e
        WHERE e.project_id = @ProjectId
          AND e.id = ANY(@EventIds)
        """;

    // An attempt's outcome. Only for the message it sent: a redelivery asked for meanwhile (migration 0039) stays due.
    private const string DeliveredSql = """
        UPDATE webhook_deliveries
        SET delivered_at = CASE WHEN redeliveries = @Redeliveries THEN @Now ELSE delivered_at END,
            last_status = @Status,
            last_error = NULL,
            claimed_until = NULL
        WHERE project_id = @ProjectId
          AND webhook_id = @WebhookId
          AND event_id = @EventId
        """;

    private const string FailedSql = """
        UPDATE webhook_deliveries
        SET last_status = @Status,
            last_error = @Error,
            claimed_until = NULL,
            next_attempt_at = CASE WHEN redeliveries = @Redeliveries THEN @NextAttemptAt ELSE next_attempt_at END,
            given_up_at = CASE WHEN redeliveries = @Redeliveries THEN @GivenUpAt ELSE given_up_at END
        WHERE project_id = @ProjectId
          AND webhook_id = @WebhookId
          AND event_id = @EventId
        """;

    private sealed record Claimed(long WebhookId, long EventId, string EventType, long Attempts, long Redeliveries, DateTime RetryFrom);

    private sealed record Target(long Id, string Url, byte[] SecretCiphertext, bool Deleted);

    /// <summary>An attempt's result: delivered when <see cref="Error"/> is null; <see cref="Final"/> when no retry can help.</summary>
    private sealed record Outcome(Claimed Delivery, int? Status, string? Error, bool Final = false);

    // The lanes with a wave in flight on this instance, by (project, webhook); the waves themselves, awaited on stop.
    private readonly ConcurrentDictionary<(long ProjectId, long WebhookId), Task> _waves = new();
    private readonly SemaphoreSlim _waveEnded = new(0);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (!options.Value.SendDeliveries)
        {
            return;
        }

        while (!stoppingToken.IsCancellationRequested)
        {
            var started = 0;
            try
            {
                started = await DispatchAsync(stoppingToken);
            }
            catch (Exception e) when (!stoppingToken.IsCancellationRequested)
            {
                LogRoundFailed(logger, e);
            }

            if (started == 0)
            {
                try
                {
                    // Until the next look, or at once when a wave ends (its webhook may have more due).
                    await _waveEnded.WaitAsync(TimeSpan.FromMilliseconds(options.Value.PollMilliseconds), stoppingToken);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
            }
        }

        await Task.WhenAll(_waves.Values);
    }

    /// <summary>
    /// Starts a wave for each webhook with deliveries due whose lane is free on this instance; returns how many
    /// started. Does not wait for them.
    /// </summary>
    private async Task<int> DispatchAsync(CancellationToken stoppingToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(stoppingToken);
        List<(long ProjectId, long WebhookId)> due;
        await using (var transaction = await connection.BeginTransactionAsync(stoppingToken))
        {
            if (engine.IsCitus)
            {
                // The one statement that spans projects: allowed here, whatever the service's connections say, for this
                // transaction only (a pooled connection keeps its session's settings).
                await connection.ExecuteAsync(new CommandDefinition(
                    "SET LOCAL citus.multi_task_query_log_level = 'off'", transaction: transaction, cancellationToken: stoppingToken));
            }

            due = (await connection.QueryAsync<(long, long)>(new CommandDefinition(
                WebhooksWithDueDeliveriesSql, new { Now = Now() }, transaction, cancellationToken: stoppingToken))).AsList();
            await transaction.CommitAsync(stoppingToken);
        }

        var started = 0;
        foreach (var lane in due.Where(lane => !_waves.ContainsKey(lane)))
        {
            var claimed = await ClaimAsync(connection, lane.ProjectId, lane.WebhookId, stoppingToken);
            if (claimed.Count == 0)
            {
                continue;
            }

            started++;
            var wave = new TaskCompletionSource();
            _waves[lane] = wave.Task;
            _ = Task.Run(async () =>
            {
                try
                {
                    await SendWaveAsync(lane.ProjectId, claimed, stoppingToken);
                }
                catch (Exception e) when (!stoppingToken.IsCancellationRequested)
                {
                    // Its claims lapse: the deliveries are sent again (receivers de-duplicate by id).
                    LogRoundFailed(logger, e);
                }
                catch (OperationCanceledException)
                {
                }
                finally
                {
                    _waves.TryRemove(lane, out _);
                    wave.SetResult();
                    _waveEnded.Release();
                }
            }, CancellationToken.None);
        }

        return started;
    }

    private async Task<List<Claimed>> ClaimAsync(NpgsqlConnection connection, long projectId, long webhookId, CancellationToken cancellationToken)
    {
        var settings = options.Value;
        var now = Now();
        return (await connection.QueryAsync<Claimed>(new CommandDefinition(ClaimSql, new
        {
            ProjectId = projectId,
            WebhookId = webhookId,
            Now = now,
            ClaimedUntil = now.AddSeconds(settings.TimeoutSeconds * 2),
            Limit = settings.BatchSize,
        }, cancellationToken: cancellationToken))).AsList();
    }

    // One webhook's wave: what its deliveries report, the attempts side by side, and their outcomes in one batch.
    private async Task SendWaveAsync(long projectId, List<Claimed> claimed, CancellationToken cancellationToken)
    {
        var settings = options.Value;
        Dictionary<long, Target> targets;
        Dictionary<long, FirmwareEvent> events;
        await using (var connection = await dataSource.OpenConnectionAsync(cancellationToken))
        {
            targets = (await connection.QueryAsync<Target>(new CommandDefinition(TargetsSql, new
            {
                ProjectId = projectId,
                WebhookIds = claimed.Select(c => c.WebhookId).Distinct().ToArray(),
            }, cancellationToken: cancellationToken))).ToDictionary(t => t.Id);
            // An event's delivery is keyed by its id; a halted rollout's by minus the rollout's id (migration 0034).
            events = (await connection.QueryAsync<FirmwareEvent>(new CommandDefinition(EventsSql, new
            {
                ProjectId = projectId,
                EventIds = claimed.Where(c => c.EventId > 0).Select(c => c.EventId).Distinct().ToArray(),
            }, cancellationToken: cancellationToken))).ToDictionary(e => e.Id);
        }

        var halted = await rollouts.FindAsync(projectId, claimed.Where(c => c.EventId < 0).Select(c => -c.EventId), cancellationToken);
        var outcomes = await Task.WhenAll(claimed.Select(delivery =>
        {
            var deliveryId = FormattableString.Invariant($"{delivery.WebhookId}-{delivery.EventId}");
            var messageId = WebhookDelivery.MessageId(delivery.WebhookId, delivery.EventId, delivery.Redeliveries);
            var sentAt = clock.GetUtcNow();
            byte[]? body = null;
            if (events.TryGetValue(delivery.EventId, out var stored))
            {
                body = JsonSerializer.SerializeToUtf8Bytes(
                    new WebhookPayload(delivery.EventType, deliveryId, projectId, Rfc3339.Format(sentAt.UtcDateTime), FirmwareEventResponse.From(stored)),
                    AppJsonContext.Default.WebhookPayload);
            }
            else if (halted.TryGetValue(-delivery.EventId, out var rollout))
            {
                body = JsonSerializer.SerializeToUtf8Bytes(
                    new RolloutWebhookPayload(delivery.EventType, deliveryId, projectId, Rfc3339.Format(sentAt.UtcDateTime), Rollouts.RolloutResponse.From(rollout)),
                    AppJsonContext.Default.RolloutWebhookPayload);
            }

            return !targets.TryGetValue(delivery.WebhookId, out var target) || target.Deleted
                ? Task.FromResult(new Outcome(delivery, null, "The webhook was deleted.", Final: true))
                : body is null
                    ? Task.FromResult(new Outcome(delivery, null, "What it reports is no longer stored (retention).", Final: true))
                    : SendAsync(delivery, messageId, sentAt, body, target, cancellationToken);
        }));

        await using var recording = await dataSource.OpenConnectionAsync(CancellationToken.None);
        await using var batch = new NpgsqlBatch(recording);
        var recordedAt = Now();
        foreach (var outcome in outcomes)
        {
            var delivery = outcome.Delivery;
            if (outcome.Error is null)
            {
                batch.BatchCommands.Add(Command(DeliveredSql, new() { ["ProjectId"] = projectId, ["WebhookId"] = delivery.WebhookId, ["EventId"] = delivery.EventId, ["Redeliveries"] = delivery.Redeliveries, ["Now"] = recordedAt, ["Status"] = (long?)outcome.Status }));
                continue;
            }

            var next = recordedAt + RetryDelay(delivery.Attempts);
            var givenUp = outcome.Final || next > delivery.RetryFrom.AddHours(settings.GiveUpAfterHours) ? recordedAt : (DateTime?)null;
            batch.BatchCommands.Add(Command(FailedSql, new()
            {
                ["ProjectId"] = projectId,
                ["WebhookId"] = delivery.WebhookId,
                ["EventId"] = delivery.EventId,
                ["Redeliveries"] = delivery.Redeliveries,
                ["Status"] = (long?)outcome.Status,
                ["Error"] = outcome.Error,
                ["NextAttemptAt"] = next,
                ["GivenUpAt"] = givenUp,
            }));
            LogAttemptFailed(logger, delivery.WebhookId, WebhookDelivery.MessageId(delivery.WebhookId, delivery.EventId, delivery.Redeliveries), delivery.Attempts, outcome.Status, outcome.Error, givenUp is not null);
        }

        await batch.ExecuteNonQueryAsync(CancellationToken.None);
    }

    private async Task<Outcome> SendAsync(
        Claimed delivery, string messageId, DateTimeOffset sentAt, byte[] body, Target target, CancellationToken cancellationToken)
    {
        var timestamp = sentAt.ToUnixTimeSeconds();
        using var request = new HttpRequestMessage(HttpMethod.Post, target.Url) { Content = new ByteArrayContent(body) };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        request.Headers.Add("webhook-id", messageId);
        request.Headers.Add("webhook-timestamp", timestamp.ToString(CultureInfo.InvariantCulture));
        request.Headers.Add("webhook-signature", WebhookSecrets.Sign(await secrets.SigningKeyAsync(target.SecretCiphertext, cancellationToken), messageId, sentAt, body));
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(options.Value.TimeoutSeconds));
        try
        {
            using var response = await httpClients.CreateClient(HttpClientName).SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
            var status = (int)response.StatusCode;
            return status is >= 200 and < 300
                ? new Outcome(delivery, status, null)
                : new Outcome(delivery, status, $"The receiver answered {status}.");
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return new Outcome(delivery, null, $"No answer within {options.Value.TimeoutSeconds} s.");
        }
        catch (HttpRequestException e)
        {
            var refused = e.InnerException as WebhookTargetRefusedException ?? e.InnerException?.InnerException as WebhookTargetRefusedException;
            return new Outcome(delivery, null, refused?.Message ?? $"The request failed: {e.HttpRequestError}.");
        }
    }

    private TimeSpan RetryDelay(long attempts)
    {
        var settings = options.Value;
        var seconds = Math.Min(settings.MaxRetryDelaySeconds, settings.FirstRetryDelaySeconds * Math.Pow(2, Math.Min(attempts - 1, 30)));
        // Up to a fifth either way, so that deliveries that failed together do not come back together.
        return TimeSpan.FromSeconds(seconds * (0.8 + (Random.Shared.NextDouble() * 0.4)));
    }

    private DateTime Now() => clock.GetUtcNow().UtcDateTime;

    private static NpgsqlBatchCommand Command(string sql, Dictionary<string, object?> parameters)
    {
        var command = new NpgsqlBatchCommand(sql);
        foreach (var (name, value) in parameters)
        {
            command.Parameters.Add(value switch
            {
                DateTime time => new NpgsqlParameter(name, NpgsqlTypes.NpgsqlDbType.TimestampTz) { Value = time },
                null when name is "Status" => new NpgsqlParameter(name, NpgsqlTypes.NpgsqlDbType.Bigint) { Value = DBNull.Value },
                null when name is "GivenUpAt" => new NpgsqlParameter(name, NpgsqlTypes.NpgsqlDbType.TimestampTz) { Value = DBNull.Value },
                null => new NpgsqlParameter(name, NpgsqlTypes.NpgsqlDbType.Text) { Value = DBNull.Value },
                _ => new NpgsqlParameter(name, value),
            });
        }

        return command;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "A round of webhook deliveries failed; the next round tries again")]
    private static partial void LogRoundFailed(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Information, Message = "Webhook {WebhookId} message {MessageId} attempt {Attempt} failed ({Status}: {Error}); given up: {GivenUp}")]
    private static partial void LogAttemptFailed(ILogger logger, long webhookId, string messageId, long attempt, int? status, string? error, bool givenUp);
}
