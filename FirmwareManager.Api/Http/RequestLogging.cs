using FirmwareManager.Api.Auth;
using Microsoft.AspNetCore.Diagnostics;
using Serilog;

namespace FirmwareManager.Api.Http;

public static class RequestLogging
{
    /// <summary>
    /// One line per request: method, route template (never the query or any header), status, elapsed time and
    /// the caller. API keys are never logged; the caller is named by kind and id.
    /// </summary>
    public static IApplicationBuilder UseRequestLogging(this IApplicationBuilder app) =>
        app.UseSerilogRequestLogging(options =>
        {
            // The host's logger, not the static bootstrap one: it carries the configured sinks and levels.
            options.Logger = app.ApplicationServices.GetRequiredService<Serilog.ILogger>();
            options.MessageTemplate =
                "HTTP {RequestMethod} {RouteTemplate} responded {StatusCode} in {Elapsed:0.000} ms for {Caller}";
            options.EnrichDiagnosticContext = (diagnostics, http) =>
            {
                // A request that ended in an exception (a 503, a 499) has had its endpoint cleared by the exception
                // handler, which keeps it in its feature: without this its line said "(no route)".
                var endpoint = http.GetEndpoint() ?? http.Features.Get<IExceptionHandlerFeature>()?.Endpoint;
                diagnostics.Set("RouteTemplate", (endpoint as RouteEndpoint)?.RoutePattern.RawText ?? "(no route)");
                // "for device 3", "for member 1", "for anonymous"; kind and id also apart, for log queries.
                var kind = http.User.Identity?.IsAuthenticated == true ? http.User.FindFirst(Caller.KindClaim)?.Value : null;
                var id = kind is null ? null : http.User.FindFirst(Caller.IdClaim)?.Value;
                diagnostics.Set("Caller", kind is null ? "anonymous" : $"{kind} {id}");
                diagnostics.Set("CallerKind", kind ?? "anonymous");
                if (id is not null)
                {
                    diagnostics.Set("CallerId", id);
                }
            };
        });
}
