using System.Net;
using System.Net.Sockets;

namespace FirmwareManager.Tests.Infrastructure;

/// <summary>
/// A loopback TCP forwarder in front of PostgreSQL, so a test can take the database away from the service
/// (every connection cut, new ones refused) and give it back, without touching the shared server.
/// </summary>
public sealed class TcpProxy : IAsyncDisposable
{
    private readonly IPEndPoint _target;
    private readonly List<TcpClient> _connections = [];
    private TcpListener? _listener;
    private CancellationTokenSource? _running;

    public TcpProxy(string targetHost, int targetPort)
    {
        _target = new IPEndPoint(IPAddress.Parse(targetHost), targetPort);
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        Port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
    }

    public int Port { get; }

    private TaskCompletionSource _answersGate = Released();
    private int _heldAnswers;

    private int _answersToPass;

    /// <summary>
    /// From now on, the database's answers stay in the proxy until <see cref="ReleaseAnswers"/>; the first
    /// <paramref name="passing"/> chunks still go through (a query's answer, for a caller that asks twice).
    /// </summary>
    public void HoldAnswers(int passing = 0)
    {
        Volatile.Write(ref _answersToPass, passing);
        Volatile.Write(ref _answersGate, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
    }

    public void ReleaseAnswers() => Volatile.Read(ref _answersGate).TrySetResult();

    /// <summary>Chunks of answers the database has sent that are held (the queries behind them have run).</summary>
    public int HeldAnswers => Volatile.Read(ref _heldAnswers);

    private static TaskCompletionSource Released()
    {
        var gate = new TaskCompletionSource();
        gate.SetResult();
        return gate;
    }

    public void Start()
    {
        _running = new CancellationTokenSource();
        _listener = new TcpListener(IPAddress.Loopback, Port);
        _listener.Server.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        _listener.Start();
        _ = AcceptAsync(_listener, _running.Token);
    }

    /// <summary>Cuts every open connection and refuses new ones until <see cref="Start"/>.</summary>
    public void Stop()
    {
        _running?.Cancel();
        _listener?.Stop();
        lock (_connections)
        {
            foreach (var connection in _connections)
            {
                try
                {
                    // Reset, not a graceful close: like a database host that went away.
                    connection.Client?.Close(0);
                }
                catch (ObjectDisposedException)
                {
                }

                connection.Dispose();
            }

            _connections.Clear();
        }
    }

    private async Task AcceptAsync(TcpListener listener, CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            TcpClient client;
            try
            {
                client = await listener.AcceptTcpClientAsync(stop);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }

            var server = new TcpClient();
            try
            {
                await server.ConnectAsync(_target, stop);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException)
            {
                client.Dispose();
                server.Dispose();
                continue;
            }

            lock (_connections)
            {
                _connections.Add(client);
                _connections.Add(server);
            }

            _ = PumpAsync(client, server, gated: false);
            _ = PumpAsync(server, client, gated: true);
        }
    }

    private async Task PumpAsync(TcpClient from, TcpClient to, bool gated)
    {
        try
        {
            var source = from.GetStream();
            var destination = to.GetStream();
            var buffer = new byte[64 * 1024];
            int read;
            while ((read = await source.ReadAsync(buffer)) > 0)
            {
                if (gated && Interlocked.Decrement(ref _answersToPass) < 0)
                {
                    Interlocked.Increment(ref _heldAnswers);
                    await Volatile.Read(ref _answersGate).Task;
                    Interlocked.Decrement(ref _heldAnswers);
                }

                await destination.WriteAsync(buffer.AsMemory(0, read));
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or SocketException or InvalidOperationException)
        {
        }
        finally
        {
            from.Dispose();
            to.Dispose();
        }
    }

    public ValueTask DisposeAsync()
    {
        ReleaseAnswers();
        Stop();
        _running?.Dispose();
        return ValueTask.CompletedTask;
    }
}
