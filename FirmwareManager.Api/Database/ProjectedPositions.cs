using System.Collections.Concurrent;

namespace FirmwareManager.Api.Database;

/// <summary>
/// What this instance knows of each project's projection position: a lower bound, for the <c>X-Projected-Position</c>
/// of reads on a single host (no standby), so that a read of projected state does not spend a statement of its own on
/// the position (on Citus a statement routed to the project's node, as long as a devices page: docs/scale-out.md).
/// <para>
/// It is valid because a position only grows and moves in the transaction that applies the state up to it: a position
/// that the database had reached, seen by a committed projection step of this instance, a wait for
/// <c>min_position</c> or a read of it, is included by every read that starts later. It is kept current by this
/// instance's own steps; projects another instance projects are read again once the last look is older than
/// <paramref name="refreshMs"/> (<c>FirmwareManager:Projections:PositionRefreshMs</c>), so the header trails the state
/// by at most that (0: every read reads the position, as with standbys, where the node that serves the read may be
/// behind the primary).
/// </para>
/// </summary>
public sealed class ProjectedPositions(int refreshMs)
{
    // Beyond this many projects the map starts again: each entry is only a shortcut.
    private const int MaxProjects = 100_000;

    private readonly ConcurrentDictionary<long, (long Position, long At)> _known = new();
    private readonly long _refreshMs = refreshMs;

    /// <summary>
    /// The position a read of <paramref name="projectId"/> starting now includes at least, when this instance looked
    /// at it within the refresh interval; raised to <paramref name="minimum"/>, which the caller has seen reached.
    /// </summary>
    public bool TryGet(long projectId, long minimum, out long position)
    {
        position = 0;
        if (_refreshMs == 0 || !_known.TryGetValue(projectId, out var known) || Environment.TickCount64 - known.At > _refreshMs)
        {
            return false;
        }

        position = Math.Max(known.Position, minimum);
        return true;
    }

    /// <summary>Records that the project's projection had reached <paramref name="position"/> (committed) by now.</summary>
    public void Observe(long projectId, long position)
    {
        if (_refreshMs == 0)
        {
            return;
        }

        if (_known.Count >= MaxProjects)
        {
            _known.Clear();
        }

        var now = Environment.TickCount64;
        _known.AddOrUpdate(projectId, (position, now), (_, before) => (Math.Max(before.Position, position), now));
    }

    /// <summary>For a database whose positions went back (a restore, a test's reset): every project is read again.</summary>
    public void ForgetAll() => _known.Clear();
}
