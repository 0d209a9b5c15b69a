using Npgsql;

namespace FirmwareManager.Api.Database;

/// <summary>
/// The engine behind the data source: plain PostgreSQL, or a Citus coordinator (the citus extension is in the
/// database). Everything else is the same on both (docs/scale-out.md); this decides only how statements are planned
/// (<see cref="GenericPlan"/>). Read once, at startup, after the migrations.
/// </summary>
public sealed record DatabaseEngine(bool IsCitus)
{
    private const string CitusInstalledSql = "SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')";

    public static DatabaseEngine Detect(NpgsqlDataSource dataSource)
    {
        using var connection = dataSource.OpenConnection();
        using var command = new NpgsqlCommand(CitusInstalledSql, connection);
        return new DatabaseEngine(command.ExecuteScalar() is true);
    }
}
