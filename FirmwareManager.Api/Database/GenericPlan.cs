using Npgsql;

namespace FirmwareManager.Api.Database;

/// <summary>
/// Runs a read on PostgreSQL's generic plan for its prepared statement, for statements whose right plan does not
/// depend on the values. PostgreSQL otherwise plans a prepared statement afresh at each execution for as long as
/// it estimates a plan made for the actual values cheaper than the generic one, and with skewed data (a firmware
/// most of a project runs) or arrays of varying length it keeps estimating so: planning then cost as much as
/// executing (bench/run.sh, raw/PHASE-statements.txt).
/// </summary>
public static class GenericPlan
{
    /// <summary>
    /// <paramref name="sql"/> (one read-only statement) in a read-only transaction with <c>SET LOCAL
    /// plan_cache_mode = force_generic_plan</c>, all in one round trip. The setting ends with the transaction, so
    /// the pooled connection keeps nothing; should the statement fail, the transaction is rolled back before the
    /// connection is used again.
    /// </summary>
    /// <remarks>
    /// On Citus, <paramref name="sql"/> as it is: the coordinator plans each distributed statement at every
    /// execution with its values (which is how it finds the one shard a statement needs), and refuses to plan a
    /// generic plan of a parameterized statement over several tables; the workers plan their shard's statement.
    /// </remarks>
    public static string ReadOnly(string sql, DatabaseEngine engine) =>
        engine.IsCitus ? sql : "BEGIN READ ONLY;\nSET LOCAL plan_cache_mode = force_generic_plan;\n" + sql + ";\nCOMMIT";

    /// <summary>The same for a batch of read-only statements: its commands between the same three, still one round trip.</summary>
    public static void ReadOnly(NpgsqlBatch batch, DatabaseEngine engine)
    {
        if (engine.IsCitus)
        {
            return;
        }

        batch.BatchCommands.Insert(0, new NpgsqlBatchCommand("BEGIN READ ONLY"));
        batch.BatchCommands.Insert(1, new NpgsqlBatchCommand("SET LOCAL plan_cache_mode = force_generic_plan"));
        batch.BatchCommands.Add(new NpgsqlBatchCommand("COMMIT"));
    }
}
