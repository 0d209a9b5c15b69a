using System.Globalization;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;

namespace FirmwareManager.Api.Audit;

/// <summary><c>/audit</c>: who created or revoked which key, changed which member, created or decommissioned which device.</summary>
public static class AuditApi
{
    public static IEndpointRouteBuilder MapAuditApi(this IEndpointRouteBuilder app)
    {
        app.MapGroup("/audit").RequireAuthorization(Policies.Admin).WithTags("Audit").WithKeyProblems().ProducesValidationProblem()
            .MapGet("/", AuditPageAsync)
            .WithSummary("Key, member and device changes: who, what, when, with which key prefix; newest first, paged (admin)")
            .WithDescription("With Accept: text/csv or application/x-ndjson, every entry, streamed in one snapshot.")
            .Exports();
        return app;
    }

    private static async Task<Results<Ok<List<AuditEntryResponse>>, ProblemHttpResult, ExportResult>> AuditPageAsync(
        [FromQuery] string? limit, [FromQuery] string? cursor, HttpContext http, AuditLog audit, Cursors cursors, ReadRouting reads,
        Exports exports, CancellationToken cancellationToken)
    {
        var caller = Caller.From(http.User);
        var read = reads.For(caller);
        if (ExportNegotiation.Requested(http.Request) is { } format)
        {
            return exports.Of<AuditEntry, AuditEntryResponse>(
                format, "audit", caller.ProjectId, read, AuditLog.Export(caller.ProjectId), AuditEntryResponse.From);
        }

        var errors = new Dictionary<string, string[]>();
        var page = PageRequest.Parse(limit, cursor, errors);
        if (page is null)
        {
            return Problems.Validation(errors, "Invalid query parameters.");
        }

        var scope = string.Create(CultureInfo.InvariantCulture, $"audit|{caller.ProjectId}");
        return (await KeysetPage.ServeAsync(http, cursors, scope, page, read,
            (IdPosition? before, int count) => audit.PageAsync(caller.ProjectId, before?.Id ?? long.MaxValue, count, read, cancellationToken),
            entry => new IdPosition(entry.Id), AuditEntryResponse.From, cancellationToken)).OrExport();
    }
}
