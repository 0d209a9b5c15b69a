using System.Reflection;
using System.Text;
using FirmwareManager.Api.Projections;
using FirmwareManager.Tests.Infrastructure;

namespace FirmwareManager.Tests.Projections;

/// <summary>
/// docs/projection-statements.sql holds every projection statement in full, in the order a step runs them, as
/// PostgreSQL receives it: a DBA reviews each one there without expanding the shared subqueries of
/// <see cref="StepEvents"/> in their head. This keeps the file true; with <c>FIRMWAREMANAGER_WRITE_DOCS=1</c> it writes
/// the file instead.
/// </summary>
public sealed class ProjectionStatementsDocTests
{
    private const string DocPath = "docs/projection-statements.sql";

    [Fact]
    public void The_statements_document_matches_the_statements_that_run()
    {
        var expected = Render();
        var path = Path.Combine(Checkout.Root(), DocPath);
        if (Environment.GetEnvironmentVariable("FIRMWAREMANAGER_WRITE_DOCS") == "1")
        {
            File.WriteAllText(path, expected);
        }

        File.Exists(path).Should().BeTrue($"{DocPath} is written by this test with FIRMWAREMANAGER_WRITE_DOCS=1");
        File.ReadAllText(path).Should().Be(expected,
            $"{DocPath} shows the statements as they run; write it again with FIRMWAREMANAGER_WRITE_DOCS=1 dotnet test --filter {nameof(ProjectionStatementsDocTests)}");
    }

    /// <summary>Every projection statement, with the projection it belongs to, in the order a step runs them.</summary>
    internal static List<(Type Type, ProjectionStatement Statement)> Statements()
    {
        var statements = typeof(IProjection).Assembly.GetTypes()
            .Where(t => t is { IsClass: true, IsAbstract: false } && typeof(IProjection).IsAssignableFrom(t))
            .Select(t => (Type: t, Projection: (IProjection)Activator.CreateInstance(t)!))
            .SelectMany(p => p.Projection.Statements.Select(s => (p.Type, Statement: s)))
            .OrderBy(s => s.Statement.Order)
            .ToList();
        statements.Should().NotBeEmpty();
        return statements;
    }

    private static string Render()
    {
        var statements = Statements();

        var text = new StringBuilder();
        text.Append("""
            -- Every statement of a projection step, in the order the step runs them, in full: as PostgreSQL receives it.
            -- The step (FirmwareManager.Api/Projections/ProjectionSteps.cs) runs them in one transaction, after it has
            -- claimed the project's position and locked the step's devices, and stores the new position after them.
            -- Parameters: @ProjectId; @FirstArrival and @LastArrival, the range of the project's feed the step applies;
            -- @EarliestOccurredAt and @LatestOccurredAt, its events' times (they bound the monthly partitions read);
            -- @StepTime, the step's time.
            -- Written by ProjectionStatementsDocTests (FIRMWAREMANAGER_WRITE_DOCS=1), which fails when this file and the
            -- code differ: edit the code, not this file.

            """);
        foreach (var (type, statement) in statements)
        {
            var runs = statement.Needs == StepNeeds.Nothing ? "every step" : $"steps of projects with {statement.Needs}";
            text.Append('\n')
                .Append($"-- {(int)statement.Order} {statement.Order}: {type.Namespace!.Split('.')[^1]}/{type.Name}.cs; runs in {runs}\n")
                .Append(Laid(statement.Sql.Trim(), Subqueries()))
                .Append(";\n");
        }

        return text.ToString();
    }

    // The shared subqueries a statement interpolates (StepEvents' constants, and a feature's own that are not
    // statements), largest first: a larger one holds smaller ones.
    private static string[] Subqueries() =>
        new[] { typeof(StepEvents) }
            .Concat(typeof(IProjection).Assembly.GetTypes().Where(t => typeof(IProjection).IsAssignableFrom(t)))
            .SelectMany(t => t.GetFields(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static))
            .Where(f => f is { IsLiteral: true } && f.FieldType == typeof(string) && !f.Name.EndsWith("Sql", StringComparison.Ordinal))
            .Select(f => (string)f.GetRawConstantValue()!)
            .OrderByDescending(sql => sql.Length)
            .ToArray();

    // An interpolated subquery keeps its own lines' indentation, which starts at the left margin: each is laid out
    // again at the column where the statement names it, as one would write it by hand.
    private static string Laid(string sql, string[] subqueries)
    {
        foreach (var subquery in subqueries)
        {
            var at = 0;
            while ((at = sql.IndexOf(subquery, at, StringComparison.Ordinal)) >= 0)
            {
                var column = at - (sql.LastIndexOf('\n', Math.Max(at - 1, 0)) + 1);
                var laid = Laid(subquery, subqueries.Where(s => s.Length < subquery.Length).ToArray())
                    .Replace("\n", "\n" + new string(' ', column), StringComparison.Ordinal);
                sql = string.Concat(sql.AsSpan(0, at), laid, sql.AsSpan(at + subquery.Length));
                at += laid.Length;
            }
        }

        return sql;
    }
}
