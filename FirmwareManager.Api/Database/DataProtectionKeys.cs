using System.Xml.Linq;
using Dapper;
using Microsoft.AspNetCore.DataProtection;
using Microsoft.AspNetCore.DataProtection.KeyManagement;
using Microsoft.AspNetCore.DataProtection.Repositories;
using Npgsql;

namespace FirmwareManager.Api.Database;

/// <summary>
/// ASP.NET Core Data Protection's key ring, kept in PostgreSQL (<c>data_protection_keys</c>, migration 0041) so that
/// every instance protects and reads with the same keys. Data Protection calls it rarely (at the first use after
/// startup, once a day, when it adds a key ahead of the current one's expiry) and synchronously.
/// </summary>
public sealed class DataProtectionKeys(NpgsqlDataSource dataSource) : IXmlRepository
{
    private const string AllSql = """
        SELECT xml
        FROM data_protection_keys
        ORDER BY created_at, id
        """;

    private const string StoreSql = """
        INSERT INTO data_protection_keys (friendly_name, xml)
        VALUES (@FriendlyName, @Xml)
        """;

    public IReadOnlyCollection<XElement> GetAllElements()
    {
        using var connection = dataSource.OpenConnection();
        return connection.Query<string>(AllSql).Select(xml => XElement.Parse(xml)).ToList();
    }

    public void StoreElement(XElement element, string friendlyName)
    {
        using var connection = dataSource.OpenConnection();
        connection.Execute(StoreSql, new { FriendlyName = friendlyName, Xml = element.ToString(SaveOptions.DisableFormatting) });
    }
}

public static class DataProtectionExtensions
{
    /// <summary>Data Protection under the service's name, its keys in <see cref="DataProtectionKeys"/>.</summary>
    public static IServiceCollection AddDataProtectionInDatabase(this IServiceCollection services)
    {
        services.AddDataProtection().SetApplicationName("FirmwareManager");
        services.AddOptions<KeyManagementOptions>().Configure<NpgsqlDataSource>((options, dataSource) => options.XmlRepository = new DataProtectionKeys(dataSource));
        return services;
    }

    /// <summary>
    /// Reads the key ring, making the first key when there is none. Run at startup under the migrations' lock, so that
    /// instances starting together share one first key (each would make its own otherwise, and read the others' only
    /// at their next daily refresh: what one protected, another could not read until then).
    /// </summary>
    public static void EnsureKey(IServiceProvider services) =>
        services.GetRequiredService<IDataProtectionProvider>().CreateProtector("FirmwareManager.Startup").Protect([]);
}
