using System.Buffers;
using System.ComponentModel.DataAnnotations;
using System.Diagnostics;
using System.Globalization;
using System.IO.Pipelines;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using CsvHelper;
using Dapper;
using FirmwareManager.Api.Database;
using Microsoft.Extensions.Options;
using Npgsql;

namespace FirmwareManager.Api.Http;

/// <summary>The <c>FirmwareManager:Exports</c> section: how many exports run at once, how fast, and for how long at most.</summary>
public sealed class ExportOptions
{
    public const string Section = "FirmwareManager:Exports";

    /// <summary>Exports of one project this instance runs at once; one more is answered 429.</summary>
    [Range(1, 100)]
    public int MaxPerProject { get; set; } = 2;

    /// <summary>Exports of all projects this instance runs at once: each holds a pooled connection for its whole length.</summary>
    [Range(1, 1000)]
    public int MaxPerInstance { get; set; } = 8;

    /// <summary>
    /// Rows one export streams per second at most: it waits whenever it is ahead, so that exports leave the cores to
    /// the reports (two unbounded exports took about one of two cores and doubled ingest's p99; docs/performance.md).
    /// </summary>
    [Range(1_000, 100_000_000)]
    public int MaxRowsPerSecond { get; set; } = 250_000;

    /// <summary>The export's statement ends after this long (PostgreSQL's statement_timeout), and the stream with it, unfinished.</summary>
    [Range(1, 86_400)]
    public int TimeoutSeconds { get; set; } = 3600;
}

public enum ExportFormat
{
    Csv,
    Ndjson,
}

/// <summary>
/// Whether a list request asks for an export rather than a JSON page: <c>Accept</c> naming <c>text/csv</c> or
/// <c>application/x-ndjson</c> ahead of JSON (by quality, then in the order given; <c>text/*</c> is CSV, and
/// <c>*/*</c> or <c>application/*</c> JSON). Anything else, an unparsable header included, gets JSON, as before.
/// </summary>
public static class ExportNegotiation
{
    public const string CsvType = "text/csv";
    public const string NdjsonType = "application/x-ndjson";

    public static ExportFormat? Requested(HttpRequest request)
    {
        IList<Microsoft.Net.Http.Headers.MediaTypeHeaderValue> accepted;
        try
        {
            accepted = request.GetTypedHeaders().Accept;
        }
        catch (FormatException)
        {
            return null;
        }

        foreach (var media in accepted.Where(a => a.Quality is not 0).OrderByDescending(a => a.Quality ?? 1))
        {
            var type = media.MediaType.Value?.ToLowerInvariant();
            switch (type)
            {
                case CsvType or "text/*":
                    return ExportFormat.Csv;
                case NdjsonType:
                    return ExportFormat.Ndjson;
                case "application/json" or "application/*" or "*/*":
                    return null;
            }
        }

        return null;
    }

    /// <summary>
    /// The endpoint answers exports too: OpenAPI lists CSV and NDJSON beside its JSON page (added to the 200 answer
    /// the JSON page describes: a second produces-metadata for 200 would replace it).
    /// </summary>
    public static RouteHandlerBuilder Exports(this RouteHandlerBuilder endpoint) => endpoint
        .AddOpenApiOperationTransformer((operation, _, _) =>
        {
            if (operation.Responses?.TryGetValue("200", out var ok) == true && ok is Microsoft.OpenApi.OpenApiResponse response)
            {
                response.Content ??= new Dictionary<string, Microsoft.OpenApi.OpenApiMediaType>();
                foreach (var (type, description) in new[]
                         {
                             (CsvType, "Every row the filters select: a header row of the JSON field names, then a row each (RFC 4180)."),
                             (NdjsonType, "Every row the filters select: a line each, the JSON page's object."),
                         })
                {
                    response.Content[type] = new Microsoft.OpenApi.OpenApiMediaType
                    {
                        Schema = new Microsoft.OpenApi.OpenApiSchema { Type = Microsoft.OpenApi.JsonSchemaType.String, Description = description },
                    };
                }
            }

            return Task.CompletedTask;
        })
        .ProducesProblem(StatusCodes.Status429TooManyRequests);
}

