using Dapper;
using FirmwareManager.Api.Audit;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Http;
using Npgsql;

namespace FirmwareManager.Api.Keys;

public sealed record KeyInfo(long Id, string KeyPrefix, DateTime CreatedAt, DateTime? LastUsedAt, DateTime? RevokedAt);

/// <summary>A key as listed: never the key itself, only what tells it apart.</summary>
public sealed record KeyResponse(long Id, string Prefix, string CreatedAt, string? LastUsedAt, string? RevokedAt)
{
    public static KeyResponse From(KeyInfo k) => new(
        k.Id, k.KeyPrefix, Rfc3339.Format(k.CreatedAt), k.LastUsedAt is { } used ? Rfc3339.Format(used) : null,
        k.RevokedAt is { } revoked ? Rfc3339.Format(revoked) : null);
}

/// <summary>A key as created: the only answer that ever holds the key.</summary>
public sealed record NewKeyResponse(long Id, string Prefix, string Key, string CreatedAt);

/// <summary>Whose keys: a device's or a member's. The two live in tables of their own.</summary>
public sealed record KeyOwner(string OwnerKind, long OwnerId)
{
    public static KeyOwner Device(long id) => new("device", id);

    public static KeyOwner Member(long id) => new("member", id);

    public bool IsDevice => OwnerKind == "device";

    public string AuditTarget => IsDevice ? "device_key" : "member_key";

    /// <summary>Whether these are the acting member's own keys (which any member may manage, admin or not).</summary>
    public bool IsMember(Actor actor) => !IsDevice && actor.Kind == "member" && actor.Id == OwnerId;
}

/// <summary>Issuing, listing and revoking device and member keys, each change audited in its transaction.</summary>
public sealed class ProjectKeys(NpgsqlDataSource dataSource, KeyCache? keyCache = null)
{
    // The owner must be in the project and active (not decommissioned, not removed); it is locked so a
    // decommission or removal cannot slip in between. FOR SHARE: two keys issued at once do not wait on each other.
    private const string LockActiveDeviceSql = """
        SELECT id
        FROM devices
        WHERE id = @OwnerId
          AND project_id = @ProjectId
          AND decommissioned_at IS NULL
        FOR SHARE
        """;

    private const string LockActiveMemberSql = """
        SELECT id
        FROM project_memberships
        WHERE id = @OwnerId
          AND project_id = @ProjectId
          AND removed_at IS NULL
        FOR SHARE
        """;

    private const string InsertDeviceKeySql = """
        INSERT INTO device_api_keys (project_id, device_id, key_prefix, key_hash)
        VALUES (@ProjectId, @OwnerId, @KeyPrefix, @KeyHash)
        RETURNING id AS Id, key_prefix AS KeyPrefix, created_at AS CreatedAt, last_used_at AS LastUsedAt, revoked_at AS RevokedAt
        """;

    private const string InsertMemberKeySql = """
        INSERT INTO membership_api_keys (project_id, membership_id, key_prefix, key_hash)
        VALUES (@ProjectId, @OwnerId, @KeyPrefix, @KeyHash)
        RETURNING id AS Id, key_prefix AS KeyPrefix, created_at AS CreatedAt, last_used_at AS LastUsedAt, revoked_at AS RevokedAt
        """;

    /// <summary>Active keys a device or a member may hold at once: enough to rotate, few enough to list.</summary>
    public const int MaxActiveKeysPerOwner = 10;

    /// <summary>Revoked keys a key list shows besides the active ones, most recently revoked first.</summary>
    public const int RevokedKeysListed = 20;

    private const string CountActiveDeviceKeysSql = """
        SELECT count(*)
        FROM device_api_keys
        WHERE project_id = @ProjectId
          AND device_id = @OwnerId
          AND revoked_at IS NULL
        """;

    private const string CountActiveMemberKeysSql = """
        SELECT count(*)
        FROM membership_api_keys
        WHERE project_id = @ProjectId
          AND membership_id = @OwnerId
          AND revoked_at IS NULL
        """;

