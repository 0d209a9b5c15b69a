using System.ComponentModel.DataAnnotations;
using FirmwareManager.Api.Versions;

namespace FirmwareManager.Api.Firmware;

/// <summary>The update lifecycle a device reports. The database holds the same list in a CHECK constraint.</summary>
public static class FirmwareStatus
{
    public static readonly IReadOnlyList<string> All =
        ["downloading", "downloaded", "installing", "installed", "updated", "failed", "rolled_back"];

    /// <summary>After these the device runs the event's firmware (for rolled_back: the version it went back to).</summary>
    public static readonly IReadOnlyList<string> SetsCurrentFirmware = ["installed", "updated", "rolled_back"];
}

/// <summary>A report as a device sends it. <c>timestamp</c> is optional: a device without a clock leaves it out.</summary>
/// <param name="Firmware">SemVer 2.0.0 version, at most 128 characters, e.g. 1.4.2 or 2.0.0-rc.1+build.5.</param>
/// <param name="Status">downloading, downloaded, installing, installed, updated, failed or rolled_back.</param>
/// <param name="Timestamp">RFC 3339 with an offset and at most 6 fractional digits; the receive time when left out.</param>
public sealed record FirmwareEventBody([property: Required] string? Firmware, [property: Required] string? Status, string? Timestamp = null);

/// <summary>A validated report: <see cref="OccurredAt"/> is null when the device sent no timestamp (it has no clock).</summary>
public sealed record NewFirmwareEvent(string Firmware, string Status, DateTime? OccurredAt);

public static class FirmwareEventRequest
{
    /// <summary>Validates a report's values, naming every bad field at once (their kinds were checked as it was read).</summary>
    public static NewFirmwareEvent? Validate(FirmwareEventBody? body, out Dictionary<string, string[]> errors)
    {
        errors = [];
        if (body is null)
        {
            errors["body"] = ["The body must be a JSON object."];
            return null;
        }

        if (body.Firmware is null)
        {
            errors["firmware"] = ["Required."];
        }
        else if (!SemanticVersion.IsValid(body.Firmware))
        {
            errors["firmware"] = [$"Must be a SemVer 2.0.0 version such as 1.4.2 or 2.0.0-rc.1+build.5 (no 'v' prefix, no leading zeros, at most {SemanticVersion.MaxLength} characters)."];
        }

        if (body.Status is null)
        {
            errors["status"] = ["Required."];
        }
        else if (!FirmwareStatus.All.Contains(body.Status))
        {
            errors["status"] = [$"Must be one of: {string.Join(", ", FirmwareStatus.All)}."];
        }

        DateTime? occurredAt = null;
        if (body.Timestamp is not null)
        {
            if (Rfc3339.TryParse(body.Timestamp, out var parsed))
            {
                occurredAt = parsed;
            }
            else
            {
                errors["timestamp"] = ["Must be an RFC 3339 date-time with an offset and at most 6 fractional digits, such as 2023-01-01T00:00:00.000000Z, or left out when the device has no clock."];
            }
        }

        return errors.Count == 0 ? new NewFirmwareEvent(body.Firmware!, body.Status!, occurredAt) : null;
    }

    /// <summary>The metrics label of a rejected report whose body named no known status.</summary>
    public const string InvalidStatusLabel = "invalid";

    /// <summary>The <c>status</c> a rejected report claims, when it is a known one; else <see cref="InvalidStatusLabel"/> (a metrics label from a fixed list).</summary>
    public static string StatusLabel(FirmwareEventBody? body) =>
        body?.Status is { } status && FirmwareStatus.All.Contains(status) ? status : InvalidStatusLabel;
}
