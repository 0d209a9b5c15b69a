using System.Collections.Frozen;
using System.Reflection;
using System.Security.Cryptography;
using Microsoft.Net.Http.Headers;

namespace FirmwareManager.Api.Dashboard;

/// <summary>
/// <c>/dashboard</c>: the fleet dashboard, a few static files (HTML, CSS and ES modules) built into the assembly
/// as the migrations are, so that every way of running the service (dotnet run, the image, the tests) serves exactly
/// the files it was built with, from memory, with no Node.js and no CDN. The files need no key: they hold no data.
/// The page then calls the public API with the member key the operator typed, like any other client.
/// </summary>
public static class DashboardApi
{
    public const string Path = "/dashboard";

    private const string ResourcePrefix = "dashboard/";

    /// <summary>
    /// Only the service's own scripts and styles, and calls to its own API: no inline script or style, no eval,
    /// no other origin, no framing, no form posted anywhere (the sign-in form is handled by the script).
    /// </summary>
    public const string ContentSecurityPolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

    private static readonly FrozenDictionary<string, string> ContentTypes = new Dictionary<string, string>
    {
        [".html"] = "text/html; charset=utf-8",
        [".js"] = "text/javascript; charset=utf-8",
        [".css"] = "text/css; charset=utf-8",
        [".svg"] = "image/svg+xml",
        [".txt"] = "text/plain; charset=utf-8",
    }.ToFrozenDictionary();

    private sealed record StaticFile(byte[] Content, string ContentType, EntityTagHeaderValue ETag);

    private static readonly FrozenDictionary<string, StaticFile> Files = LoadFiles();

    public static IEndpointRouteBuilder MapDashboard(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup(Path).AllowAnonymous().ExcludeFromDescription();
        // One route matches /dashboard and /dashboard/: the page is served at the latter, so that the relative URLs
        // in it resolve under /dashboard/ wherever the service is mounted.
        group.MapGet("/", (HttpContext http) => http.Request.Path.Value?.EndsWith('/') == true
            ? Serve(http, "index.html")
            : Results.Redirect($"{http.Request.PathBase}{Path}/"));
        group.MapGet("/{file}", (HttpContext http, string file) => Serve(http, file));
        return app;
    }

    private static IResult Serve(HttpContext http, string name)
    {
        if (!Files.TryGetValue(name, out var file))
        {
            return TypedResults.Problem(statusCode: StatusCodes.Status404NotFound, title: "Not found",
                detail: $"The dashboard has no file named '{name}'.");
        }

        var headers = http.Response.GetTypedHeaders();
        headers.ETag = file.ETag;
        // Revalidated at every load (a 304 costs one round trip), so a new version of the service is never
        // mixed with modules a browser cached from the old one.
        headers.CacheControl = new CacheControlHeaderValue { NoCache = true };
        var ifNoneMatch = http.Request.GetTypedHeaders().IfNoneMatch;
        if (ifNoneMatch.Any(tag => tag.Compare(file.ETag, useStrongComparison: false)))
        {
            return TypedResults.StatusCode(StatusCodes.Status304NotModified);
        }

        return TypedResults.Bytes(file.Content, file.ContentType);
    }

    private static FrozenDictionary<string, StaticFile> LoadFiles()
    {
        var assembly = Assembly.GetExecutingAssembly();
        var files = new Dictionary<string, StaticFile>(StringComparer.Ordinal);
        foreach (var resource in assembly.GetManifestResourceNames().Where(n => n.StartsWith(ResourcePrefix, StringComparison.Ordinal)))
        {
            var name = resource[ResourcePrefix.Length..];
            if (!ContentTypes.TryGetValue(System.IO.Path.GetExtension(name), out var contentType))
            {
                throw new InvalidOperationException($"The dashboard file {name} has no content type: add its extension to DashboardApi.ContentTypes.");
            }

            using var stream = assembly.GetManifestResourceStream(resource)!;
            using var copy = new MemoryStream();
            stream.CopyTo(copy);
            var content = copy.ToArray();
            var tag = new EntityTagHeaderValue($"\"{Convert.ToHexStringLower(SHA256.HashData(content))[..32]}\"");
            files[name] = new StaticFile(content, contentType, tag);
        }

        return files.ToFrozenDictionary(StringComparer.Ordinal);
    }
}
