namespace FirmwareManager.Api.Webhooks;

public static class WebhookExtensions
{
    /// <summary>The webhooks: their settings, the store, the target check, the HTTP client that sends, and the sender.</summary>
    public static IServiceCollection AddWebhooks(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddSettings<WebhookOptions>(configuration, WebhookOptions.Section);
        services.AddSingleton<WebhookSecrets>();
        services.AddSingleton<WebhookTargets>();
        services.AddSingleton<WebhookSubscriptions>();
        services.AddHttpClient(WebhookSender.HttpClientName, client =>
            {
                client.Timeout = Timeout.InfiniteTimeSpan;
                client.DefaultRequestHeaders.UserAgent.ParseAdd("FirmwareManager-Webhooks/1.0");
            })
            // IHttpClientFactory's loggers write each request's URL, and a webhook's URL is a secret (Slack-style
            // URLs carry it in the path); the sender logs a failed attempt itself, by webhook and delivery id.
            .RemoveAllLoggers()
            .ConfigurePrimaryHttpMessageHandler(provider => new SocketsHttpHandler
            {
                ConnectCallback = provider.GetRequiredService<WebhookTargets>().ConnectAsync,
                AllowAutoRedirect = false,
                UseCookies = false,
                UseProxy = false,
                PooledConnectionLifetime = TimeSpan.FromMinutes(2),
            });
        services.AddHostedService<WebhookSender>();
        return services;
    }
}
