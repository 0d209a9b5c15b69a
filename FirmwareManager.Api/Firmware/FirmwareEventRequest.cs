using System.Text.Json;
using FirmwareManager.Api.Http;
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

/// <summary>A validated report: <see cref="OccurredAt"/> is null when the device sent no timestamp (it has no clock).</summary>
public sealed record NewFirmwareEvent(string Firmware, string Status, DateTime? OccurredAt);

public static class FirmwareEventRequest
{
    /// <summary>Validates <c>{"firmware", "status", "timestamp"?}</c>, naming every bad field at once. Other fields are ignored.</summary>
    public static NewFirmwareEvent? Validate(JsonElement body, out Dictionary<string, string[]> errors)
    {
        errors = [];
        if (body.ValueKind != JsonValueKind.Object)
        {
            errors["body"] = ["The body must be a JSON object."];
            return null;
        }

        var firmware = RequiredString(body, "firmware", errors);
        if (firmware is not null && !SemanticVersion.IsValid(firmware))
        {
            errors["firmware"] = [$"Must be a SemVer 2.0.0 version such as 1.4.2 or 2.0.0-rc.1+build.5 (no 'v' prefix, no leading zeros, at most {SemanticVersion.MaxLength} characters)."];
        }

        var status = RequiredString(body, "status", errors);
        if (status is not null && !FirmwareStatus.All.Contains(status))
        {
            errors["status"] = [$"Must be one of: {string.Join(", ", FirmwareStatus.All)}."];
        }

        DateTime? occurredAt = null;
        if (body.TryGetProperty("timestamp", out var timestamp) && timestamp.ValueKind != JsonValueKind.Null)
        {
            var isText = timestamp.TryGetText(out var text);
            if (isText && Rfc3339.TryParse(text!, out var parsed))
            {
                occurredAt = parsed;
            }
            else if (!isText && timestamp.ValueKind == JsonValueKind.String)
            {
                errors["timestamp"] = [JsonBody.InvalidTextMessage];
            }
            else
            {
                errors["timestamp"] = ["Must be an RFC 3339 date-time with an offset and at most 6 fractional digits, such as 2023-01-01T00:00:00.000000Z, or left out when the device has no clock."];
            }
        }

        return errors.Count == 0 ? new NewFirmwareEvent(firmware!, status!, occurredAt) : null;
    }

    /// <summary>The metrics label of a rejected report whose body named no known status.</summary>
    public const string InvalidStatusLabel = "invalid";

    /// <summary>The <c>status</c> a rejected body claims, when it is a known one; else <see cref="InvalidStatusLabel"/> (a metrics label from a fixed list).</summary>
    public static string StatusLabel(JsonElement body) =>
        body.ValueKind == JsonValueKind.Object &&
        body.TryGetProperty("status", out var status) &&
        status.TryGetText(out var text) &&
        FirmwareStatus.All.Contains(text)
            ? text
            : InvalidStatusLabel;

    private static string? RequiredString(JsonElement body, string name, Dictionary<string, string[]> errors)
    {
        if (!body.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null)
        {
            errors[name] = ["Required."];
            return null;
        }

        if (value.ValueKind != JsonValueKind.String)
        {
            errors[name] = ["Must be a string."];
            return null;
        }

        if (!value.TryGetText(out var text))
        {
            errors[name] = [JsonBody.InvalidTextMessage];
            return null;
        }

        return text;
    }
}
