namespace FirmwareManager.Tests.Infrastructure;

/// <summary>
/// A test of what only Citus does (how it splits a statement over shards): it runs when the tests run on Citus
/// (<c>FIRMWAREMANAGER_TEST_ENGINE=citus</c>, as <c>.ci/run</c>'s second pass does) and is reported as skipped on
/// plain PostgreSQL, where there is nothing for it to check.
/// </summary>
public sealed class CitusFactAttribute : FactAttribute
{
    public CitusFactAttribute()
    {
        if (!PostgresServer.IsCitus)
        {
            Skip = $"Citus only: {PostgresServer.EngineVariable}=citus runs it";
        }
    }
}
