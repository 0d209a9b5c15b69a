using Npgsql;

namespace FirmwareManager.Api.Database;

/// <summary>What a database failure means for the request that met it: the classes the error handling answers 503 for, and a standby's reads retry on.</summary>
public static class DatabaseFailures
{
    // A deadlock (40P01) or serialization failure (40001) that the transaction's retries did not get past.
    public static bool IsConflict(Exception exception) => exception switch
    {
        PostgresException e when Conflicts.IsConflict(e) => true,
        _ => exception.InnerException is not null && IsConflict(exception.InnerException),
    };

    // Citus, when a worker goes away while the coordinator commits the transaction there: XX000 (Citus' internal
    // error class) with this message. The worker's outcome is unknown, and retrying is safe.
    public static bool IsCommitOutcomeUnknown(Exception exception) => exception switch
    {
        PostgresException { SqlState: "XX000" } e when e.MessageText.StartsWith("could not commit transaction", StringComparison.Ordinal) => true,
        _ => exception.InnerException is not null && IsCommitOutcomeUnknown(exception.InnerException),
    };

    // Between migrations 0021 and 0023, a CHECK bounds the events table's times until it becomes a partition: a
    // report dated after the boundary is refused for those seconds, and stored once 0023 has run.
    public static bool IsBeingPartitioned(Exception exception) => exception switch
    {
        PostgresException { SqlState: PostgresErrorCodes.CheckViolation, ConstraintName: "firmware_events_before_partitioning" } => true,
        _ => exception.InnerException is not null && IsBeingPartitioned(exception.InnerException),
    };

    // Class 08 (connection exception) and 57P (the server shutting down or terminating the session, e.g.
    // pg_terminate_backend) mean the database went away under the request, whatever the statement was.
    public static bool IsDatabaseUnavailable(Exception exception) => exception switch
    {
        NpgsqlException { IsTransient: true } => true,
        PostgresException { SqlState: "53300" } => true,
        PostgresException { SqlState: var state } when state.StartsWith("08", StringComparison.Ordinal) || state.StartsWith("57P", StringComparison.Ordinal) => true,
        TimeoutException => true,
        _ => exception.InnerException is not null && IsDatabaseUnavailable(exception.InnerException),
    };
}
