namespace FirmwareManager.Tests.Infrastructure;

/// <summary>The checkout the tests were built from: the folder above the test binaries that holds FirmwareManager.sln.</summary>
internal static class Checkout
{
    public static string Root()
    {
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "FirmwareManager.sln")))
        {
            directory = directory.Parent;
        }

        return directory?.FullName ?? throw new InvalidOperationException("FirmwareManager.sln not found above the test binaries.");
    }
}
