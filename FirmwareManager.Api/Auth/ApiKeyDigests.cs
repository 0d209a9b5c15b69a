using Dapper;
using Npgsql;

namespace FirmwareManager.Api.Auth;

/// <summary>
/// <c>api_key_digests</c>: which project each key belongs to, by its digest (migration 0015). Written with the key,
/// in its transaction, never changed. A lookup reads it first, so that it then reads one project's key rows: on
/// Citus the digests are spread by digest and the keys by project, and neither read leaves its shard.
/// </summary>
public static class ApiKeyDigests
{
    private const string InsertSql = """
        INSERT INTO api_key_digests (key_hash, project_id)
        SELECT h.key_hash,
               @ProjectId
        FROM unnest(@KeyHashes::bytea[]) AS h(key_hash)
        """;

    /// <summary>Records that the keys with these digests are <paramref name="projectId"/>'s.</summary>
    public static Task InsertAsync(
        NpgsqlConnection connection, NpgsqlTransaction transaction, long projectId, byte[][] keyHashes, CancellationToken cancellationToken) =>
        connection.ExecuteAsync(new CommandDefinition(
            InsertSql, new { ProjectId = projectId, KeyHashes = keyHashes }, transaction, cancellationToken: cancellationToken));
}
