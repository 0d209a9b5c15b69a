using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Http;
using Microsoft.AspNetCore.Http.HttpResults;

namespace FirmwareManager.Api.Versions;

/// <summary><c>/firmware-versions</c>: which versions the project's fleet runs, and where updates failed or were rolled back.</summary>
public static class FirmwareVersionsApi
{
    public static RouteGroupBuilder MapFirmwareVersionsApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/firmware-versions")
            .RequireAuthorization(Policies.Member)
            .WithTags("Firmware versions")
            .WithKeyProblems();

        group.MapGet("/", ListAsync)
            .WithSummary("The project's firmware versions by SemVer precedence: devices running each, and devices whose newest event for it is failed or rolled_back (member keys)");
        return group;
    }

    private static async Task<Ok<List<FirmwareVersionCount>>> ListAsync(
        HttpContext http, FirmwareVersions versions, CancellationToken cancellationToken) =>
        TypedResults.Ok((await versions.DistributionAsync(Caller.From(http.User).ProjectId, cancellationToken)).ToList());
}
