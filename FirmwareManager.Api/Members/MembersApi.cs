using System.ComponentModel.DataAnnotations;
using System.Globalization;
using FirmwareManager.Api.Audit;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Http;
using FirmwareManager.Api.Keys;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;

namespace FirmwareManager.Api.Members;

/// <summary>What <c>POST /members</c> answers: the new member and their first key, shown this once.</summary>
public sealed record CreatedMemberResponse(MemberResponse Member, NewKeyResponse Key);

/// <param name="Email">The member's email address.</param>
/// <param name="Role">admin (manages devices, keys and members) or viewer (reads only).</param>
public sealed record InviteMemberBody([property: Required] string? Email, [property: Required] string? Role);

/// <summary><c>/members</c> (admins: list, invite, remove) and <c>/me</c> (any member). Their keys: <see cref="KeysApi"/>.</summary>
public static class MembersApi
{
    public static IEndpointRouteBuilder MapMembersApi(this IEndpointRouteBuilder app)
    {
        var members = app.MapGroup("/members").RequireAuthorization(Policies.Admin).WithTags("Members")
            .WithKeyProblems().ProducesValidationProblem().ProducesProblem(StatusCodes.Status404NotFound);
        members.MapGet("/", ListMembersAsync).WithSummary("The project's members, removed ones included (admin)");
        members.MapPost("/", InviteAsync).Accepts<InviteMemberBody>("application/json")
            .ProducesProblem(StatusCodes.Status409Conflict)
            .WithSummary("Add a member by email with a role; answers their first key (admin)");
        members.MapDelete("/{member_id}", RemoveMemberAsync)
            .ProducesProblem(StatusCodes.Status409Conflict)
            .WithSummary("Remove a member and revoke every key of theirs (admin)");

        app.MapGroup("/me").RequireAuthorization(Policies.Member).WithTags("Members")
            .WithKeyProblems().ProducesProblem(StatusCodes.Status404NotFound)
            .MapGet("/", MeAsync).WithSummary("The calling member");
        return app;
    }

    private static async Task<Ok<List<MemberResponse>>> ListMembersAsync(HttpContext http, Memberships members, CancellationToken cancellationToken) =>
        TypedResults.Ok((await members.ListAsync(Caller.From(http.User).ProjectId, cancellationToken)).Select(MemberResponse.From).ToList());

    private static async Task<Results<Created<CreatedMemberResponse>, ProblemHttpResult>> InviteAsync(
        HttpContext http, Memberships members, CancellationToken cancellationToken)
    {
        var (body, problem) = await JsonBody.ReadAsync(http, RequestLimits.MaxBodyBytes, RequestJsonContext.Default.InviteMemberBody, cancellationToken);
        if (body is null)
        {
            return problem!;
        }

        var errors = new Dictionary<string, string[]>();
        var email = body.Email?.Trim().ToLowerInvariant();
        var role = body.Role;
        if (email is null || email.Length is < 3 or > 320 || email.IndexOf('@', StringComparison.Ordinal) is <= 0 ||
            email.Any(c => char.IsWhiteSpace(c) || char.IsControl(c)) || email.EndsWith('@'))
        {
            errors["email"] = ["Must be an email address."];
        }

        if (role is not (Memberships.Admin or Memberships.Viewer))
        {
            errors["role"] = ["Must be admin or viewer."];
        }

        if (errors.Count > 0)
        {
            return Problems.Validation(errors, "Invalid member.");
        }

        var caller = Caller.From(http.User);
        var (member, key) = await members.InviteAsync(caller.ProjectId, email!, role!, Actor.From(caller), cancellationToken);
        return member is null
            ? Problems.Conflict($"{email} is already a member of this project.")
            : TypedResults.Created(string.Create(CultureInfo.InvariantCulture, $"/members/{member.Id}"),
                new CreatedMemberResponse(MemberResponse.From(member), key!));
    }

    private static async Task<Results<NoContent, ProblemHttpResult>> RemoveMemberAsync(
        [FromRoute(Name = "member_id")] string memberIdText, HttpContext http, Memberships members, CancellationToken cancellationToken)
    {
        if (!Problems.TryParseId(memberIdText, out var memberId))
        {
            return Problems.InvalidId("member_id", memberIdText);
        }

        var caller = Caller.From(http.User);
        try
        {
            return await members.RemoveAsync(caller.ProjectId, memberId, Actor.From(caller), cancellationToken)
                ? TypedResults.NoContent()
                : Problems.NotFoundIn("member", memberId);
        }
        catch (LastAdminException e)
        {
            return Problems.Conflict(e.Message);
        }
    }

    private static async Task<Results<Ok<MemberResponse>, ProblemHttpResult>> MeAsync(HttpContext http, Memberships members, CancellationToken cancellationToken)
    {
        var caller = Caller.From(http.User);
        var member = await members.FindActiveAsync(caller.ProjectId, caller.Id, cancellationToken);
        return member is null ? Problems.NotFoundIn("member", caller.Id) : TypedResults.Ok(MemberResponse.From(member));
    }
}
