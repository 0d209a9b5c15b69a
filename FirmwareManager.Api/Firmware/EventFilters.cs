using System.Globalization;
using FirmwareManager.Api.Versions;

namespace FirmwareManager.Api.Firmware;

/// <summary>
/// The filters on events that history and the feed share (<c>since</c>, <c>until</c>, <c>status</c>,
/// <c>firmware</c>, <c>error_code</c>), validated; each endpoint pages them with the generic <see cref="Http.PageRequest"/>.
/// </summary>
public sealed record EventFilters(DateTime? Since, DateTime? Until, string[] Statuses, string? Firmware, string? ErrorCode = null)
{
    /// <summary>The filters as one canonical string: a cursor is valid only for the query that made it.</summary>
    /// <remarks>Filters added later join the string only when given, so that cursors handed out before them stay valid.</remarks>
    public string Key => string.Join('|',
        Since?.Ticks.ToString(CultureInfo.InvariantCulture), Until?.Ticks.ToString(CultureInfo.InvariantCulture),
        string.Join(',', Statuses.Order(StringComparer.Ordinal)), Firmware) + (ErrorCode is null ? "" : "|error_code=" + ErrorCode);

    /// <summary>No filter given: every event of the history or feed.</summary>
    public bool IsEmpty => Since is null && Until is null && Statuses.Length == 0 && Firmware is null && ErrorCode is null;

    /// <summary>Parses <c>since</c>, <c>until</c>, <c>status</c> (repeated or comma-separated), <c>firmware</c> and <c>error_code</c>; null when any is bad.</summary>
    public static EventFilters? Parse(
        string? since, string? until, string[]? status, string? firmware, string? errorCode, Dictionary<string, string[]> errors)
    {
        var before = errors.Count;
        var from = ParseTime("since", since, errors);
        var to = ParseTime("until", until, errors);
        if (from > to)
        {
            errors["since"] = ["Must not be after until."];
        }

        var statuses = (status ?? [])
            .SelectMany(s => s.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
            .Distinct(StringComparer.Ordinal)
            .ToArray();
        if (statuses.Any(s => !FirmwareStatus.All.Contains(s)))
        {
            errors["status"] = [$"Each must be one of: {string.Join(", ", FirmwareStatus.All)}."];
        }

        if (firmware is not null && !SemanticVersion.IsValid(firmware))
        {
            errors["firmware"] = ["Must be a SemVer 2.0.0 version such as 1.4.2."];
        }

        if (errorCode is not null && !ErrorCodes.IsValid(errorCode))
        {
            errors["error_code"] = [ErrorCodes.Message];
        }

        return errors.Count == before ? new EventFilters(from, to, statuses, firmware, errorCode) : null;
    }

    private static DateTime? ParseTime(string name, string? text, Dictionary<string, string[]> errors)
    {
        if (text is null)
        {
            return null;
        }

        if (Rfc3339.TryParse(text, out var time))
        {
            return time;
        }

        errors[name] = ["Must be an RFC 3339 date-time with an offset, such as 2024-01-01T00:00:00Z."];
        return null;
    }
}
