using Dapper;
using FirmwareManager.Api.Audit;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Keys;
using Npgsql;

namespace FirmwareManager.Api.Devices;

/// <summary>A bulk enrollment's devices: device i has id <c>Ids[i]</c>, serial <c>Serials[i]</c> and key i of <c>Keys</c>.</summary>
public sealed record EnrolledDevices(long[] Ids, IReadOnlyList<string?> Serials, IssuedDeviceKeys Keys)
{
    public int Count => Ids.Length;
}

/// <summary>Thrown when a serial is already taken in the project; nothing of the call was stored.</summary>
public sealed class SerialTakenException(string message) : Exception(message);

/// <summary>Creating, enrolling in bulk and decommissioning devices, each change audited in its transaction.</summary>
/// <summary>A new device's hardware revision (or none) and tags (sorted, no repeats).</summary>
public sealed record DeviceLabels(string? Hardware, string[] Tags)
{
    public static readonly DeviceLabels None = new(null, []);
}

public sealed class DeviceProvisioning(NpgsqlDataSource dataSource, KeyCache? keyCache = null)
{
    private const string InsertDeviceSql = """
        INSERT INTO devices (project_id, name, serial, hardware, tags)
        VALUES (@ProjectId, @Name, @Serial, @Hardware, @Tags)
        RETURNING id
        """;

    /// <summary>A new device with its first key.</summary>
    public Task<(long DeviceId, NewKeyResponse Key)> CreateAsync(
        long projectId, string? name, string? serial, DeviceLabels labels, Actor actor, CancellationToken cancellationToken) =>
        Conflicts.RetryAsync(() => CreateOnceAsync(projectId, name, serial, labels, actor, cancellationToken), cancellationToken);

    private async Task<(long DeviceId, NewKeyResponse Key)> CreateOnceAsync(
        long projectId, string? name, string? serial, DeviceLabels labels, Actor actor, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        await actor.ConfirmStillAuthorizedAsync(connection, transaction, projectId, requireAdmin: true, cancellationToken);
        long deviceId;
        try
        {
            deviceId = await connection.ExecuteScalarAsync<long>(new CommandDefinition(
                InsertDeviceSql, new { ProjectId = projectId, Name = name, Serial = serial, labels.Hardware, labels.Tags }, transaction,
                cancellationToken: cancellationToken));
        }
        catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.UniqueViolation)
        {
            throw new SerialTakenException($"A device with serial '{serial}' already exists in this project.");
        }

        await AuditLog.RecordAsync(connection, transaction, projectId, actor, "device.created", "device", deviceId,
            new { name, serial, hardware = labels.Hardware, tags = labels.Tags });
        var key = await ProjectKeys.IssueInTransactionAsync(connection, transaction, projectId, KeyOwner.Device(deviceId), actor, cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        return (deviceId, key);
    }

    // Ids are drawn from the identity first, so each generated key is matched to its device without relying on
    // the order rows come back in.
    private const string ReserveDeviceIdsSql = """
        SELECT nextval(pg_get_serial_sequence('devices', 'id'))
        FROM generate_series(1, @Count)
        """;

    private const string InsertDevicesSql = """
        INSERT INTO devices (id, project_id, serial, hardware, tags)
        SELECT d.id,
               @ProjectId,
               d.serial,
               @Hardware,
               @Tags
        FROM unnest(@Ids::bigint[], @Serials::text[]) AS d(id, serial)
        ON CONFLICT (project_id, serial) WHERE serial IS NOT NULL DO NOTHING
        RETURNING id
        """;

    private const string InsertDeviceKeysSql = """
        INSERT INTO device_api_keys (project_id, device_id, key_prefix, key_hash)
        SELECT @ProjectId,
               k.device_id,
               k.key_prefix,
               k.key_hash
        FROM unnest(@Ids::bigint[], @Prefixes::text[], @Hashes::bytea[]) AS k(device_id, key_prefix, key_hash)
        """;

    // Rows go in 5,000 at a time: every array of a chunk (ids, serials, prefixes, hashes) stays under the 85 KB
    // from which the runtime puts an array on the large-object heap, which only a full collection reclaims, and
    // Npgsql's buffers for a chunk's parameters stay small (in one statement, the API held far more after a call:
    // docs/provisioning.md).
    private const int EnrollChunk = 5_000;

    /// <summary>
    /// Enrolls <paramref name="serials"/>.Count devices (serials may be null) with a key each, all or nothing, in one
    /// transaction; audited as one entry naming the id range.
    /// </summary>
    public Task<EnrolledDevices> EnrollAsync(
        long projectId, IReadOnlyList<string?> serials, DeviceLabels labels, Actor actor, CancellationToken cancellationToken) =>
        Conflicts.RetryAsync(() => EnrollOnceAsync(projectId, serials, labels, actor, cancellationToken), cancellationToken);

