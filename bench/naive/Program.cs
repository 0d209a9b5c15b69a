// The ingest baselines of bench/ingest-baselines.sh, measured in the same run as the service on the same database:
//   POST /naive/{device_id}  one INSERT per request into naive_events, a table of firmware_events' columns: what
//                            ASP.NET Core and Npgsql do with no key, no validation beyond parsing, nothing derived;
//   POST /limit/{device_id}  the same rows through a group commit: requests queue on a channel that a few writers
//                            drain, one multi-row INSERT per batch; the headroom a write path could reach here.
// and the history baseline of bench/history-baselines.sh:
//   GET /naive/{project_id}/{device_id}  the device's newest 100 events as a JSON array, one SELECT by the history
//                            index (what the service's GET /firmware/{id} reads), no key, no cursor, no routing.
// Settings: ConnectionString (required), Writers (4), MaxBatch (1000).
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Threading.Channels;
using Npgsql;
using NpgsqlTypes;

var builder = WebApplication.CreateSlimBuilder(args);
builder.Logging.ClearProviders();
var connectionString = builder.Configuration["ConnectionString"]
    ?? throw new InvalidOperationException("Set ConnectionString (the database of the benchmark).");
await using var dataSource = NpgsqlDataSource.Create(connectionString);
var writers = builder.Configuration.GetValue("Writers", 4);
var maxBatch = builder.Configuration.GetValue("MaxBatch", 1000);
var app = builder.Build();

await using (var create = dataSource.CreateCommand(Sql.CreateTable))
{
    await create.ExecuteNonQueryAsync();
}

app.MapPost("/naive/{deviceId:long}", async (long deviceId, HttpRequest request) =>
{
    var report = await Report.ReadAsync(request);
    if (report is null)
    {
        return Results.BadRequest();
    }

    await using var insert = dataSource.CreateCommand(Sql.InsertOne);
    insert.Parameters.Add(new NpgsqlParameter<long> { TypedValue = deviceId });
    insert.Parameters.Add(new NpgsqlParameter<string> { TypedValue = report.Firmware });
    insert.Parameters.Add(new NpgsqlParameter<string> { TypedValue = report.Status });
    insert.Parameters.Add(new NpgsqlParameter<DateTime> { TypedValue = report.Timestamp, NpgsqlDbType = NpgsqlDbType.TimestampTz });
    var id = (long)(await insert.ExecuteScalarAsync())!;
    return Results.Created($"/naive/{deviceId}/{id}", new { id });
});

app.MapGet("/naive/{projectId:long}/{deviceId:long}", async (long projectId, long deviceId, HttpResponse response) =>
{
    await using var select = dataSource.CreateCommand(Sql.History);
    select.Parameters.Add(new NpgsqlParameter<long> { TypedValue = deviceId });
    select.Parameters.Add(new NpgsqlParameter<long> { TypedValue = projectId });
    await using var reader = await select.ExecuteReaderAsync();
    var events = new List<Event>();
    while (await reader.ReadAsync())
    {
        events.Add(new Event(
            reader.GetInt64(0), reader.GetInt64(1), reader.GetInt64(2), reader.GetString(3), reader.GetString(4),
            reader.GetFieldValue<DateTime>(5).ToString("yyyy-MM-dd'T'HH:mm:ss.ffffff'Z'", CultureInfo.InvariantCulture),
            reader.GetFieldValue<DateTime>(6).ToString("yyyy-MM-dd'T'HH:mm:ss.ffffff'Z'", CultureInfo.InvariantCulture),
            reader.IsDBNull(7) ? null : reader.GetString(7), reader.IsDBNull(8) ? null : reader.GetString(8), reader.IsDBNull(9) ? null : reader.GetString(9)));
    }

    return Results.Json(events, Event.Options);
});

