using Dapper;
using Npgsql;

namespace FirmwareManager.Api.Firmware;

public sealed record FirmwareEvent(
    long Id, long DeviceId, long ProjectId, string Firmware, string Status, DateTime OccurredAt, DateTime ReceivedAt);

public sealed record RecordedEvent(FirmwareEvent Event, bool Created);

/// <summary>The firmware_events table and the device state that follows it.</summary>
public sealed class FirmwareEvents(NpgsqlDataSource dataSource)
{
    // One statement, so the event and the device's state commit together. The event goes to the project the
    // device belongs to now. A repeat (same device, project, time, firmware, status) inserts nothing.
    // Current firmware moves only forward in the device's time; LEAST keeps a device whose clock runs ahead
    // from pinning it until that future date.
    private const string RecordSql = """
        WITH device AS (
            SELECT id,
                   project_id
            FROM devices
            WHERE id = @DeviceId
        ),
        inserted AS (
            INSERT INTO firmware_events (device_id, project_id, firmware, status, occurred_at)
            SELECT device.id,
                   device.project_id,
                   @Firmware,
                   @Status,
                   COALESCE(@OccurredAt, now())
            FROM device
            ON CONFLICT (device_id, project_id, occurred_at, firmware, status) DO NOTHING
            RETURNING id, device_id, project_id, firmware, status, occurred_at, received_at
        ),
        device_state AS (
            UPDATE devices AS d
            SET last_reported_at = GREATEST(d.last_reported_at, i.received_at),
                current_firmware = CASE WHEN i.sets_firmware AND (d.current_firmware_at IS NULL OR d.current_firmware_at <= i.reported_at)
                                        THEN i.firmware ELSE d.current_firmware END,
                current_firmware_at = CASE WHEN i.sets_firmware AND (d.current_firmware_at IS NULL OR d.current_firmware_at <= i.reported_at)
                                           THEN i.reported_at ELSE d.current_firmware_at END
            FROM (
                SELECT device_id,
                       firmware,
                       received_at,
                       LEAST(occurred_at, received_at) AS reported_at,
                       status = ANY(@SetsCurrentFirmware) AS sets_firmware
                FROM inserted
            ) AS i
            WHERE d.id = i.device_id
        )
        SELECT id AS Id,
               device_id AS DeviceId,
               project_id AS ProjectId,
               firmware AS Firmware,
               status AS Status,
               occurred_at AS OccurredAt,
               received_at AS ReceivedAt
        FROM inserted
        """;

    // Runs only after a conflict, in a statement of its own: the conflicting row may have been committed by a
    // concurrent request after the insert's snapshot was taken.
    private const string FindRepeatSql = """
        SELECT e.id AS Id,
               e.device_id AS DeviceId,
               e.project_id AS ProjectId,
               e.firmware AS Firmware,
               e.status AS Status,
               e.occurred_at AS OccurredAt,
               e.received_at AS ReceivedAt
        FROM firmware_events AS e
        JOIN devices AS d ON d.id = e.device_id AND d.project_id = e.project_id
        WHERE e.device_id = @DeviceId
          AND e.occurred_at = @OccurredAt
          AND e.firmware = @Firmware
          AND e.status = @Status
        """;

    /// <summary>Stores the event, or finds the identical one already stored; null when the device does not exist.</summary>
    public async Task<RecordedEvent?> RecordAsync(long deviceId, NewFirmwareEvent report, CancellationToken cancellationToken)
    {
        var parameters = new
        {
            DeviceId = deviceId,
            report.Firmware,
            report.Status,
            report.OccurredAt,
            SetsCurrentFirmware = FirmwareStatus.SetsCurrentFirmware.ToArray(),
        };
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        var created = await connection.QuerySingleOrDefaultAsync<FirmwareEvent>(
            new CommandDefinition(RecordSql, parameters, cancellationToken: cancellationToken));
        if (created is not null)
        {
            return new RecordedEvent(created, Created: true);
        }

        if (report.OccurredAt is null)
        {
            return null;
        }

        var existing = await connection.QuerySingleOrDefaultAsync<FirmwareEvent>(
            new CommandDefinition(FindRepeatSql, parameters, cancellationToken: cancellationToken));
        return existing is null ? null : new RecordedEvent(existing, Created: false);
    }

    // Newest first by the device's clock: a backward scan of firmware_events_device_history_key, which also
    // breaks ties in a stable order (firmware, then status). Events the device reported while it belonged to
    // another project are not this project's and are never returned.
    private const string ListForDeviceSql = """
        SELECT e.id AS Id,
               e.device_id AS DeviceId,
               e.project_id AS ProjectId,
               e.firmware AS Firmware,
               e.status AS Status,
               e.occurred_at AS OccurredAt,
               e.received_at AS ReceivedAt
        FROM firmware_events AS e
        WHERE e.device_id = @DeviceId
          AND e.project_id = @ProjectId
        ORDER BY e.occurred_at DESC,
                 e.firmware DESC,
                 e.status DESC
        """;

    private const string DeviceInProjectSql = """
        SELECT EXISTS (
            SELECT 1
            FROM devices
            WHERE id = @DeviceId
              AND project_id = @ProjectId
        )
        """;

    /// <summary>The device's history in the project, newest first; null when the device is not in that project.</summary>
    public async Task<IReadOnlyList<FirmwareEvent>?> ListForDeviceAsync(long deviceId, long projectId, CancellationToken cancellationToken)
    {
        var parameters = new { DeviceId = deviceId, ProjectId = projectId };
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        if (!await connection.ExecuteScalarAsync<bool>(new CommandDefinition(DeviceInProjectSql, parameters, cancellationToken: cancellationToken)))
        {
            return null;
        }

        var events = await connection.QueryAsync<FirmwareEvent>(
            new CommandDefinition(ListForDeviceSql, parameters, cancellationToken: cancellationToken));
        return events.AsList();
    }

    private const string FindSql = """
        SELECT e.id AS Id,
               e.device_id AS DeviceId,
               e.project_id AS ProjectId,
               e.firmware AS Firmware,
               e.status AS Status,
               e.occurred_at AS OccurredAt,
               e.received_at AS ReceivedAt
        FROM firmware_events AS e
        JOIN devices AS d ON d.id = e.device_id AND d.project_id = e.project_id
        WHERE e.id = @EventId
          AND e.device_id = @DeviceId
          AND e.project_id = @ProjectId
        """;

    /// <summary>One event of a device in the project; null when there is no such event there.</summary>
    public async Task<FirmwareEvent?> FindAsync(long deviceId, long projectId, long eventId, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        return await connection.QuerySingleOrDefaultAsync<FirmwareEvent>(new CommandDefinition(
            FindSql, new { DeviceId = deviceId, ProjectId = projectId, EventId = eventId }, cancellationToken: cancellationToken));
    }
}
