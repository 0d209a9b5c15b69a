using Semver;

namespace FirmwareManager.Api.Firmware;

/// <summary>SemVer 2.0.0 syntax (https://semver.org), as a firmware version must be written: the Semver package, strict.</summary>
/// <remarks>
/// Strict: no "v" prefix, no leading zeros, all three numbers, ASCII only. Slower than the regular expression it
/// replaced, but negligible at one parse per report (docs/performance.md, "Checking a firmware version").
/// Precedence itself is the database's (migration 0010's precedence key), which orders /firmware-versions.
/// </remarks>
public static class SemanticVersion
{
    /// <summary>Longer versions are rejected; the database holds the same bound.</summary>
    public const int MaxLength = 128;

    public static bool IsValid(string version) =>
        version.Length <= MaxLength && SemVersion.TryParse(version, SemVersionStyles.Strict, out _);
}