var queue = Channel.CreateUnbounded<Pending>();
var drains = Enumerable.Range(0, writers).Select(_ => Task.Run(() => DrainAsync(queue.Reader, dataSource, maxBatch))).ToArray();
app.MapPost("/limit/{deviceId:long}", async (long deviceId, HttpRequest request) =>
{
    var report = await Report.ReadAsync(request);
    if (report is null)
    {
        return Results.BadRequest();
    }

    var pending = new Pending(deviceId, report);
    await queue.Writer.WriteAsync(pending);
    var id = await pending.Stored.Task;
    return Results.Created($"/limit/{deviceId}/{id}", new { id });
});

await app.RunAsync();
queue.Writer.Complete();
await Task.WhenAll(drains);

static async Task DrainAsync(ChannelReader<Pending> reader, NpgsqlDataSource dataSource, int maxBatch)
{
    var batch = new List<Pending>();
    while (await reader.WaitToReadAsync())
    {
        while (batch.Count < maxBatch && reader.TryRead(out var pending))
        {
            batch.Add(pending);
        }

        try
        {
            await using var insert = dataSource.CreateCommand(Sql.InsertMany);
            insert.Parameters.Add(new NpgsqlParameter<long[]> { TypedValue = batch.ConvertAll(p => p.DeviceId).ToArray() });
            insert.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = batch.ConvertAll(p => p.Report.Firmware).ToArray() });
            insert.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = batch.ConvertAll(p => p.Report.Status).ToArray() });
            insert.Parameters.Add(new NpgsqlParameter<DateTime[]>
            {
                TypedValue = batch.ConvertAll(p => p.Report.Timestamp).ToArray(),
                NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.TimestampTz,
            });
            await using var ids = await insert.ExecuteReaderAsync();
            var i = 0;
            while (await ids.ReadAsync())
            {
                batch[i++].Stored.TrySetResult(ids.GetInt64(0));
            }
        }
        catch (Exception e)
        {
            batch.ForEach(p => p.Stored.TrySetException(e));
        }

        batch.Clear();
    }
}

internal sealed record Report(string Firmware, string Status, DateTime Timestamp)
{
    private static readonly JsonSerializerOptions Options = new() { PropertyNameCaseInsensitive = true };

    public static async Task<Report?> ReadAsync(HttpRequest request)
    {
        try
        {
            var report = await JsonSerializer.DeserializeAsync<Report>(request.Body, Options);
            return report is { Firmware: not null, Status: not null } ? report with { Timestamp = report.Timestamp.ToUniversalTime() } : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }
}

internal sealed record Event(
    long Id, long DeviceId, long ProjectId, string Firmware, string Status, string Timestamp, string ReceivedAt,
    string? FromFirmware, string? ErrorCode, string? Detail)
{
    public static readonly JsonSerializerOptions Options = new(JsonSerializerDefaults.Web)
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };
}

internal sealed record Pending(long DeviceId, Report Report)
{
    public TaskCompletionSource<long> Stored { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
}

internal static class Sql
{
    // firmware_events' columns, unpartitioned, its primary key and nothing else.
    public const string CreateTable = """
        CREATE TABLE IF NOT EXISTS naive_events (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            device_id bigint NOT NULL,
            project_id bigint NOT NULL DEFAULT 1,
            firmware text NOT NULL,
            status text NOT NULL,
            occurred_at timestamptz NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now(),
            arrival bigint NOT NULL DEFAULT 0,
            from_firmware text,
            error_code text,
            detail text
        )
        """;

    public const string InsertOne = """
        INSERT INTO naive_events (device_id, firmware, status, occurred_at)
        VALUES ($1, $2, $3, $4)
        RETURNING id
        """;

    // A device's newest events in its project, by the history index of firmware_events, as anyone would write it.
    public const string History = """
        SELECT id, device_id, project_id, firmware, status, occurred_at, received_at, from_firmware, error_code, detail
        FROM firmware_events
        WHERE device_id = $1
          AND project_id = $2
        ORDER BY occurred_at DESC, firmware DESC, status DESC
        LIMIT 101
        """;

    // unnest keeps the arrays' order, and RETURNING follows the rows inserted.
    public const string InsertMany = """
        INSERT INTO naive_events (device_id, firmware, status, occurred_at)
        SELECT *
        FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[])
        RETURNING id
        """;
}
