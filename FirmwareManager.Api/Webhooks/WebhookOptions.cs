using System.ComponentModel.DataAnnotations;

namespace FirmwareManager.Api.Webhooks;

/// <summary>The <c>FirmwareManager:Webhooks</c> section.</summary>
public sealed class WebhookOptions
{
    public const string Section = "FirmwareManager:Webhooks";

    /// <summary>Whether this instance sends deliveries (every instance records them). Off: another instance sends them.</summary>
    public bool SendDeliveries { get; set; } = true;

    /// <summary>
    /// Allow targets on loopback, private, link-local and other non-public addresses. Off (the default), a URL whose
    /// host resolves to one is refused when the webhook is made, and a connection to one is refused when sending
    /// (server-side request forgery).
    /// </summary>
    public bool AllowPrivateTargets { get; set; }

    /// <summary>How often the sender looks for deliveries that are due, in milliseconds.</summary>
    [Range(50, 60000)]
    public int PollMilliseconds { get; set; } = 1000;

    /// <summary>How long one attempt may take, connection included, in seconds.</summary>
    [Range(1, 120)]
    public int TimeoutSeconds { get; set; } = 10;

    /// <summary>The wait before the second attempt, in seconds; it doubles with each failure, up to <see cref="MaxRetryDelaySeconds"/>.</summary>
    [Range(0.01, 3600)]
    public double FirstRetryDelaySeconds { get; set; } = 10;

    /// <summary>The longest wait between two attempts, in seconds.</summary>
    [Range(0.01, 86400)]
    public double MaxRetryDelaySeconds { get; set; } = 3600;

    /// <summary>A delivery is retried until this many hours after it was recorded, then given up (a redelivery starts again).</summary>
    [Range(0.001, 720)]
    public double GiveUpAfterHours { get; set; } = 25;

    /// <summary>Deliveries one instance claims and sends at a time, per webhook (a wave; each webhook has a lane of its own).</summary>
    [Range(1, 1000)]
    public int BatchSize { get; set; } = 100;
}
