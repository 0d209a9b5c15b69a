namespace FirmwareManager.Tests.Infrastructure;

/// <summary>
/// A test of streaming replicas of one PostgreSQL server: skipped on Citus, whose data is on the workers, so that a
/// standby of the coordinator says nothing about how fresh a read is (Citus has its own secondaries per worker,
/// <c>citus.use_secondary_nodes</c>; docs/scale-out.md).
/// </summary>
public sealed class SingleServerFactAttribute : FactAttribute
{
    public SingleServerFactAttribute()
    {
        if (PostgresServer.IsCitus)
        {
            Skip = "One server's streaming replicas: runs on plain PostgreSQL";
        }
    }
}