/// <summary>One export's statement: the list's own page statement with no page bound.</summary>
public sealed record ExportQuery(string Sql, object Parameters);

/// <summary>What an export has read when its snapshot is taken, for a step that runs in it before the rows.</summary>
public sealed record ExportSnapshot(HttpContext Http, NpgsqlConnection Connection, NpgsqlTransaction Transaction, ReadContext Read);

/// <summary>An export's answer: the stream, run when ASP.NET Core executes the result.</summary>
public sealed class ExportResult(Func<HttpContext, Task> run) : IResult
{
    public Task ExecuteAsync(HttpContext httpContext) => run(httpContext);
}

/// <summary>
/// Streams every row a list's statement selects, as CSV (a header row of the JSON page's field names, RFC 4180
/// quoting through CsvHelper, times as the JSON has them, an array as one field of space-separated values, an
/// object as its JSON) or NDJSON (each line the JSON page's object), in the page's order, as it is read:
/// <list type="bullet">
/// <item>one snapshot: a <c>REPEATABLE READ</c> read-only transaction, on a standby when one has the caller's
/// writes (<see cref="ReadRouting.BeginSnapshotAsync"/>), which a step before the rows may read too (the feed
/// position of an events export);</item>
/// <item>memory bounded: rows are read as PostgreSQL sends them and flushed every 32 KB, and a slow client slows
/// the statement (the pipe's back-pressure), not the service;</item>
/// <item>never a truncated file taken for whole: a failure once the answer has begun (the database gone, the
/// statement timeout) is logged and the connection is aborted, so the transfer ends without its proper end
/// (no last chunk);</item>
/// <item>bounded: at most <see cref="ExportOptions.MaxPerProject"/> per project and
/// <see cref="ExportOptions.MaxPerInstance"/> in all run at once on an instance; more are answered 429.</item>
/// </list>
/// </summary>
public sealed class Exports(ReadRouting reads, IOptions<ExportOptions> options, ILogger<Exports> logger)
{
    public const int RetryAfterSeconds = 5;
    private const int FlushEvery = 32 * 1024;

    private static readonly CsvWriterOptions Csv = new() { NewLine = "\n" };

    private readonly Dictionary<long, int> _running = [];
    private int _runningInAll;

    /// <summary>
    /// The export of <paramref name="query"/>'s rows, each mapped as the JSON page maps it. <paramref name="atSnapshot"/>
    /// runs in the snapshot before the rows, and may answer instead (a device unknown to the project: 404).
    /// </summary>
    public ExportResult Of<TRow, TOut>(
        ExportFormat format, string name, long projectId, ReadContext read, ExportQuery query, Func<TRow, TOut> map,
        Func<ExportSnapshot, Task<IResult?>>? atSnapshot = null) =>
        new(http => RunAsync(http, format, name, projectId, read, query, map, atSnapshot));

