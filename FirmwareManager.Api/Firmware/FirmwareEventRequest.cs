using System.ComponentModel.DataAnnotations;
using System.Text;
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
/// <param name="FromFirmware">Optional: the SemVer version the device ran before this update.</param>
/// <param name="ErrorCode">Optional: a short token naming what went wrong, 1-64 of A-Z a-z 0-9 _ . - (e.g. E_SIG_VERIFY).</param>
/// <param name="Detail">Optional: free text, at most 1024 bytes in UTF-8.</param>
public sealed record FirmwareEventBody(
    [property: Required] string? Firmware,
    [property: Required] string? Status,
    string? Timestamp = null,
    string? FromFirmware = null,
    string? ErrorCode = null,
    string? Detail = null);

/// <summary>A validated report: <see cref="OccurredAt"/> is null when the device sent no timestamp (it has no clock).</summary>
public sealed record NewFirmwareEvent(
    string Firmware, string Status, DateTime? OccurredAt, string? FromFirmware = null, string? ErrorCode = null, string? Detail = null);

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

        if (body.FromFirmware is not null && !SemanticVersion.IsValid(body.FromFirmware))
        {
            errors["from_firmware"] = [$"Must be a SemVer 2.0.0 version such as 1.4.2 (at most {SemanticVersion.MaxLength} characters), or left out."];
        }

        if (body.ErrorCode is not null && !ErrorCodes.IsValid(body.ErrorCode))
        {
            errors["error_code"] = [ErrorCodes.Message];
        }

        if (body.Detail is not null && Encoding.UTF8.GetByteCount(body.Detail) > MaxDetailBytes)
        {
            errors["detail"] = [$"Must be at most {MaxDetailBytes} bytes of UTF-8 text."];
        }

        return errors.Count == 0
            ? new NewFirmwareEvent(body.Firmware!, body.Status!, occurredAt, body.FromFirmware, body.ErrorCode, body.Detail)
            : null;
    }

    /// <summary>The most a report's <c>detail</c> may hold, in UTF-8 bytes (the database checks it too, migration 0025).</summary>
    public const int MaxDetailBytes = 1024;

    /// <summary>The metrics label of a rejected report whose body named no known status.</summary>
    public const string InvalidStatusLabel = "invalid";

    /// <summary>The <c>status</c> a rejected report claims, when it is a known one; else <see cref="InvalidStatusLabel"/> (a metrics label from a fixed list).</summary>
    public static string StatusLabel(FirmwareEventBody? body) =>
        body?.Status is { } status && FirmwareStatus.All.Contains(status) ? status : InvalidStatusLabel;
}

/// <summary>Error codes as reports carry them and filters name them: short tokens, the format migration 0025 checks.</summary>
public static class ErrorCodes
{
    public const int MaxLength = 64;

    public const string Message = "Must be 1-64 characters of A-Z, a-z, 0-9, '_', '.' and '-', such as E_SIG_VERIFY.";

    public static bool IsValid(string code) =>
        code.Length is > 0 and <= MaxLength && code.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '.' or '-');
}
