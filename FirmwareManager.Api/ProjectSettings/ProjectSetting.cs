using System.Text.Json.Serialization.Metadata;
using Dapper;
using FirmwareManager.Api.Audit;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Npgsql;

namespace FirmwareManager.Api.ProjectSettings;

/// <summary>
/// One of a project's own settings: a whole number in a column of <c>projects</c>, null while the project has not
/// set it (a default or the service's setting applies then). Any member reads it; admins set or clear it, each change
/// audited in its transaction. A setting writes its two statements out in full where it is defined, so that a DBA
/// reads them there, and says how its answer reads.
/// </summary>
public abstract class ProjectSetting<TBody, TResponse>(NpgsqlDataSource dataSource)
    where TBody : class
{
    /// <summary>The body a PUT reads (one field, <see cref="Field"/>).</summary>
    public abstract JsonTypeInfo<TBody> BodyType { get; }

    /// <summary>The value a PUT's body sets.</summary>
    public abstract int? ValueOf(TBody body);

    /// <summary>The body's field, the problem's key and the audit entry's (<c>max_age_days</c>).</summary>
    public abstract string Field { get; }

    /// <summary>The values a project may set, and their unit in a problem's words (<c>days</c>).</summary>
    public abstract (int Min, int Max, string Unit) Bounds { get; }

    /// <summary>The audit entry's action (<c>project.retention_changed</c>).</summary>
    protected abstract string AuditAction { get; }

    /// <summary>The project's value, null when it has none: one column of the project's row (<c>@ProjectId</c>).</summary>
    protected abstract string ReadSql { get; }

    /// <summary>
    /// Sets the project's value to <c>@Value</c> and answers the value before, the project's row locked until commit,
    /// so that two admins' changes are audited in the order they are made.
    /// </summary>
    protected abstract string SetSql { get; }

    /// <summary>The answer for a project whose own value is <paramref name="own"/>.</summary>
    public abstract TResponse Describe(int? own);

    public async Task<TResponse> GetAsync(long projectId, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        return Describe(await connection.ExecuteScalarAsync<int?>(new CommandDefinition(ReadSql, new { ProjectId = projectId }, cancellationToken: cancellationToken)));
    }

    /// <summary>Sets the project's value (null clears it), audited in the same transaction.</summary>
    public async Task<TResponse> SetAsync(long projectId, int? value, Actor actor, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        await actor.ConfirmStillAuthorizedAsync(connection, transaction, projectId, requireAdmin: true, cancellationToken);
        var before = await connection.ExecuteScalarAsync<int?>(new CommandDefinition(
            SetSql, new { ProjectId = projectId, Value = value }, transaction, cancellationToken: cancellationToken));
        await AuditLog.RecordAsync(connection, transaction, projectId, actor, AuditAction, "project", projectId,
            new Dictionary<string, int?> { [$"{Field}_before"] = before, [Field] = value });
        await transaction.CommitAsync(cancellationToken);
        return Describe(value);
    }
}

/// <summary>What the three endpoints of a project setting say about themselves in the API's document.</summary>
public sealed record ProjectSettingSummaries(string Get, string Set, string Clear);

/// <summary>A project setting's endpoints: GET (members), PUT with a body of one field and DELETE (admins, audited).</summary>
public static class ProjectSettingApi
{
    public static RouteGroupBuilder MapProjectSetting<TSetting, TBody, TResponse>(
        this IEndpointRouteBuilder app, string path, string tag, ProjectSettingSummaries summaries)
        where TSetting : ProjectSetting<TBody, TResponse>
        where TBody : class
    {
        var group = app.MapGroup(path).WithTags(tag).WithKeyProblems();
        group.MapGet("/", Endpoints<TSetting, TBody, TResponse>.GetAsync).RequireAuthorization(Policies.Member)
            .WithSummary(summaries.Get);
        group.MapPut("/", Endpoints<TSetting, TBody, TResponse>.SetAsync).RequireAuthorization(Policies.Admin).Accepts<TBody>("application/json")
            .ProducesValidationProblem()
            .WithSummary(summaries.Set);
        group.MapDelete("/", Endpoints<TSetting, TBody, TResponse>.ClearAsync).RequireAuthorization(Policies.Admin)
            .WithSummary(summaries.Clear);
        return group;
    }

    // The setting comes from the request's services, not as a parameter: ASP.NET Core's route-handler analyzer throws
    // on a parameter whose type is a type parameter (dotnet/aspnetcore#56831, fixed in .NET 11).
    private static class Endpoints<TSetting, TBody, TResponse>
        where TSetting : ProjectSetting<TBody, TResponse>
        where TBody : class
    {
        public static async Task<Ok<TResponse>> GetAsync(HttpContext http, CancellationToken cancellationToken) =>
            TypedResults.Ok(await Setting(http).GetAsync(Caller.From(http.User).ProjectId, cancellationToken));

        public static async Task<Results<Ok<TResponse>, ProblemHttpResult>> SetAsync(HttpContext http, CancellationToken cancellationToken)
        {
            var setting = Setting(http);
            var (body, problem) = await JsonBody.ReadAsync(http, RequestLimits.MaxBodyBytes, setting.BodyType, cancellationToken);
            if (body is null)
            {
                return problem!;
            }

            var (min, max, unit) = setting.Bounds;
            if (setting.ValueOf(body) is not { } value || value < min || value > max)
            {
                return Problems.Validation(
                    new Dictionary<string, string[]> { [setting.Field] = [$"Must be a whole number of {unit} from {min} to {max} (DELETE clears it)."] },
                    "Invalid project setting.");
            }

            var caller = Caller.From(http.User);
            return TypedResults.Ok(await setting.SetAsync(caller.ProjectId, value, Actor.From(caller), cancellationToken));
        }

        public static async Task<Ok<TResponse>> ClearAsync(HttpContext http, CancellationToken cancellationToken)
        {
            var caller = Caller.From(http.User);
            return TypedResults.Ok(await Setting(http).SetAsync(caller.ProjectId, null, Actor.From(caller), cancellationToken));
        }

        private static TSetting Setting(HttpContext http) => http.RequestServices.GetRequiredService<TSetting>();
    }
}
