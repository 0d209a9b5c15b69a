using System.Globalization;
using FirmwareManager.Api.Audit;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Http;
using Microsoft.AspNetCore.Http.HttpResults;

namespace FirmwareManager.Api.Keys;

/// <summary>
/// Every route of API keys, in one place: a device's keys and a member's keys (admins), and one's own keys (any
/// member, <c>/me/keys</c>). Issued, listed (never the key) and revoked, each change audited in its transaction.
/// </summary>
public static class KeysApi
{
    public static IEndpointRouteBuilder MapKeysApi(this IEndpointRouteBuilder app)
    {
        var devices = app.MapGroup("/devices/{device_id}/keys").RequireAuthorization(Policies.Admin).WithTags("Keys")
            .WithKeyProblems().ProducesValidationProblem().ProducesProblem(StatusCodes.Status404NotFound);
        devices.MapPost("/", (string device_id, HttpContext http, ProjectKeys keys, CancellationToken ct) =>
                IssueKeyAsync(device_id, "device_id", id => KeyOwner.Device(id), http, keys, ct))
            .ProducesProblem(StatusCodes.Status409Conflict)
            .WithSummary("A new key for the device; its other keys keep working until revoked (admin); 409 past 10 active keys");
        devices.MapGet("/", (string device_id, HttpContext http, ProjectKeys keys, CancellationToken ct) =>
                ListKeysAsync(device_id, "device_id", id => KeyOwner.Device(id), http, keys, ct))
            .WithSummary("The device's active keys and its 20 most recently revoked: id, prefix, created, last used, revoked; never the key (admin)");
        devices.MapDelete("/{key_id}", (string device_id, string key_id, HttpContext http, ProjectKeys keys, CancellationToken ct) =>
                RevokeKeyAsync(device_id, "device_id", id => KeyOwner.Device(id), key_id, http, keys, ct))
            .WithSummary("Revoke one of the device's keys (admin)");

        var members = app.MapGroup("/members/{member_id}/keys").RequireAuthorization(Policies.Admin).WithTags("Keys")
            .WithKeyProblems().ProducesValidationProblem().ProducesProblem(StatusCodes.Status404NotFound);
        members.MapPost("/", (string member_id, HttpContext http, ProjectKeys keys, CancellationToken ct) =>
                IssueKeyAsync(member_id, "member_id", id => KeyOwner.Member(id), http, keys, ct))
            .ProducesProblem(StatusCodes.Status409Conflict)
            .WithSummary("A new key for a member (admin); 409 past 10 active keys");
        members.MapGet("/", (string member_id, HttpContext http, ProjectKeys keys, CancellationToken ct) =>
                ListKeysAsync(member_id, "member_id", id => KeyOwner.Member(id), http, keys, ct))
            .WithSummary("A member's keys (admin)");
        members.MapDelete("/{key_id}", (string member_id, string key_id, HttpContext http, ProjectKeys keys, CancellationToken ct) =>
                RevokeKeyAsync(member_id, "member_id", id => KeyOwner.Member(id), key_id, http, keys, ct))
            .ProducesProblem(StatusCodes.Status409Conflict)
            .WithSummary("Revoke one of a member's keys (admin); 409 for the last active key of the project's admins");

        var mine = app.MapGroup("/me/keys").RequireAuthorization(Policies.Member).WithTags("Keys")
            .WithKeyProblems().ProducesProblem(StatusCodes.Status404NotFound);
        mine.MapPost("/", (HttpContext http, ProjectKeys keys, CancellationToken ct) =>
                IssueKeyAsync(Caller.From(http.User).Id.ToString(CultureInfo.InvariantCulture), "member_id", id => KeyOwner.Member(id), http, keys, ct))
            .ProducesProblem(StatusCodes.Status409Conflict)
            .WithSummary("A new key for oneself; the key in use keeps working until revoked; 409 past 10 active keys");
        mine.MapGet("/", (HttpContext http, ProjectKeys keys, CancellationToken ct) =>
                ListKeysAsync(Caller.From(http.User).Id.ToString(CultureInfo.InvariantCulture), "member_id", id => KeyOwner.Member(id), http, keys, ct))
            .WithSummary("One's own keys");
        mine.MapDelete("/{key_id}", (string key_id, HttpContext http, ProjectKeys keys, CancellationToken ct) =>
                RevokeKeyAsync(Caller.From(http.User).Id.ToString(CultureInfo.InvariantCulture), "member_id", id => KeyOwner.Member(id), key_id, http, keys, ct))
            .ProducesProblem(StatusCodes.Status409Conflict)
            .WithSummary("Revoke one of one's own keys; 409 for the last active key of the project's admins");
        return app;
    }

    private static async Task<Results<Created<NewKeyResponse>, ProblemHttpResult>> IssueKeyAsync(
        string ownerIdText, string parameter, Func<long, KeyOwner> owner, HttpContext http, ProjectKeys keys, CancellationToken cancellationToken)
    {
        if (!Problems.TryParseId(ownerIdText, out var ownerId))
        {
            return Problems.InvalidId(parameter, ownerIdText);
        }

        var caller = Caller.From(http.User);
        var key = await keys.IssueAsync(caller.ProjectId, owner(ownerId), Actor.From(caller), cancellationToken);
        return key is null
            ? Problems.NotFound("Not found", $"There is no active {owner(ownerId).OwnerKind} {ownerId} in your project.")
            : TypedResults.Created(KeysPath(http, key.Id), key);
    }

    private static async Task<Results<Ok<List<KeyResponse>>, ProblemHttpResult>> ListKeysAsync(
        string ownerIdText, string parameter, Func<long, KeyOwner> owner, HttpContext http, ProjectKeys keys, CancellationToken cancellationToken)
    {
        if (!Problems.TryParseId(ownerIdText, out var ownerId))
        {
            return Problems.InvalidId(parameter, ownerIdText);
        }

        var found = await keys.ListAsync(Caller.From(http.User).ProjectId, owner(ownerId), cancellationToken);
        return found is null ? Problems.NotFoundIn(owner(ownerId).OwnerKind, ownerId) : TypedResults.Ok(found.Select(KeyResponse.From).ToList());
    }

    private static async Task<Results<NoContent, ProblemHttpResult>> RevokeKeyAsync(
        string ownerIdText, string parameter, Func<long, KeyOwner> owner, string keyIdText, HttpContext http, ProjectKeys keys,
        CancellationToken cancellationToken)
    {
        if (!Problems.TryParseId(ownerIdText, out var ownerId))
        {
            return Problems.InvalidId(parameter, ownerIdText);
        }

        if (!Problems.TryParseId(keyIdText, out var keyId))
        {
            return Problems.InvalidId("key_id", keyIdText);
        }

        var caller = Caller.From(http.User);
        try
        {
            return await keys.RevokeAsync(caller.ProjectId, owner(ownerId), keyId, Actor.From(caller), cancellationToken)
                ? TypedResults.NoContent()
                : Problems.NotFound("Key not found", $"The {owner(ownerId).OwnerKind} {ownerId} has no key {keyId} in your project.");
        }
        catch (LastAdminKeyException e)
        {
            return Problems.Conflict(e.Message);
        }
    }

    private static string KeysPath(HttpContext http, long keyId) =>
        string.Create(CultureInfo.InvariantCulture, $"{http.Request.Path.Value!.TrimEnd('/')}/{keyId}");
}
