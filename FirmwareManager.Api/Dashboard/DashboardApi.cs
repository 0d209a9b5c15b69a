using Microsoft.AspNetCore.StaticFiles;
using Microsoft.Extensions.FileProviders;
using Microsoft.Net.Http.Headers;

namespace FirmwareManager.Api.Dashboard;

/// <summary>
/// <c>/dashboard</c>: the fleet dashboard, a few static files (HTML, CSS and ES modules) built into the assembly
/// as the migrations are, so that every way of running the service (dotnet run, the image, the tests) serves exactly
/// the files it was built with, with no Node.js and no CDN. ASP.NET Core's static files serve them (ETag and
/// Last-Modified from the build, 304 on revalidation, ranges). The files need no key: they hold no data. The page
/// then calls the public API with the member key the operator typed, like any other client.
/// </summary>
public static class DashboardApi
{
    public const string Path = "/dashboard";

    /// <summary>
    /// Only the service's own scripts and styles, and calls to its own API: no inline script or style, no eval,
    /// no other origin, no framing, no form posted anywhere (the sign-in form is handled by the script).
    /// </summary>
    public const string ContentSecurityPolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

    // The files as the project file embeds them (dashboard.NAME); only these kinds are served.
    private static readonly EmbeddedFileProvider Files = new(typeof(DashboardApi).Assembly, "dashboard");

    private static readonly FileExtensionContentTypeProvider ContentTypes = new(new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase)
    {
        [".html"] = "text/html; charset=utf-8",
        [".js"] = "text/javascript; charset=utf-8",
        [".css"] = "text/css; charset=utf-8",
        [".svg"] = "image/svg+xml",
        [".txt"] = "text/plain; charset=utf-8",
    });

    /// <summary>
    /// Serves the files under <see cref="Path"/>, the page at <c>/dashboard/</c> (<c>/dashboard</c> redirects there, so
    /// that the relative URLs in it resolve under <c>/dashboard/</c> wherever the service is mounted). Anything else
    /// under it is left to the 404 problem every unknown path gets.
    /// </summary>
    public static WebApplication UseDashboard(this WebApplication app)
    {
        app.UseDefaultFiles(new DefaultFilesOptions { FileProvider = Files, RequestPath = Path });
        app.UseStaticFiles(new StaticFileOptions
        {
            FileProvider = Files,
            RequestPath = Path,
            ContentTypeProvider = ContentTypes,
            // Revalidated at every load (a 304 costs one round trip), so a new version of the service is never mixed
            // with modules a browser cached from the old one.
            OnPrepareResponse = file => file.Context.Response.GetTypedHeaders().CacheControl = new CacheControlHeaderValue { NoCache = true },
        });
        return app;
    }
}
