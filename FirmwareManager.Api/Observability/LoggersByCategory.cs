using System.Collections.Concurrent;

namespace FirmwareManager.Api.Observability;

/// <summary>
/// The application's logger factory: Serilog's, with one logger kept per category. Serilog's factory makes a new
/// logger at every call (a contextual Serilog logger and its own event-id cache, a concurrent dictionary), and some
/// callers ask at every request: ASP.NET Core's authentication handler in its constructor (a handler per request),
/// and every typed result (<c>TypedResults.Ok</c> and the rest) as it writes itself. On a history read those
/// loggers were 6.3% of the allocated bytes (dotnet-trace during bench/history-baselines.sh, 2026-12-06).
/// Microsoft's own factory keeps its loggers the same way. Categories are type and constant names; past
/// <see cref="MaxCategories"/> (a category made of data, say) a logger is made as before rather than kept.
/// </summary>
public sealed class LoggersByCategory(ILoggerFactory inner) : ILoggerFactory
{
    public const int MaxCategories = 1000;

    private readonly ConcurrentDictionary<string, ILogger> _loggers = new(StringComparer.Ordinal);

    public ILogger CreateLogger(string categoryName) =>
        _loggers.TryGetValue(categoryName, out var logger) ? logger
        : _loggers.Count >= MaxCategories ? inner.CreateLogger(categoryName)
        : _loggers.GetOrAdd(categoryName, inner.CreateLogger);

    public void AddProvider(ILoggerProvider provider) => inner.AddProvider(provider);

    // The container disposes this factory (it made it); Serilog's inside it is this factory's to dispose.
    public void Dispose() => inner.Dispose();

    /// <summary>Wraps the <see cref="ILoggerFactory"/> registered last (Serilog's) in one that keeps its loggers.</summary>
    public static void Decorate(IServiceCollection services)
    {
        var registered = services.Last(d => d.ServiceType == typeof(ILoggerFactory));
        services.Remove(registered);
        services.AddSingleton<ILoggerFactory>(provider => new LoggersByCategory(
            registered.ImplementationInstance as ILoggerFactory
            ?? registered.ImplementationFactory?.Invoke(provider) as ILoggerFactory
            ?? (ILoggerFactory)ActivatorUtilities.CreateInstance(provider, registered.ImplementationType!)));
    }
}
