using Semver;

namespace FirmwareManager.Tests.Versions;

/// <summary>
/// The order /firmware-versions promises, from the Semver package rather than from the service: SemVer 2.0.0
/// precedence (semver.org, item 11; build metadata does not count), ties by the version's text. The tests hold
/// the database's precedence key (migration 0010) to it.
/// </summary>
public sealed class SemVerOrder : IComparer<string>
{
    public static readonly SemVerOrder Instance = new();

    public int Compare(string? x, string? y)
    {
        if (x is null || y is null)
        {
            return x is null ? (y is null ? 0 : -1) : 1;
        }

        var byPrecedence = SemVersion.ComparePrecedence(SemVersion.Parse(x, SemVersionStyles.Strict), SemVersion.Parse(y, SemVersionStyles.Strict));
        return byPrecedence != 0 ? byPrecedence : string.CompareOrdinal(x, y);
    }
}
