using FirmwareManager.Api.Auth;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace FirmwareManager.Tests.Auth;

public sealed class HandlerLoggersTests
{
    [Fact]
    public void The_handler_logger_is_made_once_per_category_however_many_handlers_ask()
    {
        var factory = new CountingFactory();
        var loggers = new ApiKeyAuthenticationHandler.HandlerLoggers(factory);

        var first = loggers.CreateLogger(typeof(ApiKeyAuthenticationHandler).FullName!);
        var again = Enumerable.Range(0, 100).Select(_ => loggers.CreateLogger(typeof(ApiKeyAuthenticationHandler).FullName!)).ToList();
        var other = loggers.CreateLogger("Other");

        again.Should().OnlyContain(logger => ReferenceEquals(logger, first), "every request's handler asks again");
        other.Should().NotBeSameAs(first);
        factory.Made.Should().Equal(typeof(ApiKeyAuthenticationHandler).FullName!, "Other");
    }

    [Fact]
    public void Disposing_it_leaves_the_application_factory_alone()
    {
        var factory = new CountingFactory();

        new ApiKeyAuthenticationHandler.HandlerLoggers(factory).Dispose();

        factory.Disposed.Should().BeFalse("the container disposes the application's factory itself");
    }

    private sealed class CountingFactory : ILoggerFactory
    {
        public List<string> Made { get; } = [];

        public bool Disposed { get; private set; }

        public ILogger CreateLogger(string categoryName)
        {
            Made.Add(categoryName);
            return new Logger();
        }

        public void AddProvider(ILoggerProvider provider)
        {
        }

        public void Dispose() => Disposed = true;

        // A distinct instance per call, as Serilog's factory makes one.
        private sealed class Logger : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state)
                where TState : notnull => NullLogger.Instance.BeginScope(state);

            public bool IsEnabled(LogLevel logLevel) => false;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            {
            }
        }
    }
}
