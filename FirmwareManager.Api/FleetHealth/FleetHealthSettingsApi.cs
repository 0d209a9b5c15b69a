using System.ComponentModel.DataAnnotations;
using System.Text.Json.Serialization.Metadata;
using FirmwareManager.Api.ProjectSettings;
using Npgsql;

namespace FirmwareManager.Api.FleetHealth;

/// <param name="SilentAfterHours">Hours, 1 to 8760: a device whose newest report is installed or updated and that has reported nothing for longer counts as silent after its update.</param>
public sealed record FleetHealthSettingsBody([property: Required] int? SilentAfterHours);

/// <summary>The project's own setting (null: none) and the one that applies (the default when none).</summary>
public sealed record FleetHealthSettingsResponse(int? SilentAfterHours, int EffectiveSilentAfterHours);

/// <summary>The project's fleet-health setting, kept in <c>projects.silent_after_hours</c> (migration 0027).</summary>
public sealed class FleetHealthSettings(NpgsqlDataSource dataSource) : ProjectSetting<FleetHealthSettingsBody, FleetHealthSettingsResponse>(dataSource)
{
    public const int DefaultSilentAfterHours = 24;

    public override JsonTypeInfo<FleetHealthSettingsBody> BodyType => RequestJsonContext.Default.FleetHealthSettingsBody;

    public override int? ValueOf(FleetHealthSettingsBody body) => body.SilentAfterHours;

    public override string Field => "silent_after_hours";

    public override (int Min, int Max, string Unit) Bounds => (1, 8760, "hours");

    protected override string AuditAction => "project.fleet_health_changed";

    protected override string ReadSql => """
        SELECT silent_after_hours
        FROM projects
        WHERE id = @ProjectId
        """;

    protected override string SetSql => """
        UPDATE projects AS p
        SET silent_after_hours = @Value
        FROM (SELECT id, silent_after_hours FROM projects WHERE id = @ProjectId FOR UPDATE) AS before
        WHERE p.id = before.id
        RETURNING before.silent_after_hours
        """;

    public override FleetHealthSettingsResponse Describe(int? own) => new(own, own ?? DefaultSilentAfterHours);
}

/// <summary><c>/project/fleet-health</c>: any member reads it; admins set (PUT) or clear (DELETE) it.</summary>
public static class FleetHealthSettingsApi
{
    public static IEndpointRouteBuilder MapFleetHealthSettingsApi(this IEndpointRouteBuilder app)
    {
        app.MapProjectSetting<FleetHealthSettings, FleetHealthSettingsBody, FleetHealthSettingsResponse>(
            "/project/fleet-health", "Fleet health", new(
                Get: "The project's fleet-health settings: after how many hours without a report an updated device counts as silent",
                Set: "Set silent_after_hours, 1-8760 (admin, audited)",
                Clear: "Clear the project's setting: the default, 24 hours, applies (admin, audited)"));
        return app;
    }
}
