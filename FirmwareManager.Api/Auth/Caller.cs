using System.Globalization;
using System.Security.Claims;
using FirmwareManager.Api.Http;
using Microsoft.AspNetCore.Diagnostics;

namespace FirmwareManager.Api.Auth;

public enum CallerKind
{
    Device,
    Member,
}

/// <summary>Who is calling: a device or a project member, and the project they act in.</summary>
/// <remarks><see cref="KeyId"/> and <see cref="KeyPrefix"/> name the key used (for the audit log), never the key itself.</remarks>
public sealed record Caller(CallerKind Kind, long Id, long ProjectId, string? Role, long KeyId, string KeyPrefix)
{
    public const string KindClaim = "fm:caller_kind";
    public const string IdClaim = "fm:caller_id";
    public const string ProjectClaim = "fm:project_id";
    public const string KeyIdClaim = "fm:key_id";
    public const string KeyPrefixClaim = "fm:key_prefix";
    public const string RoleClaim = ClaimTypes.Role;
    public const string AdminRole = "admin";

    public bool IsDevice(long deviceId) => Kind == CallerKind.Device && Id == deviceId;

    public ClaimsPrincipal ToPrincipal(string authenticationType)
    {
        var claims = new List<Claim>
        {
            new(KindClaim, KindName(Kind)),
            new(IdClaim, Id.ToString(CultureInfo.InvariantCulture)),
            new(ProjectClaim, ProjectId.ToString(CultureInfo.InvariantCulture)),
            new(KeyIdClaim, KeyId.ToString(CultureInfo.InvariantCulture)),
            new(KeyPrefixClaim, KeyPrefix),
        };
        if (Role is not null)
        {
            claims.Add(new Claim(RoleClaim, Role));
        }

        return new CallerPrincipal(this, new ClaimsIdentity(claims, authenticationType, IdClaim, RoleClaim));
    }

    /// <summary>The caller of an authenticated request; endpoints that use it require authentication.</summary>
    public static Caller From(ClaimsPrincipal user)
    {
        if (user is CallerPrincipal { Caller: var caller })
        {
            return caller;
        }

        var kind = user.FindFirstValue(KindClaim) == KindName(CallerKind.Device) ? CallerKind.Device : CallerKind.Member;
        return new Caller(
            kind,
            long.Parse(user.FindFirstValue(IdClaim)!, CultureInfo.InvariantCulture),
            long.Parse(user.FindFirstValue(ProjectClaim)!, CultureInfo.InvariantCulture),
            user.FindFirstValue(RoleClaim),
            long.Parse(user.FindFirstValue(KeyIdClaim)!, CultureInfo.InvariantCulture),
            user.FindFirstValue(KeyPrefixClaim)!);
    }

    public static string KindName(CallerKind kind) => kind == CallerKind.Device ? "device" : "member";
}

/// <summary>
/// The principal of an authenticated caller, with the <see cref="Caller"/> it was made from: a request reads its
/// caller several times (rate limit, routing, the endpoint, the audit), and each read of the claims looked six of
/// them up by name and parsed three numbers. A principal made otherwise (a test's) is still read from its claims.
/// </summary>
internal sealed class CallerPrincipal(Caller caller, ClaimsIdentity identity) : ClaimsPrincipal(identity)
{
    public Caller Caller { get; } = caller;
}

/// <summary>
/// The caller's key was revoked, its device decommissioned or its member removed (or demoted) after the request
/// was authenticated from the key cache: the change is refused with 401, as the key would be now.
/// </summary>
public sealed class CallerRevokedException()
    : Exception("The API key is unknown or has been revoked.");

/// <summary>A <see cref="CallerRevokedException"/> is answered 401, as the key would be now.</summary>
internal sealed class CallerRevokedHandler(ILogger<CallerRevokedHandler> logger) : IExceptionHandler
{
    public async ValueTask<bool> TryHandleAsync(HttpContext httpContext, Exception exception, CancellationToken cancellationToken)
    {
        if (exception is not CallerRevokedException revoked)
        {
            return false;
        }

        // The key's cached answer was out of date: the change's transaction found it revoked, and stored nothing.
        logger.LogInformation("The caller's key or membership was revoked while its request ran");
        httpContext.Response.Headers.WWWAuthenticate = "Bearer realm=\"FirmwareManager\", error=\"invalid_token\"";
        await Problems.WriteAsync(httpContext, StatusCodes.Status401Unauthorized, "API key required", $"{revoked.Message} Nothing was stored.");
        return true;
    }
}
