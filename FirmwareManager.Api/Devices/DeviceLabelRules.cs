namespace FirmwareManager.Api.Devices;

/// <summary>What a hardware revision and a tag may be (the database checks the hardware's format too, migration 0031).</summary>
public static class DeviceLabelRules
{
    public const int MaxLength = 64;

    public const string HardwareMessage = "Must be 1 to 64 of A-Z, a-z, 0-9 and _ . : / + -, such as rev-B or esp32-s3/1.2.";
    public const string TagMessage = "Each must be 1 to 64 of A-Z, a-z, 0-9 and _ . : -, such as site:berlin or pilot.";

    public static bool IsHardware(string? text) =>
        text is { Length: > 0 and <= MaxLength } && text.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '.' or ':' or '/' or '+' or '-');

    public static bool IsTag(string? text) =>
        text is { Length: > 0 and <= MaxLength } && text.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '.' or ':' or '-');

    /// <summary>Checks a set of tags (at most <see cref="DeviceAttributes.MaxTags"/>) and returns it sorted without repeats; null when bad.</summary>
    public static string[]? Tags(string name, string[]? tags, Dictionary<string, string[]> errors)
    {
        if (tags is null)
        {
            return null;
        }

        if (tags.Any(t => !IsTag(t)))
        {
            errors[name] = [TagMessage];
            return null;
        }

        var set = tags.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToArray();
        if (set.Length > DeviceAttributes.MaxTags)
        {
            errors[name] = [$"At most {DeviceAttributes.MaxTags} tags."];
            return null;
        }

        return set;
    }

    /// <summary>A new device's labels from its enrollment body; null when bad.</summary>
    public static DeviceLabels? Labels(string? hardware, string[]? tags, Dictionary<string, string[]> errors)
    {
        if (hardware is not null && !IsHardware(hardware))
        {
            errors["hardware"] = [HardwareMessage];
        }

        var set = Tags("tags", tags, errors);
        return errors.Count == 0 ? new DeviceLabels(hardware, set ?? []) : null;
    }

    /// <summary>A change of labels from a PATCH body; null when bad or when it changes nothing.</summary>
    public static AttributeChange? Change(
        string? hardware, bool clearHardware, string[]? tags, string[]? addTags, string[]? removeTags, Dictionary<string, string[]> errors)
    {
        if (hardware is not null && !IsHardware(hardware))
        {
            errors["hardware"] = [HardwareMessage];
        }

        if (hardware is not null && clearHardware)
        {
            errors["clear_hardware"] = ["Either set hardware or clear it, not both."];
        }

        var set = Tags("tags", tags, errors);
        var add = Tags("add_tags", addTags, errors);
        var remove = Tags("remove_tags", removeTags, errors);
        if (tags is not null && (addTags is not null || removeTags is not null))
        {
            errors["tags"] = ["Either replace the tags or add and remove some, not both."];
        }

        if (errors.Count == 0 && hardware is null && !clearHardware && tags is null && addTags is null && removeTags is null)
        {
            errors["body"] = ["Nothing to change: give hardware, clear_hardware, tags, add_tags or remove_tags."];
        }

        return errors.Count == 0 ? new AttributeChange(hardware is not null || clearHardware, hardware, set, add ?? [], remove ?? []) : null;
    }
}
