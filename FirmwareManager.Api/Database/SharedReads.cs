namespace FirmwareManager.Api.Database;

/// <summary>
/// Identical reads that arrive together share one query, and each is answered by a query that started after it
/// arrived: a request that finds the same query running waits for the next one, which starts when the running one
/// ends and serves every request that arrived meanwhile. So an answer never misses what its caller wrote before
/// asking, and at most two queries per key are under way (one running, one waiting to start). A query's token is
/// cancelled when the last request waiting for it has gone (its client, or its time limit); a next query that no
/// request waits for any more is never started.
/// </summary>
public sealed class SharedReads<TKey, T>
    where TKey : notnull
{
    private readonly Lock _gate = new();
    private readonly Dictionary<TKey, Slot> _slots = [];

    public async Task<T> RunAsync(TKey key, Func<CancellationToken, Task<T>> query, CancellationToken cancellationToken)
    {
        Flight flight;
        var startNow = false;
        lock (_gate)
        {
            if (!_slots.TryGetValue(key, out var slot))
            {
                _slots[key] = slot = new Slot();
            }

            if (slot.Running is null)
            {
                flight = slot.Running = new Flight(query);
                startNow = true;
            }
            else
            {
                flight = slot.Next ??= new Flight(query);
            }

            flight.Waiting++;
        }

        if (startNow)
        {
            _ = RunFlightAsync(key, flight);
        }

        try
        {
            return await flight.Result.Task.WaitAsync(cancellationToken);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            lock (_gate)
            {
                if (--flight.Waiting == 0 && !flight.Result.Task.IsCompleted)
                {
                    flight.Cancel.Cancel();
                }
            }

            throw;
        }
    }

    private async Task RunFlightAsync(TKey key, Flight flight)
    {
        try
        {
            flight.Result.TrySetResult(await flight.Query(flight.Cancel.Token));
        }
        catch (OperationCanceledException) when (flight.Cancel.IsCancellationRequested)
        {
            flight.Result.TrySetCanceled(flight.Cancel.Token);
        }
        catch (Exception e)
        {
            flight.Result.TrySetException(e);
        }

        Flight? next;
        lock (_gate)
        {
            var slot = _slots[key];
            next = slot.Next is { Waiting: > 0 } waiting ? waiting : null;
            slot.Next = null;
            slot.Running = next;
            if (next is null)
            {
                _slots.Remove(key);
            }
        }

        flight.Cancel.Dispose();
        if (next is not null)
        {
            await RunFlightAsync(key, next);
        }
    }

    private sealed class Slot
    {
        public Flight? Running;
        public Flight? Next;
    }

    private sealed class Flight(Func<CancellationToken, Task<T>> query)
    {
        public Func<CancellationToken, Task<T>> Query { get; } = query;

        public CancellationTokenSource Cancel { get; } = new();

        public TaskCompletionSource<T> Result { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public int Waiting;
    }
}
