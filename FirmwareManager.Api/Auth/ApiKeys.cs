using System.Diagnostics;
using FirmwareManager.Api.Observability;

namespace FirmwareManager.Api.Auth;

/// <summary>
/// The caller behind an API key digest: from the <see cref="KeyCache"/> when it holds a usable answer, else from the
/// database (<see cref="KeyLookups"/>), whose answer the cache then keeps; and each use noted (<see cref="KeyUsage"/>).
/// </summary>
public sealed class ApiKeys(KeyCache cache, KeyLookups lookups, KeyUsage usage, FirmwareMetrics metrics)
{
    public async Task<Caller?> FindCallerAsync(byte[] keyHash, CancellationToken cancellationToken)
    {
        var digest = new KeyDigest(keyHash);
        if (cache.TryGet(digest, out var cached, out var lastUsedAt))
        {
            metrics.KeyCache(hit: true);
            if (cached is not null)
            {
                usage.Used(cached.Kind, cached.ProjectId, cached.KeyId, lastUsedAt);
            }

            return cached;
        }

        metrics.KeyCache(hit: false);
        // Read before the lookup is queued, so before its query starts.
        var generation = cache.Generation;
        var lookupStarted = Stopwatch.GetTimestamp();
        var found = await lookups.FindAsync(keyHash, digest, cancellationToken);
        metrics.IngestStage("key_lookup", Stopwatch.GetElapsedTime(lookupStarted));
        var caller = found?.ToCaller();
        if (caller is not null)
        {
            usage.Used(caller.Kind, caller.ProjectId, caller.KeyId, found!.LastUsedAt);
        }

        // Noted just now (when it was due): later cache hits need not note it again.
        cache.Store(digest, caller, caller is null ? null : DateTime.UtcNow, generation);
        return caller;
    }
}
