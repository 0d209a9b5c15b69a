using System.Numerics;

namespace FirmwareManager.Api.Versions;

/// <summary>
/// SemVer 2.0.0 precedence (semver.org, item 11): major, minor and patch numerically; a pre-release sorts
/// before its release; pre-release identifiers compare numerically when numeric, else in ASCII order, and
/// numeric ones sort first; build metadata does not count. Versions equal in precedence are then ordered by
/// their text, so the order is total and stable.
/// </summary>
public sealed class SemanticVersionPrecedence : IComparer<string>
{
    public static readonly SemanticVersionPrecedence Instance = new();

    public int Compare(string? x, string? y)
    {
        if (ReferenceEquals(x, y))
        {
            return 0;
        }

        if (x is null || y is null)
        {
            return x is null ? -1 : 1;
        }

        var byPrecedence = ComparePrecedence(x, y);
        return byPrecedence != 0 ? byPrecedence : string.CompareOrdinal(x, y);
    }

    private static int ComparePrecedence(string x, string y)
    {
        var (xCore, xPre) = Split(x);
        var (yCore, yPre) = Split(y);
        var xParts = xCore.Split('.');
        var yParts = yCore.Split('.');
        for (var i = 0; i < 3; i++)
        {
            var byNumber = CompareNumbers(xParts[i], yParts[i]);
            if (byNumber != 0)
            {
                return byNumber;
            }
        }

        if (xPre is null || yPre is null)
        {
            return xPre is null ? (yPre is null ? 0 : 1) : -1;
        }

        var xIds = xPre.Split('.');
        var yIds = yPre.Split('.');
        for (var i = 0; i < Math.Min(xIds.Length, yIds.Length); i++)
        {
            var xNumeric = xIds[i].All(char.IsAsciiDigit);
            var yNumeric = yIds[i].All(char.IsAsciiDigit);
            var byIdentifier = (xNumeric, yNumeric) switch
            {
                (true, true) => CompareNumbers(xIds[i], yIds[i]),
                (true, false) => -1,
                (false, true) => 1,
                _ => string.CompareOrdinal(xIds[i], yIds[i]),
            };
            if (byIdentifier != 0)
            {
                return byIdentifier;
            }
        }

        return xIds.Length.CompareTo(yIds.Length);
    }

    /// <summary>The version without build metadata, split into core and pre-release (null when there is none).</summary>
    private static (string Core, string? PreRelease) Split(string version)
    {
        var plus = version.IndexOf('+', StringComparison.Ordinal);
        var withoutBuild = plus < 0 ? version : version[..plus];
        var dash = withoutBuild.IndexOf('-', StringComparison.Ordinal);
        return dash < 0 ? (withoutBuild, null) : (withoutBuild[..dash], withoutBuild[(dash + 1)..]);
    }

    // Numeric identifiers have no leading zeros (validated on the way in) and may exceed any fixed width.
    private static int CompareNumbers(string x, string y) => BigInteger.Parse(x).CompareTo(BigInteger.Parse(y));
}
