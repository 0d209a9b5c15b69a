using Dapper;
using FirmwareManager.Api.Audit;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Firmware;
using Npgsql;

namespace FirmwareManager.Api.Devices;

/// <summary>
/// A change of devices' hardware and tags: the hardware set (or cleared), the tags replaced, or some added and some
/// removed. Null members leave that attribute as it is.
/// </summary>
public sealed record AttributeChange(bool SetHardware, string? Hardware, string[]? Tags, string[] AddTags, string[] RemoveTags);

/// <summary>The devices' hardware and tags (migration 0031), changed by admins, with the counters kept per hardware.</summary>
public sealed class DeviceAttributes(NpgsqlDataSource dataSource)
{
    public const int MaxTags = 16;


    // The version counts of devices whose hardware changes, moved from the old hardware to the new: the version each
    // runs (devices, unexplained downgrades) and each version its newest event failed or rolled back on. Reads the
    // devices before the update below. Into stripe 0, as the projection writes them (Versions/VersionsProjection.cs).
    private const string MoveVersionCountsSql = """
        INSERT INTO firmware_version_counts AS c (project_id, firmware, hardware, stripe, devices, failed, rolled_back, unexplained_downgrades)
        SELECT delta.project_id,
               delta.firmware,
               delta.hardware,
               delta.stripe,
               sum(delta.devices),
               sum(delta.failed),
               sum(delta.rolled_back),
               sum(delta.downgrades)
        FROM (
            SELECT d.project_id, d.current_firmware AS firmware, side.hardware, 0 AS stripe,
                   side.sign AS devices, 0 AS failed, 0 AS rolled_back, side.sign * (d.downgraded_from IS NOT NULL)::int AS downgrades
            FROM devices AS d
            CROSS JOIN LATERAL (VALUES (COALESCE(d.hardware, ''), -1), (COALESCE(@Hardware, ''), 1)) AS side(hardware, sign)
            WHERE d.project_id = @ProjectId
              AND d.id = ANY(@DeviceIds)
              AND d.current_firmware IS NOT NULL
              AND COALESCE(d.hardware, '') <> COALESCE(@Hardware, '')
            UNION ALL
            SELECT s.project_id, s.firmware, side.hardware, 0,
                   0, side.sign * (s.status = 'failed')::int, side.sign * (s.status = 'rolled_back')::int, 0
            FROM device_firmware_status AS s
            JOIN devices AS d ON d.project_id = s.project_id AND d.id = s.device_id
            CROSS JOIN LATERAL (VALUES (COALESCE(d.hardware, ''), -1), (COALESCE(@Hardware, ''), 1)) AS side(hardware, sign)
            WHERE s.project_id = @ProjectId
              AND d.project_id = @ProjectId
              AND s.device_id = ANY(@DeviceIds)
              AND s.status IN ('failed', 'rolled_back')
              AND COALESCE(d.hardware, '') <> COALESCE(@Hardware, '')
        ) AS delta
        GROUP BY delta.project_id, delta.firmware, delta.hardware, delta.stripe
        HAVING sum(delta.devices) <> 0 OR sum(delta.failed) <> 0 OR sum(delta.rolled_back) <> 0 OR sum(delta.downgrades) <> 0
        ORDER BY delta.project_id, delta.firmware, delta.hardware, delta.stripe
        ON CONFLICT (project_id, firmware, hardware, stripe) DO UPDATE
        SET devices = c.devices + EXCLUDED.devices,
            failed = c.failed + EXCLUDED.failed,
            rolled_back = c.rolled_back + EXCLUDED.rolled_back,
            unexplained_downgrades = c.unexplained_downgrades + EXCLUDED.unexplained_downgrades
        """;

    // The silence counts (0027) of the same devices, moved the same way.
    private const string MoveSilenceCountsSql = """
        INSERT INTO firmware_silence_counts AS c (project_id, firmware, hardware, reported_hour, devices)
        SELECT d.project_id,
               d.current_firmware,
               side.hardware,
               date_trunc('hour', d.last_reported_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
               sum(side.sign)
        FROM devices AS d
        CROSS JOIN LATERAL (VALUES (COALESCE(d.hardware, ''), -1), (COALESCE(@Hardware, ''), 1)) AS side(hardware, sign)
        WHERE d.project_id = @ProjectId
          AND d.id = ANY(@DeviceIds)
          AND d.last_event_status IN ('installed', 'updated')
          AND d.current_firmware IS NOT NULL
          AND d.last_reported_at IS NOT NULL
          AND COALESCE(d.hardware, '') <> COALESCE(@Hardware, '')
        GROUP BY 1, 2, 3, 4
        HAVING sum(side.sign) <> 0
        ORDER BY 1, 2, 3, 4
        ON CONFLICT (project_id, firmware, hardware, reported_hour) DO UPDATE
        SET devices = c.devices + EXCLUDED.devices
        """;

