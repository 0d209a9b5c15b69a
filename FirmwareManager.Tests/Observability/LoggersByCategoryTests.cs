using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Observability;
using FirmwareManager.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace FirmwareManager.Tests.Observability;

/// <summary>
/// The application's logger factory keeps one logger per category: callers that ask at every request (the
/// authentication handler, every typed result) no longer get a new Serilog logger each time.
/// </summary>
public sealed class LoggersByCategoryTests(FirmwareManagerApp app) : ApiTest(app)
{
    [Fact]
    public void The_applications_factory_makes_a_categorys_logger_once_however_often_it_is_asked()
    {
        var factory = App.Services.GetRequiredService<ILoggerFactory>();

        var first = factory.CreateLogger(typeof(ApiKeyAuthenticationHandler).FullName!);
        var again = Enumerable.Range(0, 100).Select(_ => factory.CreateLogger(typeof(ApiKeyAuthenticationHandler).FullName!)).ToList();

        factory.Should().BeOfType<LoggersByCategory>();
        again.Should().OnlyContain(logger => ReferenceEquals(logger, first), "every request's handler and typed result asks again");
        factory.CreateLogger("Microsoft.AspNetCore.Http.Result.OkObjectResult").Should().NotBeSameAs(first);
    }

    [Fact]
    public void Past_its_limit_a_category_gets_a_logger_made_for_it_and_disposing_it_disposes_the_factory_inside()
    {
        var inner = new CountingFactory();
        var factory = new LoggersByCategory(inner);

        for (var i = 0; i < LoggersByCategory.MaxCategories; i++)
        {
            factory.CreateLogger($"category {i}");
        }

        factory.CreateLogger("category 0").Should().BeSameAs(factory.CreateLogger("category 0"));
        factory.CreateLogger("one too many").Should().NotBeSameAs(factory.CreateLogger("one too many"), "the cache does not grow past its limit");
        inner.Made.Should().HaveCount(LoggersByCategory.MaxCategories + 2);

        factory.Dispose();
        inner.Disposed.Should().BeTrue("the container disposes the wrapper it made, and Serilog's factory is inside it");
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
