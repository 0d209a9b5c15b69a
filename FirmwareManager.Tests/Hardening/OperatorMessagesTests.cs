using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using FirmwareManager.Tests.Infrastructure;
using Npgsql;

namespace FirmwareManager.Tests.Hardening;

/// <summary>What an operator sees from the command line: the built service, run as a process of its own.</summary>
public sealed class OperatorMessagesTests
{
    [Fact]
    public async Task An_unknown_command_is_an_error_listing_the_commands_not_a_start_of_the_service()
    {
        var (exitCode, output) = await RunServiceAsync(["frobnicate"], new() { ["ConnectionStrings__FirmwareManager"] = "Host=127.0.0.1;Port=1" });

        exitCode.Should().Be(2, output);
        output.Should().Contain("Unknown command 'frobnicate'").And.Contain("create-project").And.Contain("healthcheck");
        output.Should().NotContain("Now listening");
    }

    [Fact]
    public async Task No_database_is_one_line_naming_the_cause_and_the_setting_without_a_stack_trace()
    {
        var (exitCode, output) = await RunServiceAsync([], new()
        {
            ["ConnectionStrings__FirmwareManager"] = $"Host=127.0.0.1;Port={ClosedPort()};Username=fm;Password=do-not-log-me;Timeout=3",
        });

        exitCode.Should().Be(1, output);
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        lines.Should().ContainSingle(l => l.Contains("could not start", StringComparison.Ordinal)).Which
            .Should().Contain("Cannot reach the database").And.Contain("ConnectionStrings__FirmwareManager");
        output.Should().NotContain("   at ", "an expected failure has no stack trace").And.NotContain("do-not-log-me");
    }

    [Fact]
    public async Task A_failing_migration_is_one_line_naming_the_script()
    {
        var connectionString = await (await PostgresServer.SharedAsync()).CreateDatabaseAsync();
        await using (var connection = new NpgsqlConnection(connectionString))
        {
            await connection.OpenAsync();
            await using var create = new NpgsqlCommand("CREATE TABLE devices (id bigint PRIMARY KEY)", connection);
            await create.ExecuteNonQueryAsync();
        }

        var (exitCode, output) = await RunServiceAsync([], new() { ["ConnectionStrings__FirmwareManager"] = connectionString });

        exitCode.Should().Be(1, output);
        output.Split('\n').Should().ContainSingle(l => l.Contains("could not start", StringComparison.Ordinal)).Which
            .Should().Contain("0002_create_devices.sql").And.Contain("rolled back");
        output.Should().NotContain("   at ");
    }

    [Fact]
    public async Task A_bad_setting_is_one_line_naming_the_setting_and_its_environment_variable()
    {
        var (exitCode, output) = await RunServiceAsync([], new()
        {
            ["ConnectionStrings__FirmwareManager"] = "Host=127.0.0.1;Port=1",
            ["FirmwareManager__Ingest__Writers"] = "0",
        });

        exitCode.Should().Be(1, output);
        output.Split('\n').Should().ContainSingle(l => l.Contains("could not start", StringComparison.Ordinal)).Which
            .Should().Contain("Writers");
        output.Should().NotContain("   at ");
    }

    [Theory]
    [InlineData("FirmwareManager__Ingest__Writers", "0")]
    [InlineData("FirmwareManager__Ingest__MaxGroupSize", "20000")]
    [InlineData("FirmwareManager__Retention__BatchSize", "5")]
    [InlineData("FirmwareManager__Limits__RequestTimeoutSeconds", "0")]
    [InlineData("FirmwareManager__RateLimits__Device__Burst", "0")]
    [InlineData("FirmwareManager__RateLimits__Member__PermitsPerSecond", "-1")]
    [InlineData("FirmwareManager__Metrics__Port", "70000")]
    [InlineData("FirmwareManager__LogFormat", "xml")]
    [InlineData("FirmwareManager__KeyUsageFlushSeconds", "0")]
    [InlineData("FirmwareManager__Ingest__Writers", "two")]
    public async Task Every_bad_setting_stops_the_start_with_one_line_naming_it_and_its_environment_variable(string variable, string value)
    {
        var (exitCode, output) = await RunServiceAsync([], new()
        {
            ["ConnectionStrings__FirmwareManager"] = $"Host=127.0.0.1;Port={ClosedPort()};Timeout=3",
            [variable] = value,
        });

        exitCode.Should().Be(1, output);
        output.Split('\n').Should().ContainSingle(l => l.Contains("could not start", StringComparison.Ordinal)).Which
            .Should().Contain(variable.Replace("__", ":", StringComparison.Ordinal)).And.Contain("environment variable");
        output.Should().NotContain("   at ").And.NotContain("Cannot reach the database", "settings are checked before anything touches the database");
    }

    private static int ClosedPort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    [Fact]
    public async Task Started_from_another_folder_the_service_keeps_its_documented_log_levels()
    {
        var connectionString = await PostgresServer.CreateDemoDatabaseAsync();
        var elsewhere = Directory.CreateTempSubdirectory("fm-elsewhere-");
        try
        {
            // Runs for 8 s: startup, then several rounds of the webhook sender's and the upkeep's polls.
            var (_, output) = await RunServiceAsync([], new() { ["ConnectionStrings__FirmwareManager"] = connectionString },
                workingDirectory: elsewhere.FullName, runFor: TimeSpan.FromSeconds(8));

            output.Should().Contain("Now listening", "the service started (Microsoft.Hosting.Lifetime logs at Information)");
            output.Should().NotContain("SELECT", "Npgsql logs at Warning, as appsettings.json beside the assembly says");
            output.Should().NotContain("Executing endpoint", "Microsoft.AspNetCore logs at Warning");
        }
        finally
        {
            elsewhere.Delete(recursive: true);
        }
    }

    /// <summary>
    /// Runs the built service (the Api assembly beside the tests) and returns its exit code and all it printed; with
    /// <paramref name="runFor"/>, stops it after that long (exit code -1 then).
    /// </summary>
    internal static async Task<(int ExitCode, string Output)> RunServiceAsync(
        string[] args, Dictionary<string, string> environment, string? workingDirectory = null, TimeSpan? runFor = null)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = workingDirectory ?? AppContext.BaseDirectory,
        };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "FirmwareManager.Api.dll"));
        foreach (var argument in args)
        {
            start.ArgumentList.Add(argument);
        }

        start.Environment["ASPNETCORE_URLS"] = "http://127.0.0.1:0";
        foreach (var (name, value) in environment)
        {
            start.Environment[name] = value;
        }

        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(runFor ?? TimeSpan.FromSeconds(60));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException) when (runFor is not null)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
            return (-1, await output + await error);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new Xunit.Sdk.XunitException($"The service did not exit within 60 s:\n{await output}\n{await error}");
        }

        return (process.ExitCode, await output + await error);
    }
}