    private async Task RunAsync<TRow, TOut>(
        HttpContext http, ExportFormat format, string name, long projectId, ReadContext read, ExportQuery query, Func<TRow, TOut> map,
        Func<ExportSnapshot, Task<IResult?>>? atSnapshot)
    {
        // The JSON pages' own serialization (names, escaping), so that a line is byte for byte a page's object.
        var json = (JsonTypeInfo<TOut>)http.RequestServices.GetRequiredService<IOptions<Microsoft.AspNetCore.Http.Json.JsonOptions>>()
            .Value.SerializerOptions.GetTypeInfo(typeof(TOut));
        if (!TryEnter(projectId))
        {
            http.Response.Headers.RetryAfter = RetryAfterSeconds.ToString(CultureInfo.InvariantCulture);
            await Problems.WriteAsync(http, StatusCodes.Status429TooManyRequests, "Too many exports at once",
                $"At most {options.Value.MaxPerProject} exports of a project (and {options.Value.MaxPerInstance} in all) run at once on an instance. " +
                $"Retry in {RetryAfterSeconds} seconds.");
            return;
        }

        // An export is bounded by its statement's time (TimeoutSeconds), not by a request's (Limits:RequestTimeoutSeconds,
        // 30 s): that limit cancelled an export of ten million events part way, and the stream then ended as if whole.
        http.Features.Get<Microsoft.AspNetCore.Http.Timeouts.IHttpRequestTimeoutFeature>()?.DisableTimeout();
        var rows = 0L;
        var cancellationToken = http.RequestAborted;
        try
        {
            var (connection, transaction) = await reads.BeginSnapshotAsync(read, options.Value.TimeoutSeconds * 1000, cancellationToken);
            await using var _ = connection;
            await using var __ = transaction;
            if (atSnapshot is not null && await atSnapshot(new ExportSnapshot(http, connection, transaction, read)) is { } answer)
            {
                await answer.ExecuteAsync(http);
                return;
            }

            // No command timeout: the statement's own (SET LOCAL statement_timeout) bounds the export as a whole.
            await using var reader = await connection.ExecuteReaderAsync(
                new CommandDefinition(query.Sql, query.Parameters, transaction, commandTimeout: 0, cancellationToken: cancellationToken));
            var parse = reader.GetRowParser<TRow>();
            http.Response.ContentType = format == ExportFormat.Csv ? "text/csv; charset=utf-8" : ExportNegotiation.NdjsonType;
            http.Response.Headers.ContentDisposition = $"attachment; filename=\"{name}.{(format == ExportFormat.Csv ? "csv" : "ndjson")}\"";
            http.Response.Headers.CacheControl = "no-store";
            var pipe = http.Response.BodyWriter;
            var pace = new Pace(options.Value.MaxRowsPerSecond);
            if (format == ExportFormat.Csv)
            {
                rows = await WriteCsvAsync(pipe, reader, parse, map, json, pace, cancellationToken);
            }
            else
            {
                rows = await WriteNdjsonAsync(pipe, reader, parse, map, json, pace, cancellationToken);
            }

            logger.LogInformation("Exported {Rows} {Export} of project {ProjectId} as {Format}", rows, name, projectId, format);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            logger.LogInformation("The client left the export of {Export} of project {ProjectId}", name, projectId);
            // Whatever cancelled it, a stream cut short never gets its proper end.
            http.Abort();
        }
        catch (Exception e) when (http.Response.HasStarted)
        {
            logger.LogError(
                "The export of {Export} of project {ProjectId} failed after it began, so its connection is closed without the stream's end: {Reason}",
                name, projectId, e.Message);
            http.Abort();
        }
        finally
        {
            Leave(projectId);
        }
    }

    private static async Task<long> WriteCsvAsync<TRow, TOut>(
        PipeWriter pipe, System.Data.Common.DbDataReader reader, Func<System.Data.Common.DbDataReader, TRow> parse, Func<TRow, TOut> map,
        JsonTypeInfo<TOut> json, Pace pace, CancellationToken cancellationToken)
    {
        var fields = json.Properties.Where(p => p.Get is not null).ToArray();
        var rows = 0L;
        await using var csv = CsvWriter.Create(pipe.AsStream(leaveOpen: true), Csv, leaveOpen: false);
        foreach (var field in fields)
        {
            csv.WriteField(field.Name);
        }

        await csv.EndRecordAsync(cancellationToken);
        // The header row goes out at once: the first byte does not wait for a buffer of rows.
        await csv.FlushAsync(cancellationToken);
        await pipe.FlushAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            var value = map(parse(reader))!;
            foreach (var field in fields)
            {
                csv.WriteField(CsvField(field.Get!(value)));
            }

            await csv.EndRecordAsync(cancellationToken);
            rows++;
            await pace.KeepAsync(rows, cancellationToken);
        }

