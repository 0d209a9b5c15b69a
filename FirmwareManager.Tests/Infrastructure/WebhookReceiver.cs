using System.Collections.Concurrent;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace FirmwareManager.Tests.Infrastructure;

/// <summary>
/// A real HTTP receiver for webhook tests: Kestrel on a free loopback port, recording every request it gets. What it
/// answers is up to the test (<see cref="Answer"/>): a status, after a delay.
/// </summary>
public sealed class WebhookReceiver : IAsyncDisposable
{
    private readonly WebApplication _app;
    private int _requests;

    private WebhookReceiver(WebApplication app) => _app = app;

    public sealed record Request(int Number, string Id, string Timestamp, string Signature, byte[] Body, int Status, DateTime ArrivedAt, DateTime AnsweredAt);

    public ConcurrentQueue<Request> Requests { get; } = new();

    /// <summary>The answer to the request numbered n (1, 2, ...): its status, and how long to wait before giving it.</summary>
    public Func<int, (int Status, TimeSpan Delay)> Answer { get; set; } = _ => (200, TimeSpan.Zero);

    public string Url { get; private set; } = "";

    /// <summary>The requests answered 2xx, in the order they were answered.</summary>
    /// <summary>Requests that have arrived, answered or not.</summary>
    public int Arrivals => Volatile.Read(ref _requests);

    public IReadOnlyList<Request> Accepted => Requests.Where(r => r.Status is >= 200 and < 300).ToList();

    public static async Task<WebhookReceiver> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        var app = builder.Build();
        var receiver = new WebhookReceiver(app);
        // Under /hook/... too: Slack-style URLs carry their secret in the path.
        app.MapPost("/hook/{**path}", async (HttpContext http) =>
        {
            var arrivedAt = DateTime.UtcNow;
            var number = Interlocked.Increment(ref receiver._requests);
            using var body = new MemoryStream();
            await http.Request.Body.CopyToAsync(body);
            var (status, delay) = receiver.Answer(number);
            if (delay > TimeSpan.Zero)
            {
                try
                {
                    // Until the sender gives up on it, at the latest: a receiver that hangs lets go when the client does.
                    await Task.Delay(delay, http.RequestAborted);
                }
                catch (OperationCanceledException)
                {
                    return Results.Empty;
                }
            }

            receiver.Requests.Enqueue(new Request(number, http.Request.Headers["webhook-id"].ToString(),
                http.Request.Headers["webhook-timestamp"].ToString(), http.Request.Headers["webhook-signature"].ToString(), body.ToArray(), status, arrivedAt, DateTime.UtcNow));
            return Results.StatusCode(status);
        });
        await app.StartAsync();
        receiver.Url = app.Urls.First() + "/hook";
        return receiver;
    }

    public async ValueTask DisposeAsync() => await _app.DisposeAsync();
}
