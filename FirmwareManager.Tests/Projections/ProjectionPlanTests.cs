using System.Text.RegularExpressions;
using Dapper;
using FirmwareManager.Api.Database;
using FirmwareManager.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace FirmwareManager.Tests.Projections;

/// <summary>
/// A projection step handles each of its events a bounded number of times per statement, whatever the planner expects of them. The step's range of
/// the feed lies above the statistics (the feed numbers grow past the histogram between two ANALYZEs), so PostgreSQL
/// expects about one event; two subqueries of the step's events joined to each other were then planned as a nested
/// loop that read the step again for every row of the other: quadratic in the step's size (17 s for a step of 2,000
/// events on 1,000,000 devices, docs/performance.md).
/// </summary>
public sealed partial class ProjectionPlanTests
{
    private const int Devices = 400;
    private const int StepEvents = 300;

    [Fact]
    public async Task Every_statement_of_a_step_handles_each_event_a_bounded_number_of_times_when_the_planner_expects_one()
    {
        var connectionString = await (await PostgresServer.SharedAsync()).CreateDatabaseAsync();
        await DatabaseMigrator.MigrateAsync(connectionString, applyDemoData: true, NullLogger.Instance);
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();

        // No service runs here, so nothing projects: the events are numbered past the project's feed by hand. Every
        // device has one event of the statistics' range; the step is each of the first devices reporting once more,
        // in a project with a rollout and a webhook, so that every statement runs.
        var first = await connection.ExecuteScalarAsync<long>("SELECT COALESCE(max(arrival), 0) + 1000 FROM firmware_events");
        await connection.ExecuteAsync("""
            INSERT INTO devices (project_id, name, hardware, current_firmware, current_firmware_at, last_reported_at, last_event_status, last_event_at)
            SELECT 1, 'planned ' || g, 'board-' || (g % 3), '1.0.0', now() - interval '2 days', now() - interval '2 days', 'installed', now() - interval '2 days'
            FROM generate_series(1, @Devices) AS g;
            INSERT INTO firmware_events (device_id, project_id, firmware, status, occurred_at, received_at, arrival)
            SELECT id, project_id, '1.0.0', 'installed', now() - interval '2 days', now() - interval '2 days', @First - 1 - row_number() OVER (ORDER BY id)
            FROM devices WHERE name LIKE 'planned %';
            INSERT INTO rollouts (project_id, firmware, max_failure_rate, min_devices, created_at)
            VALUES (1, '2.0.0', 0.5, 1000, now() - interval '1 day');
            INSERT INTO webhooks (project_id, url, event_types, secret_ciphertext)
            VALUES (1, 'http://127.0.0.1:9/', ARRAY['event.installed', 'event.updated', 'event.failed', 'event.rolled_back'], '\x00'::bytea);
            """, new { Devices, First = first });
        await connection.ExecuteAsync("ANALYZE devices; ANALYZE firmware_events");
        var step = new
        {
            ProjectId = 1L,
            FirstArrival = first,
            LastArrival = first + StepEvents - 1,
            EarliestOccurredAt = DateTime.UtcNow.AddHours(-1),
            LatestOccurredAt = DateTime.UtcNow.AddHours(1),
            StepTime = DateTime.UtcNow,
        };
        await connection.ExecuteAsync("""
            INSERT INTO firmware_events (device_id, project_id, firmware, status, occurred_at, received_at, arrival)
            SELECT id, project_id, CASE WHEN id % 2 = 0 THEN '2.0.0' ELSE '0.9.0' END, (ARRAY['installed', 'updated', 'failed', 'rolled_back'])[1 + id % 4],
                   now() - (id % 7) * interval '1 minute', now(), @FirstArrival - 1 + row_number() OVER (ORDER BY id)
            FROM (SELECT id, project_id FROM devices WHERE name LIKE 'planned %' ORDER BY id LIMIT @StepEvents) AS picked
            """, new { step.FirstArrival, StepEvents });

        // Every statement in the step's order, in one transaction, as the step runs them: those after the first read
        // the step's changes the first wrote (StepChanges).
        await using var transaction = await connection.BeginTransactionAsync();
        var read = new Dictionary<string, long>();
        foreach (var (type, statement) in ProjectionStatementsDocTests.Statements())
        {
            var plan = string.Join('\n', await connection.QueryAsync<string>(
                "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + statement.Sql, step, transaction));

            // Linear: no part of the plan handles more rows, or runs more times, than a few per event of the step
            // (a nested loop that runs a subquery of the step again for each of its rows handles events x events).
            var nodes = plan.Split('\n').Select(line => (Line: line, Actual: Actual().Match(line))).Where(n => n.Actual.Success).ToList();
            foreach (var table in new[] { "firmware_events", "projection_step_devices", "projection_step_transitions" }
                         .Where(t => statement.Sql.Contains("FROM " + t, StringComparison.Ordinal) && !statement.Sql.StartsWith("DELETE", StringComparison.Ordinal)))
            {
                var scans = nodes.Where(n => n.Line.Contains(" on " + table, StringComparison.Ordinal)).ToList();
                scans.Should().NotBeEmpty($"{statement.Order} ({type.Name}) reads {table}:\n{plan}");
                read[table] = Math.Max(read.GetValueOrDefault(table), scans.Max(n => long.Parse(n.Actual.Groups["rows"].Value)));
            }

            nodes.Should().OnlyContain(n => long.Parse(n.Actual.Groups["rows"].Value) * long.Parse(n.Actual.Groups["loops"].Value) <= 5 * StepEvents
                                            && long.Parse(n.Actual.Groups["loops"].Value) <= 5 * StepEvents,
                $"{statement.Order} ({type.Name}) must handle each event of the step a bounded number of times:\n{plan}");
        }

        // The statements read the step: its events, and the changes derived from them (one row a device, and one a
        // device's update target, here one event a device).
        read.Should().BeEquivalentTo(new Dictionary<string, long>
        {
            ["firmware_events"] = StepEvents,
            ["projection_step_devices"] = StepEvents,
            ["projection_step_transitions"] = StepEvents,
        });
        await transaction.RollbackAsync();
    }

    [GeneratedRegex(@"actual rows=(?<rows>\d+) loops=(?<loops>\d+)")]
    private static partial Regex Actual();
}
