using Npgsql;

namespace FirmwareManager.Api.Database;

/// <summary>
/// Runs a transaction again when PostgreSQL aborted it for a deadlock (40P01) or a serialization failure (40001):
/// nothing of it was stored, and a second try usually goes through once the other transaction is done. The
/// service takes its locks in a fixed order, so these come from orders it does not control (an operator's
/// session, a migration), and from a row routed to a partition that changed under it (the upkeep job attaching a
/// month). Past <see cref="Attempts"/> the error reaches the handler, which answers 503.
/// </summary>
public static class Conflicts
{
    public const int Attempts = 3;

    public static async Task<T> RetryAsync<T>(Func<Task<T>> transaction, CancellationToken cancellationToken)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return await transaction();
            }
            catch (PostgresException e) when (attempt < Attempts && IsConflict(e))
            {
                await Task.Delay(Random.Shared.Next(5, 25) * attempt, cancellationToken);
            }
        }
    }

    public static bool IsConflict(PostgresException e) =>
        e.SqlState is PostgresErrorCodes.DeadlockDetected or PostgresErrorCodes.SerializationFailure || IsRerouted(e);

    // A row routed to firmware_events' default partition while the upkeep job attached the partition of its month:
    // PostgreSQL checks the default partition's new constraint once it has the lock, and refuses the row (23514,
    // "violates partition constraint", no constraint name). Tried again, the row goes to its month's partition.
    private static bool IsRerouted(PostgresException e) =>
        e.SqlState == PostgresErrorCodes.CheckViolation
        && e.ConstraintName is null
        && e.MessageText.Contains("violates partition constraint", StringComparison.Ordinal);
}