    /// <summary>The same operations on each kind's table (device_api_keys, membership_api_keys): one statement each, per table.</summary>
    private sealed record KeyTable(string LockActiveOwner, string Insert, string CountActive, string List, string Revoke);

    private static readonly KeyTable DeviceKeys = new(LockActiveDeviceSql, InsertDeviceKeySql, CountActiveDeviceKeysSql, ListDeviceKeysSql, RevokeDeviceKeySql);
    private static readonly KeyTable MemberKeys = new(LockActiveMemberSql, InsertMemberKeySql, CountActiveMemberKeysSql, ListMemberKeysSql, RevokeMemberKeySql);

    private static KeyTable TableOf(KeyOwner owner) => owner.IsDevice ? DeviceKeys : MemberKeys;

    /// <summary>A new key for an active owner in the project; null when there is none.</summary>
    /// <exception cref="LimitReachedException">The owner holds <see cref="MaxActiveKeysPerOwner"/> active keys.</exception>
    public Task<NewKeyResponse?> IssueAsync(long projectId, KeyOwner owner, Actor actor, CancellationToken cancellationToken) =>
        Conflicts.RetryAsync(() => IssueOnceAsync(projectId, owner, actor, cancellationToken), cancellationToken);

    private async Task<NewKeyResponse?> IssueOnceAsync(long projectId, KeyOwner owner, Actor actor, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        await actor.ConfirmStillAuthorizedAsync(connection, transaction, projectId, requireAdmin: !owner.IsMember(actor), cancellationToken);
        var parameters = new { ProjectId = projectId, owner.OwnerId };
        var found = await connection.ExecuteScalarAsync<long?>(new CommandDefinition(
            TableOf(owner).LockActiveOwner, parameters, transaction, cancellationToken: cancellationToken));
        if (found is null)
        {
            return null;
        }

        // Counted under the owner's lock (taken above), so two requests at once cannot both pass it.
        var active = await connection.ExecuteScalarAsync<long>(new CommandDefinition(
            TableOf(owner).CountActive, parameters, transaction, cancellationToken: cancellationToken));
        if (active >= MaxActiveKeysPerOwner)
        {
            throw new LimitReachedException($"A {owner.OwnerKind} holds at most {MaxActiveKeysPerOwner} active keys: revoke one first.");
        }

        var key = await IssueInTransactionAsync(connection, transaction, projectId, owner, actor, cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        return key;
    }

    /// <summary>Issues a key inside a transaction that already holds the owner (creating it, or locked).</summary>
    public static async Task<NewKeyResponse> IssueInTransactionAsync(
        NpgsqlConnection connection, NpgsqlTransaction transaction, long projectId, KeyOwner owner, Actor actor, CancellationToken cancellationToken)
    {
        var issued = owner.IsDevice ? IssuedKey.ForDevice() : IssuedKey.ForMember();
        var info = await connection.QuerySingleAsync<KeyInfo>(new CommandDefinition(
            TableOf(owner).Insert,
            new { ProjectId = projectId, owner.OwnerId, KeyPrefix = issued.Prefix, KeyHash = issued.Hash },
            transaction,
            cancellationToken: cancellationToken));
        await ApiKeyDigests.InsertAsync(connection, transaction, projectId, [issued.Hash], cancellationToken);
        await AuditLog.RecordAsync(connection, transaction, projectId, actor, "key.created", owner.AuditTarget, info.Id,
            new { owner = owner.OwnerKind, owner_id = owner.OwnerId, prefix = issued.Prefix });
        return new NewKeyResponse(info.Id, issued.Prefix, issued.Key, Rfc3339.Format(info.CreatedAt));
    }

    // The project's active admins are locked first, in id order, by every change that could leave the project
    // without an admin or without an admin's key: two admins removing each other at once cannot both win.
    private const string LockActiveAdminsSql = """
        SELECT id
        FROM project_memberships
        WHERE project_id = @ProjectId
          AND role = 'admin'
          AND removed_at IS NULL
        ORDER BY id
        FOR UPDATE
        """;

    internal static Task LockActiveAdminsAsync(
        NpgsqlConnection connection, NpgsqlTransaction transaction, long projectId, CancellationToken cancellationToken) =>
        connection.ExecuteAsync(new CommandDefinition(LockActiveAdminsSql, new { ProjectId = projectId }, transaction, cancellationToken: cancellationToken));

    private const string AnAdminKeepsAKeySql = """
        SELECT EXISTS (
            SELECT 1
            FROM project_memberships AS m
            JOIN membership_api_keys AS k ON k.project_id = m.project_id AND k.membership_id = m.id
            WHERE m.project_id = @ProjectId
              AND m.role = 'admin'
              AND m.removed_at IS NULL
              AND k.revoked_at IS NULL
        )
        """;

    /// <summary>Whether some active admin of the project still has an active key (under <see cref="LockActiveAdminsAsync"/>).</summary>
    internal static Task<bool> AnAdminKeepsAKeyAsync(
        NpgsqlConnection connection, NpgsqlTransaction transaction, long projectId, CancellationToken cancellationToken) =>
        connection.ExecuteScalarAsync<bool>(new CommandDefinition(AnAdminKeepsAKeySql, new { ProjectId = projectId }, transaction, cancellationToken: cancellationToken));

    private const string ListDeviceKeysSql = """
        SELECT k.id AS Id,
               k.key_prefix AS KeyPrefix,
               k.created_at AS CreatedAt,
               k.last_used_at AS LastUsedAt,
               k.revoked_at AS RevokedAt
        FROM device_api_keys AS k
        JOIN devices AS d ON d.project_id = k.project_id AND d.id = k.device_id
        WHERE k.device_id = @OwnerId
          AND k.project_id = @ProjectId
          AND d.project_id = @ProjectId
          AND (k.revoked_at IS NULL
               OR k.id IN (SELECT r.id
                           FROM device_api_keys AS r
                           WHERE r.project_id = @ProjectId
                             AND r.device_id = @OwnerId
                             AND r.revoked_at IS NOT NULL
                           ORDER BY r.revoked_at DESC, r.id DESC
                           LIMIT @RevokedListed))
        ORDER BY k.id
        """;

    private const string ListMemberKeysSql = """
        SELECT k.id AS Id,
               k.key_prefix AS KeyPrefix,
               k.created_at AS CreatedAt,
               k.last_used_at AS LastUsedAt,
               k.revoked_at AS RevokedAt
        FROM membership_api_keys AS k
        JOIN project_memberships AS m ON m.project_id = k.project_id AND m.id = k.membership_id
        WHERE k.membership_id = @OwnerId
          AND k.project_id = @ProjectId
          AND m.project_id = @ProjectId
          AND (k.revoked_at IS NULL
               OR k.id IN (SELECT r.id
                           FROM membership_api_keys AS r
                           WHERE r.project_id = @ProjectId
                             AND r.membership_id = @OwnerId
                             AND r.revoked_at IS NOT NULL
                           ORDER BY r.revoked_at DESC, r.id DESC
                           LIMIT @RevokedListed))
        ORDER BY k.id
        """;

    private const string OwnerExistsSql = """
        SELECT EXISTS (SELECT 1 FROM devices WHERE id = @OwnerId AND project_id = @ProjectId AND @OwnerKind = 'device')
            OR EXISTS (SELECT 1 FROM project_memberships WHERE id = @OwnerId AND project_id = @ProjectId AND @OwnerKind = 'member')
        """;

    /// <summary>
    /// The owner's active keys and its <see cref="RevokedKeysListed"/> most recently revoked ones; null when the owner
    /// is not in the project.
    /// </summary>
    public async Task<IReadOnlyList<KeyInfo>?> ListAsync(long projectId, KeyOwner owner, CancellationToken cancellationToken)
    {
        var parameters = new { ProjectId = projectId, owner.OwnerId, owner.OwnerKind, RevokedListed = RevokedKeysListed };
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        if (!await connection.ExecuteScalarAsync<bool>(new CommandDefinition(OwnerExistsSql, parameters, cancellationToken: cancellationToken)))
        {
            return null;
        }

        return (await connection.QueryAsync<KeyInfo>(new CommandDefinition(
            TableOf(owner).List, parameters, cancellationToken: cancellationToken))).AsList();
    }

    // A device key is revoked under its device's lock, which ingest takes too: a report that waited for it sees
    // the key revoked (FirmwareEvents).
    private const string LockDeviceSql = """
        SELECT id
        FROM devices
        WHERE id = @OwnerId
          AND project_id = @ProjectId
        FOR UPDATE
        """;

    // LEAST skips a NULL: a key revoked again keeps its first revocation time (migration 0011 refuses any other
    // change of it). Not COALESCE, in which Citus refuses now().
    private const string RevokeDeviceKeySql = """
        UPDATE device_api_keys AS k
        SET revoked_at = LEAST(k.revoked_at, now())
        FROM devices AS d
        WHERE k.project_id = @ProjectId
          AND k.id = @KeyId
          AND k.device_id = @OwnerId
          AND d.project_id = @ProjectId
          AND d.id = k.device_id
        RETURNING k.key_prefix
        """;

    private const string RevokeMemberKeySql = """
        UPDATE membership_api_keys AS k
        SET revoked_at = LEAST(k.revoked_at, now())
        FROM project_memberships AS m
        WHERE k.project_id = @ProjectId
          AND k.id = @KeyId
          AND k.membership_id = @OwnerId
          AND m.project_id = @ProjectId
          AND m.id = k.membership_id
        RETURNING k.key_prefix
        """;

    /// <summary>Revokes the key (again is fine); false when the owner has no such key in the project.</summary>
    /// <exception cref="LastAdminKeyException">It is the last active key of the project's admins.</exception>
    public Task<bool> RevokeAsync(long projectId, KeyOwner owner, long keyId, Actor actor, CancellationToken cancellationToken) =>
        Conflicts.RetryAsync(() => RevokeOnceAsync(projectId, owner, keyId, actor, cancellationToken), cancellationToken);

    private async Task<bool> RevokeOnceAsync(long projectId, KeyOwner owner, long keyId, Actor actor, CancellationToken cancellationToken)
    {
        var parameters = new { ProjectId = projectId, owner.OwnerId, KeyId = keyId };
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        if (owner.IsDevice)
        {
            await actor.ConfirmStillAuthorizedAsync(connection, transaction, projectId, requireAdmin: true, cancellationToken);
            await connection.ExecuteAsync(new CommandDefinition(LockDeviceSql, parameters, transaction, cancellationToken: cancellationToken));
        }
        else
        {
            // The admins first (as a removal does), so that two revocations cannot each leave the other the last key.
            await LockActiveAdminsAsync(connection, transaction, projectId, cancellationToken);
            await actor.ConfirmStillAuthorizedAsync(connection, transaction, projectId, requireAdmin: !owner.IsMember(actor), cancellationToken);
        }

        var prefix = await connection.ExecuteScalarAsync<string?>(new CommandDefinition(
            TableOf(owner).Revoke, parameters, transaction, cancellationToken: cancellationToken));
        if (prefix is null)
        {
            return false;
        }

        if (!owner.IsDevice && !await AnAdminKeepsAKeyAsync(connection, transaction, projectId, cancellationToken))
        {
            throw new LastAdminKeyException();
        }

        await AuditLog.RecordAsync(connection, transaction, projectId, actor, "key.revoked", owner.AuditTarget, keyId,
            new { owner = owner.OwnerKind, owner_id = owner.OwnerId, prefix });
        await KeyCache.InvalidateEverywhereAsync(connection, transaction, cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        keyCache?.ForgetAll();
        return true;
    }
}

/// <summary>Thrown when a change would leave no admin of the project with a working key: then no one could manage it.</summary>
public sealed class LastAdminKeyException()
    : Exception("This is the last active key of the project's admins: issue another admin key first (POST /me/keys), or no one could manage the project any more.");
