using Dapper;
using FirmwareManager.Api.Firmware;
using Npgsql;

namespace FirmwareManager.Api.Devices;

public sealed record DeviceSummary(
    long Id,
    long ProjectId,
    string? Name,
    string? Serial,
    string? CurrentFirmware,
    DateTime? CurrentFirmwareAt,
    DateTime? LastReportedAt,
    string? LastEventStatus,
    DateTime? LastEventAt,
    DateTime CreatedAt,
    DateTime? DecommissionedAt);

/// <summary>The devices table, as the fleet views read it.</summary>
public sealed class Devices(NpgsqlDataSource dataSource)
{
    // Devices in id order after the cursor. With a firmware filter this is a range of
    // devices_project_firmware_idx; without, of devices_project_id_id_idx. Devices that never reported
    // count as silent.
    private const string PageSql = """
        SELECT d.id AS Id,
               d.project_id AS ProjectId,
               d.name AS Name,
               d.serial AS Serial,
               d.current_firmware AS CurrentFirmware,
               d.current_firmware_at AS CurrentFirmwareAt,
               d.last_reported_at AS LastReportedAt,
               d.last_event_status AS LastEventStatus,
               d.last_event_at AS LastEventAt,
               d.created_at AS CreatedAt,
               d.decommissioned_at AS DecommissionedAt
        FROM devices AS d
        WHERE d.project_id = @ProjectId
          AND d.id > @AfterId
          AND (@Firmware::text IS NULL OR d.current_firmware = @Firmware)
          AND (cardinality(@Statuses::text[]) = 0 OR d.last_event_status = ANY(@Statuses))
          AND (@SilentSince::timestamptz IS NULL OR d.last_reported_at IS NULL OR d.last_reported_at < @SilentSince)
        ORDER BY d.id
        LIMIT @Limit
        """;

    public async Task<IReadOnlyList<DeviceSummary>> PageAsync(
        long projectId, string? firmware, string[] statusOfLastEvent, DateTime? silentSince, long afterId, int limit,
        CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        var devices = await connection.QueryAsync<DeviceSummary>(new CommandDefinition(PageSql, new
        {
            ProjectId = projectId,
            AfterId = afterId,
            Firmware = firmware,
            Statuses = statusOfLastEvent,
            SilentSince = silentSince,
            Limit = limit,
        }, cancellationToken: cancellationToken));
        return devices.AsList();
    }

    private const string FindSql = """
        SELECT d.id AS Id,
               d.project_id AS ProjectId,
               d.name AS Name,
               d.serial AS Serial,
               d.current_firmware AS CurrentFirmware,
               d.current_firmware_at AS CurrentFirmwareAt,
               d.last_reported_at AS LastReportedAt,
               d.last_event_status AS LastEventStatus,
               d.last_event_at AS LastEventAt,
               d.created_at AS CreatedAt,
               d.decommissioned_at AS DecommissionedAt
        FROM devices AS d
        WHERE d.id = @DeviceId
          AND d.project_id = @ProjectId
        """;

    /// <summary>The device when it is in the project; null otherwise.</summary>
    public async Task<DeviceSummary?> FindAsync(long projectId, long deviceId, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        return await connection.QuerySingleOrDefaultAsync<DeviceSummary>(
            new CommandDefinition(FindSql, new { ProjectId = projectId, DeviceId = deviceId }, cancellationToken: cancellationToken));
    }
}

/// <summary>A device as the API shows it. Times are RFC 3339 in UTC, or null before the device reported.</summary>
public sealed record DeviceResponse(
    long Id,
    long ProjectId,
    string? Name,
    string? Serial,
    string? CurrentFirmware,
    string? CurrentFirmwareReportedAt,
    string? LastReportedAt,
    string? LastEventStatus,
    string? LastEventAt,
    string CreatedAt,
    string? DecommissionedAt)
{
    public static DeviceResponse From(DeviceSummary d) => new(
        d.Id,
        d.ProjectId,
        d.Name,
        d.Serial,
        d.CurrentFirmware,
        Format(d.CurrentFirmwareAt),
        Format(d.LastReportedAt),
        d.LastEventStatus,
        Format(d.LastEventAt),
        Rfc3339.Format(d.CreatedAt),
        Format(d.DecommissionedAt));

    private static string? Format(DateTime? time) => time is { } t ? Rfc3339.Format(t) : null;
}
