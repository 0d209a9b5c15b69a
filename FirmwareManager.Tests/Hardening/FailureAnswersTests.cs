using System.Net;
using Dapper;
using FirmwareManager.Tests.Infrastructure;
using Microsoft.AspNetCore.Hosting;
using Npgsql;

namespace FirmwareManager.Tests.Hardening;

/// <summary>What a client sees when the service itself fails: a problem without internals, and nothing half-written.</summary>
public sealed class FailureAnswersTests
{
    [Theory]
    [InlineData("57P01", true)] // terminated by pg_terminate_backend
    [InlineData("57P02", true)]
    [InlineData("57P03", true)]
    [InlineData("08006", true)] // connection failure
    [InlineData("08P01", true)]
    [InlineData("53300", true)] // too many connections
    [InlineData("23505", false)] // a unique violation is a bug or bad input, not an outage
    [InlineData("25P02", false)]
    [InlineData("57014", false)] // query cancelled: answered by the request's time limit, not here
    public void A_database_that_went_away_is_503_and_a_failing_statement_is_not(string sqlState, bool unavailable)
    {
        var failure = new Npgsql.PostgresException("failure", "ERROR", "ERROR", sqlState);
        FirmwareManager.Api.Database.DatabaseFailures.IsDatabaseUnavailable(failure).Should().Be(unavailable);
        FirmwareManager.Api.Database.DatabaseFailures.IsDatabaseUnavailable(new InvalidOperationException("wrapped", failure))
            .Should().Be(unavailable);
    }

    [Fact]
    public async Task In_Production_an_unexpected_error_is_a_500_problem_without_stack_trace_or_SQL()
    {
        var connectionString = await PostgresServer.CreateDemoDatabaseAsync();
        await using var factory = new ServiceOnDatabase(connectionString);
        await using var service = factory.WithWebHostBuilder(b => b.UseEnvironment("Production"));
        using var device = service.CreateClient();
        device.DefaultRequestHeaders.Add("api_key", FirmwareManagerApp.DeviceKey1);
        await using (var connection = new NpgsqlConnection(connectionString))
        {
            // Once it runs, a schema the code does not expect: the kind of bug a 500 is for.
            await connection.ExecuteAsync("ALTER TABLE project_event_arrivals RENAME TO project_event_arrivals_gone");
        }

        var response = await device.PostEventAsync(1, new { firmware = "2.0.0", status = "updated" });

        var problem = await response.ShouldBeProblemAsync(HttpStatusCode.InternalServerError);
        var body = problem.GetRawText();
        body.Should().NotContainAny("project_event_arrivals", "Npgsql", "Exception", " at ", ".cs:");
        problem.GetProperty("trace_id").GetString().Should().MatchRegex("^[0-9a-f]{32}$", "the operator finds the logged exception by it");
        factory.Logs.Events.Should().Contain(e => e.Properties.ContainsKey("StatusCode") && e.Properties["StatusCode"].ToString() == "500"
            && e.Properties["RouteTemplate"].ToString() == "\"/firmware/{device_id}\"",
            "the request's log line names its route even though the exception handler cleared the endpoint");
        await using var check = new NpgsqlConnection(connectionString);
        (await check.ExecuteScalarAsync<int>("SELECT count(*) FROM firmware_events WHERE firmware = '2.0.0'")).Should().Be(0);

        // The failed transaction did not stay behind on a pooled connection: with the schema mended, reports are stored again.
        await check.ExecuteAsync("ALTER TABLE project_event_arrivals_gone RENAME TO project_event_arrivals");
        for (var i = 0; i < 5; i++)
        {
            (await device.PostEventAsync(1, new { firmware = $"2.0.{i + 1}", status = "updated" })).StatusCode.Should().Be(HttpStatusCode.Created);
        }
    }

    [Fact]
    public async Task A_request_that_outlives_the_request_timeout_is_cancelled_with_503_and_stores_nothing()
    {
        var connectionString = await PostgresServer.CreateDemoDatabaseAsync();
        await using var service = new ServiceOnDatabase(connectionString).WithWebHostBuilder(b => b
            .UseSetting("FirmwareManager:Limits:RequestTimeoutSeconds", "1"));
        using var device = service.CreateClient();
        device.DefaultRequestHeaders.Add("api_key", FirmwareManagerApp.DeviceKey1);
        (await device.GetAsync("/firmware/1")).StatusCode.Should().Be(HttpStatusCode.OK, "warm: the key is cached, connections are open");

        HttpResponseMessage response;
        await using (var blocker = new NpgsqlConnection(connectionString))
        {
            await blocker.OpenAsync();
            await using var transaction = await blocker.BeginTransactionAsync();
            // Another session holds the device row: the report waits for it past the timeout.
            await blocker.ExecuteAsync("SELECT id FROM devices WHERE project_id = 1 AND id = 1 FOR UPDATE", transaction: transaction);
            response = await device.PostEventAsync(1, new { firmware = "2.0.0", status = "updated", timestamp = "2024-05-01T00:00:00Z" });
            await transaction.RollbackAsync();
        }

        await response.ShouldBeProblemAsync(HttpStatusCode.ServiceUnavailable);
        await using var check = new NpgsqlConnection(connectionString);
        (await check.ExecuteScalarAsync<int>("SELECT count(*) FROM firmware_events WHERE firmware = '2.0.0'")).Should().Be(0);
        (await device.PostEventAsync(1, new { firmware = "2.0.1", status = "updated" })).StatusCode.Should().Be(HttpStatusCode.Created, "the service is fine afterwards");
    }
}
