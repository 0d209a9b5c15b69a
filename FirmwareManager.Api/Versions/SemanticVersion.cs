using System.Text.RegularExpressions;

namespace FirmwareManager.Api.Versions;

/// <summary>SemVer 2.0.0 syntax (https://semver.org), as a firmware version must be written.</summary>
public static partial class SemanticVersion
{
    /// <summary>Longer versions are rejected; the database holds the same bound.</summary>
    public const int MaxLength = 128;

    // The expression semver.org recommends, with [0-9] for \d: .NET's \d also matches non-ASCII digits.
    [GeneratedRegex(
        @"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)" +
        @"(?:-((?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?" +
        @"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?\z",
        RegexOptions.CultureInvariant | RegexOptions.ExplicitCapture)]
    private static partial Regex Syntax();

    public static bool IsValid(string version) =>
        version.Length <= MaxLength && Syntax().IsMatch(version);
}
