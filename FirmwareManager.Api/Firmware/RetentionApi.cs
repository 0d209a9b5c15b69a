using System.ComponentModel.DataAnnotations;
using System.Text.Json.Serialization.Metadata;
using FirmwareManager.Api.ProjectSettings;
using FirmwareManager.Api.Upkeep;
using Microsoft.Extensions.Options;
using Npgsql;

namespace FirmwareManager.Api.Firmware;

/// <param name="MaxAgeDays">Days, 1 to 36500: the project's events older than this (by their time) are deleted.</param>
public sealed record ProjectRetentionBody([property: Required] int? MaxAgeDays);

/// <summary>
/// The project's event retention: its own setting (null: none), the service's (<c>FirmwareManager:Retention:MaxAgeDays</c>,
/// null: none), the one that applies (the shorter), and the service's audit retention.
/// </summary>
public sealed record ProjectRetentionResponse(int? MaxAgeDays, int? ServiceMaxAgeDays, int? EffectiveMaxAgeDays, int? AuditMaxAgeDays);

/// <summary>
/// A project's own event retention, kept in <c>projects.event_max_age_days</c> (migration 0024) and applied by the
/// upkeep (<see cref="EventUpkeep"/>).
/// </summary>
public sealed class ProjectRetention(NpgsqlDataSource dataSource, IOptions<RetentionOptions> options)
    : ProjectSetting<ProjectRetentionBody, ProjectRetentionResponse>(dataSource)
{
    public override JsonTypeInfo<ProjectRetentionBody> BodyType => RequestJsonContext.Default.ProjectRetentionBody;

    public override int? ValueOf(ProjectRetentionBody body) => body.MaxAgeDays;

    public override string Field => "max_age_days";

    public override (int Min, int Max, string Unit) Bounds => (1, 36500, "days");

    protected override string AuditAction => "project.retention_changed";

    protected override string ReadSql => """
        SELECT event_max_age_days
        FROM projects
        WHERE id = @ProjectId
        """;

    protected override string SetSql => """
        UPDATE projects AS p
        SET event_max_age_days = @Value
        FROM (SELECT id, event_max_age_days FROM projects WHERE id = @ProjectId FOR UPDATE) AS before
        WHERE p.id = before.id
        RETURNING before.event_max_age_days
        """;

    public override ProjectRetentionResponse Describe(int? own)
    {
        var service = options.Value.MaxAgeDays;
        int? effective = (own, service) switch
        {
            ({ } a, { } b) => Math.Min(a, b),
            ({ } a, null) => a,
            (null, var b) => b,
        };
        return new ProjectRetentionResponse(own, service, effective, options.Value.AuditMaxAgeDays);
    }
}

/// <summary><c>/project/retention</c>: any member reads it; admins set (PUT) or clear (DELETE) the project's own.</summary>
public static class RetentionApi
{
    public static IEndpointRouteBuilder MapRetentionApi(this IEndpointRouteBuilder app)
    {
        app.MapProjectSetting<ProjectRetention, ProjectRetentionBody, ProjectRetentionResponse>(
            "/project/retention", "Retention", new(
                Get: "The project's event retention: its own, the service's, the one that applies (the shorter), and the audit log's",
                Set: "Set the project's own event retention in days, 1-36500 (admin, audited)",
                Clear: "Clear the project's own event retention: only the service's applies (admin, audited)"));
        return app;
    }
}