    private async Task<EnrolledDevices> EnrollOnceAsync(
        long projectId, IReadOnlyList<string?> serials, DeviceLabels labels, Actor actor, CancellationToken cancellationToken)
    {
        var ids = new long[serials.Count];
        var keys = IssuedDeviceKeys.Generate(serials.Count);
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        await actor.ConfirmStillAuthorizedAsync(connection, transaction, projectId, requireAdmin: true, cancellationToken);
        for (var offset = 0; offset < serials.Count; offset += EnrollChunk)
        {
            var count = Math.Min(EnrollChunk, serials.Count - offset);
            var chunkSerials = new string?[count];
            var prefixes = new string[count];
            var hashes = new byte[count][];
            for (var i = 0; i < count; i++)
            {
                chunkSerials[i] = serials[offset + i];
                prefixes[i] = keys.Prefix(offset + i);
                hashes[i] = keys.Hash(offset + i);
            }

            var chunkIds = (await connection.QueryAsync<long>(new CommandDefinition(
                ReserveDeviceIdsSql, new { Count = count }, transaction, cancellationToken: cancellationToken))).ToArray();
            // A serial the project has is skipped, not an error: a row short means one was taken, and the transaction
            // is abandoned. (On Citus a unique violation in a statement over many rows comes back as an internal
            // error, and the row count such a statement reports is of the rows it read: the rows returned count.)
            var inserted = (await connection.QueryAsync<long>(new CommandDefinition(
                InsertDevicesSql, new { ProjectId = projectId, Ids = chunkIds, Serials = chunkSerials, labels.Hardware, labels.Tags }, transaction,
                cancellationToken: cancellationToken))).Count();
            if (inserted != count)
            {
                throw new SerialTakenException("At least one of the serials already belongs to a device of this project; no device was enrolled.");
            }

            await connection.ExecuteAsync(new CommandDefinition(
                InsertDeviceKeysSql, new { ProjectId = projectId, Ids = chunkIds, Prefixes = prefixes, Hashes = hashes }, transaction,
                cancellationToken: cancellationToken));
            await ApiKeyDigests.InsertAsync(connection, transaction, projectId, hashes, cancellationToken);
            chunkIds.CopyTo(ids, offset);
        }

        await AuditLog.RecordAsync(connection, transaction, projectId, actor, "devices.enrolled", "device", ids[0],
            new { count = ids.Length, first_id = ids[0], last_id = ids[^1], hardware = labels.Hardware, tags = labels.Tags });
        await transaction.CommitAsync(cancellationToken);
        return new EnrolledDevices(ids, serials, keys);
    }

    // FOR UPDATE first: the lock a report's transaction (KEY SHARE) waits for, so that no report of the device is stored
    // after this commits. The update alone (FOR NO KEY UPDATE) would not make it wait.
    private const string DecommissionSql = """
        UPDATE devices AS d
        -- LEAST skips a NULL: the first decommission's time stays. (Citus refuses now() inside COALESCE or CASE.)
        SET decommissioned_at = LEAST(d.decommissioned_at, now())
        FROM (
            SELECT project_id, id
            FROM devices
            WHERE id = @DeviceId
              AND project_id = @ProjectId
            FOR UPDATE
        ) AS locked
        WHERE d.project_id = @ProjectId
          AND d.project_id = locked.project_id
          AND d.id = locked.id
        RETURNING d.id
        """;

    // In id order, as every statement that locks several key rows takes them, so two never wait on each other.
    private const string RevokeAllDeviceKeysSql = """
        UPDATE device_api_keys AS k
        SET revoked_at = now()
        FROM (
            SELECT project_id, id
            FROM device_api_keys
            WHERE project_id = @ProjectId
              AND device_id = @DeviceId
              AND revoked_at IS NULL
            ORDER BY id
            FOR UPDATE
        ) AS locked
        WHERE k.project_id = @ProjectId
          AND k.project_id = locked.project_id
          AND k.id = locked.id
        """;

    /// <summary>
    /// Decommissions the device (again is fine) and revokes its keys; false when it is not in the project. The
    /// device's row is locked by the update, which ingest waits for: no report of it is stored after this commits.
    /// </summary>
    public Task<bool> DecommissionAsync(long projectId, long deviceId, Actor actor, CancellationToken cancellationToken) =>
        Conflicts.RetryAsync(() => DecommissionOnceAsync(projectId, deviceId, actor, cancellationToken), cancellationToken);

    private async Task<bool> DecommissionOnceAsync(long projectId, long deviceId, Actor actor, CancellationToken cancellationToken)
    {
        var parameters = new { ProjectId = projectId, DeviceId = deviceId };
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        await actor.ConfirmStillAuthorizedAsync(connection, transaction, projectId, requireAdmin: true, cancellationToken);
        if (await connection.ExecuteScalarAsync<long?>(new CommandDefinition(DecommissionSql, parameters, transaction, cancellationToken: cancellationToken)) is null)
        {
            return false;
        }

        var revoked = await connection.ExecuteAsync(new CommandDefinition(RevokeAllDeviceKeysSql, parameters, transaction, cancellationToken: cancellationToken));
        await AuditLog.RecordAsync(connection, transaction, projectId, actor, "device.decommissioned", "device", deviceId, new { keys_revoked = revoked });
        await KeyCache.InvalidateEverywhereAsync(connection, transaction, cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        keyCache?.ForgetAll();
        return true;
    }
}