    // The most tags a device would have after adding and removing some: checked before the update (the CHECK's own
    // error is reported without its constraint's name by Citus, for a statement over several rows).
    private const string MostTagsAfterSql = """
        SELECT COALESCE(max(cardinality(ARRAY(SELECT DISTINCT t
                                              FROM unnest(d.tags || @AddTags::text[]) AS t
                                              WHERE t <> ALL(@RemoveTags::text[])))), 0)
        FROM devices AS d
        WHERE d.project_id = @ProjectId
          AND d.id = ANY(@DeviceIds)
        """;

    // Tags are kept sorted and without repeats, so that two devices with the same set hold the same array.
    private const string UpdateSql = """
        UPDATE devices AS d
        SET hardware = CASE WHEN @SetHardware THEN @Hardware ELSE d.hardware END,
            tags = CASE WHEN @Tags::text[] IS NOT NULL THEN @Tags::text[]
                        ELSE ARRAY(SELECT DISTINCT t
                                   FROM unnest(d.tags || @AddTags::text[]) AS t
                                   WHERE t <> ALL(@RemoveTags::text[])
                                   ORDER BY t)
                   END
        WHERE d.project_id = @ProjectId
          AND d.id = ANY(@DeviceIds)
        """;

    // Locked in id order, as a projection step locks them (Projections/ProjectionSteps): a step over one of these devices
    // waits, then counts it under its new hardware; this waits for a step in flight, then moves what that step counted.
    private const string LockDevicesSql = """
        SELECT id
        FROM devices
        WHERE project_id = @ProjectId
          AND id = ANY(@DeviceIds)
        ORDER BY id
        FOR UPDATE
        """;

    /// <summary>
    /// Applies <paramref name="change"/> to the devices, all or nothing, audited as one entry. The ids of the devices
    /// the project does not have, when there are any (nothing is changed then).
    /// </summary>
    /// <exception cref="TooManyTagsException">A device would have more than <see cref="MaxTags"/> tags.</exception>
    public async Task<long[]> ChangeAsync(long projectId, long[] deviceIds, AttributeChange change, Actor actor, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        await actor.ConfirmStillAuthorizedAsync(connection, transaction, projectId, requireAdmin: true, cancellationToken);
        var parameters = new
        {
            ProjectId = projectId,
            DeviceIds = deviceIds,
            change.SetHardware,
            change.Hardware,
            change.Tags,
            change.AddTags,
            change.RemoveTags,
        };
        var found = (await connection.QueryAsync<long>(new CommandDefinition(
            LockDevicesSql, parameters, transaction, cancellationToken: cancellationToken))).ToHashSet();
        var missing = deviceIds.Where(id => !found.Contains(id)).ToArray();
        if (missing.Length > 0)
        {
            return missing;
        }

        if (change.SetHardware)
        {
            await connection.ExecuteAsync(new CommandDefinition(MoveVersionCountsSql, parameters, transaction, cancellationToken: cancellationToken));
            await connection.ExecuteAsync(new CommandDefinition(MoveSilenceCountsSql, parameters, transaction, cancellationToken: cancellationToken));
        }

        if (change.Tags is null && change.AddTags.Length > 0 &&
            await connection.ExecuteScalarAsync<int>(new CommandDefinition(MostTagsAfterSql, parameters, transaction, cancellationToken: cancellationToken)) > MaxTags)
        {
            throw new TooManyTagsException($"A device would have more than {MaxTags} tags.");
        }

        await connection.ExecuteAsync(new CommandDefinition(UpdateSql, parameters, transaction, cancellationToken: cancellationToken));

        await AuditLog.RecordAsync(connection, transaction, projectId, actor, "device.attributes_changed",
            deviceIds.Length == 1 ? "device" : "project", deviceIds.Length == 1 ? deviceIds[0] : projectId,
            new
            {
                devices = deviceIds,
                hardware = change.SetHardware ? change.Hardware ?? "(cleared)" : null,
                tags = change.Tags,
                add_tags = change.AddTags,
                remove_tags = change.RemoveTags,
            });
        await transaction.CommitAsync(cancellationToken);
        return [];
    }
}

/// <summary>A change would leave a device with more tags than it may have.</summary>
public sealed class TooManyTagsException(string message) : Exception(message);
