using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;

namespace FirmwareManager.Tests.Infrastructure;

/// <summary>The service on a database a test prepared itself, with the default settings otherwise (no demo data).</summary>
public sealed class ServiceOnDatabase(string connectionString) : WebApplicationFactory<Program>
{
    protected override void ConfigureWebHost(IWebHostBuilder builder) =>
        builder.UseSetting("ConnectionStrings:FirmwareManager", connectionString);
}
