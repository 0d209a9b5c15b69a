using System.CommandLine;
namespace FirmwareManager.Api.Commands;

/// <summary>
/// <c>dotnet FirmwareManager.Api.dll healthcheck [url]</c>: exit 0 when the running service's <c>/health</c> answers
/// 200, 1 otherwise. The container image's HEALTHCHECK uses it, as its runtime image has no curl or shell.
/// </summary>
public static class HealthCheck
{
    public const string Name = "healthcheck";

    public static Command Definition()
    {
        var url = new Argument<Uri?>("url") { Description = "The /health URL (default: the loopback address at the port the service listens on).", Arity = ArgumentArity.ZeroOrOne };
        var command = new Command(Name, "Exit 0 when the running service's /health answers 200.") { url };
        command.SetAction((parsed, cancellationToken) => RunAsync(parsed.GetValue(url) ?? new Uri(LocalHealthUrl()), cancellationToken));
        return command;
    }

    private static async Task<int> RunAsync(Uri url, CancellationToken cancellationToken)
    {
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        try
        {
            using var response = await client.GetAsync(url, cancellationToken);
            Console.WriteLine($"{url}: {(int)response.StatusCode}");
            return response.IsSuccessStatusCode ? 0 : 1;
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
        {
            Console.WriteLine($"{url}: {e.Message}");
            return 1;
        }
    }

    /// <summary>/health on the loopback address at the port the service listens on (ASPNETCORE_URLS or ASPNETCORE_HTTP_PORTS).</summary>
    private static string LocalHealthUrl()
    {
        var urls = Environment.GetEnvironmentVariable("ASPNETCORE_URLS");
        var port = Environment.GetEnvironmentVariable("ASPNETCORE_HTTP_PORTS")?.Split(';')[0];
        if (!string.IsNullOrWhiteSpace(urls))
        {
            var first = urls.Split(';')[0];
            port = first[(first.LastIndexOf(':') + 1)..].TrimEnd('/');
        }

        return $"http://127.0.0.1:{(string.IsNullOrWhiteSpace(port) ? "8880" : port)}/health";
    }
}
