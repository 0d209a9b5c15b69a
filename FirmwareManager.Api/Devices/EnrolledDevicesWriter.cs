using System.Buffers;
using System.IO.Pipelines;
using System.Text.Json;
using CsvHelper;
using FirmwareManager.Api.Auth;

namespace FirmwareManager.Api.Devices;

/// <summary>
/// A bulk enrollment's answer, one line per device, written as the response goes: NDJSON through
/// <see cref="Utf8JsonWriter"/> straight into the response's pipe (no string per line: a key is copied from
/// <see cref="IssuedDeviceKeys"/> as bytes), or CSV through CsvHelper (RFC 4180 quoting, UTF-8 written as such,
/// the key again as bytes). Flushed every 32 KB (CSV: as CsvHelper's 64 KiB buffer fills);
/// the client going away does not undo the committed enrollment.
/// </summary>
internal static class EnrolledDevicesWriter
{
    private const int FlushEvery = 32 * 1024;

    private static readonly CsvWriterOptions Csv = new() { NewLine = "\n" };

    /// <summary><c>{"id":1,"serial":"s","key":"fmd_…"}</c> per line.</summary>
    public static async Task WriteNdjsonAsync(PipeWriter pipe, EnrolledDevices enrolled)
    {
        await using var json = new Utf8JsonWriter(pipe);
        var pending = 0L;
        for (var i = 0; i < enrolled.Count; i++)
        {
            pending += WriteLine(json, pipe, enrolled, i);
            if (pending >= FlushEvery || i == enrolled.Count - 1)
            {
                await pipe.FlushAsync(CancellationToken.None);
                pending = 0;
            }
        }
    }

    // One object, then the newline straight into the pipe; Reset lets the next object start a new document.
    private static long WriteLine(Utf8JsonWriter json, PipeWriter pipe, EnrolledDevices enrolled, int index)
    {
        Span<byte> key = stackalloc byte[IssuedDeviceKeys.KeyLength];
        enrolled.Keys.CopyKeyTo(index, key);
        json.WriteStartObject();
        json.WriteNumber("id"u8, enrolled.Ids[index]);
        if (enrolled.Serials[index] is { } serial)
        {
            json.WriteString("serial"u8, serial);
        }
        else
        {
            json.WriteNull("serial"u8);
        }

        json.WriteString("key"u8, key);
        json.WriteEndObject();
        json.Flush();
        var written = json.BytesCommitted + 1;
        pipe.Write("\n"u8);
        json.Reset();
        return written;
    }

    /// <summary><c>id,serial,key</c>, then a row per device.</summary>
    public static async Task WriteCsvAsync(PipeWriter pipe, EnrolledDevices enrolled)
    {
        await using var csv = CsvWriter.Create(pipe.AsStream(leaveOpen: true), Csv, leaveOpen: false);
        csv.WriteField("id");
        csv.WriteField("serial");
        csv.WriteField("key");
        await csv.EndRecordAsync();
        for (var i = 0; i < enrolled.Count; i++)
        {
            WriteRow(csv, enrolled, i);
            await csv.EndRecordAsync();
        }

        await csv.FlushAsync();
    }

    private static void WriteRow(CsvWriter csv, EnrolledDevices enrolled, int index)
    {
        Span<byte> key = stackalloc byte[IssuedDeviceKeys.KeyLength];
        enrolled.Keys.CopyKeyTo(index, key);
        csv.WriteField(enrolled.Ids[index], ReadOnlySpan<char>.Empty);
        csv.WriteField(enrolled.Serials[index] ?? "");
        csv.WriteField((ReadOnlySpan<byte>)key);
    }
}
