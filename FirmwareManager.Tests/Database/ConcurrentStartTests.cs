using System.Diagnostics;
using System.Text;
using FirmwareManager.Api;
using FirmwareManager.Tests.Infrastructure;
using Npgsql;

namespace FirmwareManager.Tests.Database;

/// <summary>
/// Two instances of a deployment start at the same moment on a database nothing has touched yet (a fresh
/// install scaled to two, a process manager starting both): both must come up, whatever order their startup steps
/// (migrations, grants, demo data, partitions, the background services' first rounds) meet in. Processes of their
/// own, as in production: two WebApplicationFactory hosts starting at once in one process can take each other's host.
/// </summary>
public sealed class ConcurrentStartTests
{
    [Fact]
    public async Task Two_instances_starting_together_on_a_fresh_database_both_come_up_every_time()
    {
        // Ten rounds on PostgreSQL; four on Citus, where a fresh database's migrations take about 20 s a round (each
        // table distributed over the workers) and the startup steps that can meet are the same code.
        var rounds = PostgresServer.IsCitus ? 4 : 10;
        for (var attempt = 1; attempt <= rounds; attempt++)
        {
            var connectionString = await (await PostgresServer.SharedAsync()).CreateDatabaseAsync();

            var outcomes = await Task.WhenAll(StartAsync(connectionString), StartAsync(connectionString));

            foreach (var (listening, output) in outcomes)
            {
                listening.Should().BeTrue($"both instances come up (attempt {attempt}):\n{output}");
            }
        }
    }

    [Fact]
    public async Task A_startup_step_that_meets_a_deadlock_is_tried_again_and_one_that_keeps_meeting_it_is_named_without_blaming_the_connection()
    {
        var tries = 0;
        await StartupSteps.RunAsync("Making the events' partitions ahead", () =>
            ++tries < 3 ? throw new PostgresException("deadlock detected", "ERROR", "ERROR", PostgresErrorCodes.DeadlockDetected) : Task.CompletedTask);
        tries.Should().Be(3);

        var always = () => StartupSteps.RunAsync("Making the events' partitions ahead",
            () => throw new PostgresException("deadlock detected", "ERROR", "ERROR", PostgresErrorCodes.DeadlockDetected));

        var failure = (await always.Should().ThrowAsync<StartupStepFailedException>()).Which;
        var explained = StartupFailure.Explain(failure);
        explained.Should().StartWith("Making the events' partitions ahead: 5 tries met a concurrent transaction (40P01: deadlock detected)");
        explained.Should().NotContain("Cannot reach");
        StartupFailure.Explain(new StartupStepFailedException("Migrations", new NpgsqlException("Failed to connect", new System.Net.Sockets.SocketException())))
            .Should().StartWith("Migrations: Cannot reach the database");
    }

    // Starts the built service with demo data; true once it listens (then stops it), false if it exits first.
    private static async Task<(bool Listening, string Output)> StartAsync(string connectionString)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = AppContext.BaseDirectory,
        };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "FirmwareManager.Api.dll"));
        start.Environment["ASPNETCORE_URLS"] = "http://127.0.0.1:0";
        start.Environment["ConnectionStrings__FirmwareManager"] = connectionString;
        start.Environment["FirmwareManager__DemoData"] = "true";
        using var process = new Process { StartInfo = start };
        var output = new StringBuilder();
        var listening = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        void Read(object? sender, DataReceivedEventArgs line)
        {
            if (line.Data is null)
            {
                return;
            }

            lock (output)
            {
                output.AppendLine(line.Data);
            }

            if (line.Data.Contains("Now listening on", StringComparison.Ordinal))
            {
                listening.TrySetResult(true);
            }
        }

        process.OutputDataReceived += Read;
        process.ErrorDataReceived += Read;
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var exited = process.WaitForExitAsync();
        var first = await Task.WhenAny(listening.Task, exited, Task.Delay(TimeSpan.FromSeconds(90)));
        var up = first == listening.Task;
        if (!process.HasExited)
        {
            process.Kill(entireProcessTree: true);
        }

        await process.WaitForExitAsync();
        lock (output)
        {
            return (up, output.ToString());
        }
    }
}
