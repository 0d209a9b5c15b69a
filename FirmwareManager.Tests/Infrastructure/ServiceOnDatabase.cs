using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;
using Serilog.Core;

namespace FirmwareManager.Tests.Infrastructure;

/// <summary>The service on a database a test prepared itself, with the default settings otherwise (no demo data).</summary>
public sealed class ServiceOnDatabase(string connectionString) : WebApplicationFactory<Program>
{
    public CapturedLogs Logs { get; } = new();

    protected override void ConfigureWebHost(IWebHostBuilder builder) => builder
        .UseSetting("ConnectionStrings:FirmwareManager", connectionString)
        .ConfigureServices(services => services
            .AddSingleton<ILogEventSink>(Logs)
            .AddSingleton<Microsoft.AspNetCore.Hosting.IStartupFilter>(new ProjectedBeforeAnswered(connectionString)));
}