        await csv.FlushAsync(cancellationToken);
        return rows;
    }

    // As the JSON page has it, in one field: times in RFC 3339 (most responses have them as strings already).
    private static string CsvField(object? value) => value switch
    {
        null => "",
        string text => text,
        DateTime time => Rfc3339.Format(time),
        bool flag => flag ? "true" : "false",
        string[] values => string.Join(' ', values),
        JsonElement element => element.GetRawText(),
        IFormattable formattable => formattable.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "",
    };

    private static async Task<long> WriteNdjsonAsync<TRow, TOut>(
        PipeWriter pipe, System.Data.Common.DbDataReader reader, Func<System.Data.Common.DbDataReader, TRow> parse, Func<TRow, TOut> map,
        JsonTypeInfo<TOut> json, Pace pace, CancellationToken cancellationToken)
    {
        var rows = 0L;
        var pending = 0L;
        await using var writer = new Utf8JsonWriter(pipe, new JsonWriterOptions { Encoder = json.Options.Encoder });
        await pipe.FlushAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            JsonSerializer.Serialize(writer, map(parse(reader)), json);
            writer.Flush();
            pending += writer.BytesCommitted + 1;
            pipe.Write("\n"u8);
            writer.Reset();
            rows++;
            if (pending >= FlushEvery)
            {
                await pipe.FlushAsync(cancellationToken);
                pending = 0;
            }

            await pace.KeepAsync(rows, cancellationToken);
        }

        await pipe.FlushAsync(cancellationToken);
        return rows;
    }

    /// <summary>
    /// An export's rate (<see cref="ExportOptions.MaxRowsPerSecond"/>): every 1024 rows it compares the rows sent with
    /// the time since the first, and waits while it is ahead by more than a couple of milliseconds (a wait any
    /// shorter would be the timer's resolution). The rows wait in the database's socket meanwhile, as when a client
    /// reads slowly.
    /// </summary>
    private sealed class Pace(int rowsPerSecond)
    {
        private const int Every = 1024;
        private static readonly TimeSpan Shortest = TimeSpan.FromMilliseconds(2);
        private readonly long _start = Stopwatch.GetTimestamp();

        public Task KeepAsync(long rows, CancellationToken cancellationToken)
        {
            if (rows % Every != 0)
            {
                return Task.CompletedTask;
            }

            var ahead = TimeSpan.FromSeconds((double)rows / rowsPerSecond) - Stopwatch.GetElapsedTime(_start);
            return ahead >= Shortest ? Task.Delay(ahead, cancellationToken) : Task.CompletedTask;
        }
    }

    private bool TryEnter(long projectId)
    {
        lock (_running)
        {
            var ofProject = _running.GetValueOrDefault(projectId);
            if (_runningInAll >= options.Value.MaxPerInstance || ofProject >= options.Value.MaxPerProject)
            {
                return false;
            }

            _running[projectId] = ofProject + 1;
            _runningInAll++;
            return true;
        }
    }

    private void Leave(long projectId)
    {
        lock (_running)
        {
            _runningInAll--;
            if (--_running[projectId] == 0)
            {
                _running.Remove(projectId);
            }
        }
    }
}

public static class ExportExtensions
{
    /// <summary>
    /// <see cref="Exports"/> (<see cref="ExportOptions"/>), and gzip for their streams when the client accepts it
    /// (ASP.NET Core's response compression, at its fastest level, for the two export types only: JSON answers are
    /// small pages and stay as they were).
    /// </summary>
    public static IServiceCollection AddExports(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddSettings<ExportOptions>(configuration, ExportOptions.Section);
        services.AddSingleton<Exports>();
        services.AddResponseCompression(options =>
        {
            // Exports hold no secret next to text an attacker chooses (BREACH), so compressing them over TLS is safe.
            options.EnableForHttps = true;
            options.Providers.Add<Microsoft.AspNetCore.ResponseCompression.GzipCompressionProvider>();
            options.MimeTypes = [ExportNegotiation.CsvType, ExportNegotiation.NdjsonType];
        });
        services.Configure<Microsoft.AspNetCore.ResponseCompression.GzipCompressionProviderOptions>(
            options => options.Level = System.IO.Compression.CompressionLevel.Fastest);
        return services;
    }
}
