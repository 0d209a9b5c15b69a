using System.Text.Encodings.Web;
using Microsoft.AspNetCore.Authentication;
using Microsoft.Extensions.Options;

namespace FirmwareManager.Api.Auth;

public sealed class ApiKeyAuthenticationOptions : AuthenticationSchemeOptions;

/// <summary>
/// Reads the API key from <c>api_key</c> (the reference API's header), <c>X-Api-Key</c> (for proxies that drop
/// headers with underscores) or <c>Authorization: Bearer</c>, and turns it into a <see cref="Caller"/>.
/// Several different keys in one request are rejected rather than guessed between.
/// </summary>
public sealed class ApiKeyAuthenticationHandler(
    IOptionsMonitor<ApiKeyAuthenticationOptions> options,
    ILoggerFactory loggers,
    UrlEncoder encoder,
    ApiKeys apiKeys,
    IProblemDetailsService problems)
    : AuthenticationHandler<ApiKeyAuthenticationOptions>(options, loggers, encoder)
{
    public const string SchemeName = "ApiKey";
    public const string KeyHeader = "api_key";
    public const string AlternateKeyHeader = "X-Api-Key";
    private const string BearerPrefix = "Bearer ";

    protected override async Task<AuthenticateResult> HandleAuthenticateAsync()
    {
        var presented = PresentedKeys(Request.Headers);
        if (presented.Count == 0)
        {
            return AuthenticateResult.NoResult();
        }

        if (presented.Count > 1)
        {
            return AuthenticateResult.Fail("The request carries more than one different API key.");
        }

        var key = presented[0];
        if (key.Length == 0 || key.Length > ApiKeyHasher.MaxKeyLength)
        {
            return AuthenticateResult.Fail("The API key is not valid.");
        }

        var caller = await apiKeys.FindCallerAsync(ApiKeyHasher.Hash(key), Context.RequestAborted);
        if (caller is null)
        {
            return AuthenticateResult.Fail("The API key is unknown or has been revoked.");
        }

        return AuthenticateResult.Success(new AuthenticationTicket(caller.ToPrincipal(SchemeName), SchemeName));
    }

    private static List<string> PresentedKeys(IHeaderDictionary headers)
    {
        var keys = new List<string>(1);
        void Add(string? value)
        {
            value = value?.Trim();
            if (value is not null && !keys.Contains(value, StringComparer.Ordinal))
            {
                keys.Add(value);
            }
        }

        foreach (var value in headers[KeyHeader].Concat(headers[AlternateKeyHeader]))
        {
            Add(value);
        }

        foreach (var value in headers.Authorization)
        {
            Add(value is not null && value.StartsWith(BearerPrefix, StringComparison.OrdinalIgnoreCase)
                ? value[BearerPrefix.Length..]
                : value);
        }

        return keys;
    }

    protected override async Task HandleChallengeAsync(AuthenticationProperties properties)
    {
        var result = await HandleAuthenticateOnceSafeAsync();
        Response.StatusCode = StatusCodes.Status401Unauthorized;
        Response.Headers.WWWAuthenticate = result.Failure is null
            ? "Bearer realm=\"FirmwareManager\""
            : "Bearer realm=\"FirmwareManager\", error=\"invalid_token\"";
        await problems.WriteAsync(new ProblemDetailsContext
        {
            HttpContext = Context,
            ProblemDetails =
            {
                Status = StatusCodes.Status401Unauthorized,
                Title = "API key required",
                Detail = result.Failure?.Message
                    ?? $"Send your API key in the {KeyHeader} header, the {AlternateKeyHeader} header or as Authorization: Bearer <key>.",
            },
        });
    }

    protected override Task HandleForbiddenAsync(AuthenticationProperties properties)
    {
        Response.StatusCode = StatusCodes.Status403Forbidden;
        return problems.WriteAsync(new ProblemDetailsContext
        {
            HttpContext = Context,
            ProblemDetails =
            {
                Status = StatusCodes.Status403Forbidden,
                Title = "Forbidden",
                Detail = "This API key may not perform this operation.",
            },
        }).AsTask();
    }
}

public static class Policies
{
    public const string Device = "device";
    public const string Member = "member";
    public const string Admin = "admin";
}

public static class AuthExtensions
{
    public static IServiceCollection AddApiKeyAuthentication(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddSettings<KeyCacheOptions>(configuration, KeyCacheOptions.Section);
        services.AddSingleton<KeyCache>();
        services.AddSingleton<KeyLookups>();
        services.AddSingleton<ApiKeys>();
        services.AddSingleton<KeyUsage>();
        services.AddExceptionHandler<CallerRevokedHandler>();
        services.AddHostedService(sp => sp.GetRequiredService<KeyUsage>());
        services.AddAuthentication(ApiKeyAuthenticationHandler.SchemeName)
            .AddScheme<ApiKeyAuthenticationOptions, ApiKeyAuthenticationHandler>(ApiKeyAuthenticationHandler.SchemeName, null);
        services.AddAuthorizationBuilder()
            .AddPolicy(Policies.Device, policy => policy
                .RequireAuthenticatedUser()
                .RequireClaim(Caller.KindClaim, Caller.KindName(CallerKind.Device)))
            .AddPolicy(Policies.Member, policy => policy
                .RequireAuthenticatedUser()
                .RequireClaim(Caller.KindClaim, Caller.KindName(CallerKind.Member)))
            .AddPolicy(Policies.Admin, policy => policy
                .RequireAuthenticatedUser()
                .RequireClaim(Caller.KindClaim, Caller.KindName(CallerKind.Member))
                .RequireRole(Caller.AdminRole));
        return services;
    }
}
