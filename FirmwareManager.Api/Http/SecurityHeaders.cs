using FirmwareManager.Api.Dashboard;

namespace FirmwareManager.Api.Http;

/// <summary>
/// Headers that keep browsers and caches from misusing the API's answers: no sniffing, no framing, no referrer,
/// nothing stored by shared caches (answers are per API key). Every answer but the interactive docs page also
/// forbids loading anything (<c>default-src 'none'</c>): the API serves data, never pages. The dashboard's pages get
/// a policy of their own that allows only the service's own scripts, styles and API.
/// </summary>
public static class SecurityHeaders
{
    private const string ApiContentSecurityPolicy = "default-src 'none'; frame-ancestors 'none'";

    public static WebApplication UseSecurityHeaders(this WebApplication app)
    {
        app.Use((context, next) =>
        {
            context.Response.OnStarting(() =>
            {
                var headers = context.Response.Headers;
                headers.XContentTypeOptions = "nosniff";
                headers.XFrameOptions = "DENY";
                headers["Referrer-Policy"] = "no-referrer";
                headers["Cross-Origin-Resource-Policy"] = "same-origin";
                if (context.Request.Path.StartsWithSegments(DashboardApi.Path))
                {
                    headers.ContentSecurityPolicy = DashboardApi.ContentSecurityPolicy;
                }
                else if (!context.Request.Path.StartsWithSegments(ApiDocs.DocsPath))
                {
                    headers.ContentSecurityPolicy = ApiContentSecurityPolicy;
                }

                if (!headers.ContainsKey("Cache-Control"))
                {
                    headers.CacheControl = "no-store";
                }

                if (context.Request.IsHttps)
                {
                    headers.StrictTransportSecurity = "max-age=31536000";
                }

                return Task.CompletedTask;
            });
            return next(context);
        });
        return app;
    }
}
