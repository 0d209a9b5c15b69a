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

    /// <summary>
    /// The caller as the request's principal. Its claims are made only when something reads them (an authorization
    /// policy naming a claim, a principal made from claims): a request that reads its caller through
    /// <see cref="From"/> makes none. Five claims with their strings, list and identity were 5.2% of a history read's
    /// allocated bytes (dotnet-trace during bench/history-baselines.sh, 2026-12-06).
    /// </summary>
    public ClaimsPrincipal ToPrincipal(string authenticationType) => new CallerPrincipal(this, new CallerIdentity(this, authenticationType));

    /// <summary>The caller's claims, each of <paramref name="subject"/> as <see cref="ClaimsIdentity.AddClaim"/> would make it.</summary>
    internal List<Claim> ToClaims(ClaimsIdentity subject)
    {
        Claim Of(string type, string value) => new(type, value, ClaimValueTypes.String, ClaimsIdentity.DefaultIssuer, ClaimsIdentity.DefaultIssuer, subject);
        var claims = new List<Claim>(6)
        {
            Of(KindClaim, KindName(Kind)),
            Of(IdClaim, Id.ToString(CultureInfo.InvariantCulture)),
            Of(ProjectClaim, ProjectId.ToString(CultureInfo.InvariantCulture)),
            Of(KeyIdClaim, KeyId.ToString(CultureInfo.InvariantCulture)),
            Of(KeyPrefixClaim, KeyPrefix),
        };
        if (Role is not null)
        {
            claims.Add(Of(RoleClaim, Role));
        }

        return claims;
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
/// The identity of a <see cref="CallerPrincipal"/>: its caller's claims, made at the first read of them. Every claim
/// lookup of <see cref="ClaimsIdentity"/> (<c>FindFirst</c>, <c>HasClaim</c>, <c>Name</c>, a principal's
/// <c>IsInRole</c>) reads <see cref="Claims"/>; claims added later follow the caller's. A copy is a plain identity
/// with the same claims: the base class's copy takes only the claims added to it.
/// </summary>
internal sealed class CallerIdentity(Caller caller, string authenticationType)
    : ClaimsIdentity(authenticationType, Caller.IdClaim, Caller.RoleClaim)
{
    private List<Claim>? _callerClaims;

    public override IEnumerable<Claim> Claims => (_callerClaims ??= caller.ToClaims(this)).Concat(base.Claims);

    public override ClaimsIdentity Clone() => new(Claims, AuthenticationType, NameClaimType, RoleClaimType)
    {
        Actor = Actor,
        BootstrapContext = BootstrapContext,
        Label = Label,
    };
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
