using System.Buffers.Text;
using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Dapper;
using FirmwareManager.Api.Database;
using Microsoft.AspNetCore.DataProtection;
using Microsoft.AspNetCore.Http.Extensions;
using Microsoft.AspNetCore.Http.HttpResults;
using Npgsql;

namespace FirmwareManager.Api.Http;

/// <summary>The paging parameters every list endpoint shares, validated: how many rows, and from where.</summary>
public sealed record PageRequest(int Limit, string? Cursor)
{
    public const int DefaultLimit = 100;
    public const int MaxLimit = 1000;

    /// <summary>Parses <c>limit</c> and <c>cursor</c>; null (with the reasons in <paramref name="errors"/>) when either is bad.</summary>
    public static PageRequest? Parse(string? limit, string? cursor, Dictionary<string, string[]> errors)
    {
        var valid = true;
        var pageSize = DefaultLimit;
        if (limit is not null &&
            (!int.TryParse(limit, NumberStyles.None, CultureInfo.InvariantCulture, out pageSize) || pageSize < 1 || pageSize > MaxLimit))
        {
            errors["limit"] = [$"Must be a whole number from 1 to {MaxLimit}."];
            valid = false;
        }

        if (cursor is { Length: 0 or > 512 })
        {
            errors["cursor"] = ["Must be a cursor from a Link header of this API."];
            valid = false;
        }

        return valid ? new PageRequest(pageSize, cursor) : null;
    }
}

/// <summary>
/// Where a keyset page ends: the sort key of its last row, which the cursor carries to the next request. Each list
/// defines its position beside the repository whose <c>ORDER BY</c> it follows, and with it the position's bytes;
/// <see cref="Cursors"/> wraps them (format, read position, MAC) the same way for every list.
/// </summary>
public interface IPagePosition<TSelf>
    where TSelf : class, IPagePosition<TSelf>
{
    /// <summary>The position's fields, in the order <see cref="ReadFrom"/> reads them.</summary>
    void WriteTo(BinaryWriter writer);

    /// <summary>The position <see cref="WriteTo"/> wrote, or null when the bytes are not one.</summary>
    static abstract TSelf? ReadFrom(BinaryReader reader);
}

/// <summary>Where a page of rows in id order ends (devices; newest first: audit entries, rollouts, deliveries): the last row's id.</summary>
public sealed record IdPosition(long Id) : IPagePosition<IdPosition>
{
    public void WriteTo(BinaryWriter writer) => writer.Write(Id);

    public static IdPosition ReadFrom(BinaryReader reader) => new(reader.ReadInt64());
}

/// <summary>A page of rows as a repository found it, and the position the next page starts after (null: none follows).</summary>
public sealed record KeysetRows<TRow, TPosition>(IReadOnlyList<TRow> Rows, TPosition? Next)
    where TPosition : class;

public static class KeysetRows
{
    /// <summary>
    /// From rows fetched with one more than the page holds (<paramref name="limit"/> + 1): the extra row says that
    /// another page follows, after the last row served.
    /// </summary>
    public static KeysetRows<TRow, TPosition> FromOneMore<TRow, TPosition>(IReadOnlyList<TRow> fetched, int limit, Func<TRow, TPosition> positionOf)
        where TPosition : class =>
        fetched.Count > limit
            ? new(fetched.Take(limit).ToList(), positionOf(fetched[limit - 1]))
            : new(fetched, null);
}

/// <summary>
/// Opaque paging cursors: the position of the last row served, protected by ASP.NET Core Data Protection (keys shared
/// by every instance in <c>data_protection_keys</c>) under a purpose that names the query that served it (endpoint,
/// project, filters). A cursor that was altered, made up, or used with another query is rejected; one made before
/// the keys rotated is still read.
/// A cursor also carries the WAL position its page was read at (<see cref="ReadContext.Seen"/>), so that the next
/// page is read on a node that has replayed at least that far (<see cref="ReadRouting"/>): pages served by nodes
/// at different replay points never skip what an earlier page's node had.
/// Cursors handed out before Data Protection (an HMAC under the <c>cursor</c> key of <c>service_secrets</c>, with or
/// without the WAL position) are still read: a pipeline polling <c>/events?after=</c> keeps its place across the upgrade.
/// </summary>
public sealed class Cursors(NpgsqlDataSource dataSource, IDataProtectionProvider protection)
{
    private const string LoadLegacyKeySql = """
        SELECT secret
        FROM service_secrets
        WHERE name = 'cursor'
        """;

    private const int LegacyMacLength = 16;
    private const byte LegacyWithoutReadPosition = 1;
    private const byte LegacyWithReadPosition = 2;

    // Data Protection's payloads begin with its magic header, 0x09F0C9F0; the legacy ones with their format byte.
    private const byte ProtectedFirstByte = 0x09;

    private readonly IDataProtector _protector = protection.CreateProtector("FirmwareManager.Paging.Cursors");
    private byte[]? _legacyKey;

    /// <summary>A cursor for the rows after <paramref name="position"/> in the query <paramref name="scope"/> names.</summary>
    public string Encode<TPosition>(string scope, ReadContext read, TPosition position)
        where TPosition : class, IPagePosition<TPosition>
    {
        using var payload = new MemoryStream();
        using (var writer = new BinaryWriter(payload, Encoding.UTF8, leaveOpen: true))
        {
            writer.Write(read.Seen);
            position.WriteTo(writer);
        }

        return Base64Url.EncodeToString(_protector.CreateProtector(scope).Protect(payload.ToArray()));
    }

    /// <summary>
    /// The position in <paramref name="cursor"/>, or default when it is not a cursor of this query; raises
    /// <paramref name="read"/>'s floor to the WAL position the cursor's page was read at.
    /// </summary>
    public async Task<TPosition?> DecodeAsync<TPosition>(string scope, string cursor, ReadContext read, CancellationToken cancellationToken)
        where TPosition : class, IPagePosition<TPosition>
    {
        byte[] bytes;
        try
        {
            bytes = Base64Url.DecodeFromChars(cursor);
        }
        catch (FormatException)
        {
            return null;
        }

        if (bytes.Length == 0)
        {
            return null;
        }

        if (bytes[0] == ProtectedFirstByte)
        {
            try
            {
                return Read<TPosition>(_protector.CreateProtector(scope).Unprotect(bytes), withReadPosition: true, read);
            }
            catch (CryptographicException)
            {
                return null;
            }
        }

        return await LegacyDecodeAsync<TPosition>(scope, bytes, read, cancellationToken);
    }

    private static TPosition? Read<TPosition>(byte[] body, bool withReadPosition, ReadContext read)
        where TPosition : class, IPagePosition<TPosition>
    {
        using var reader = new BinaryReader(new MemoryStream(body), Encoding.UTF8);
        try
        {
            var seen = withReadPosition ? reader.ReadUInt64() : 0;
            var position = TPosition.ReadFrom(reader);
            read.AtLeast(seen);
            return position;
        }
        catch (Exception e) when (e is EndOfStreamException or IOException or FormatException)
        {
            return null;
        }
    }

    // A cursor of the form before Data Protection: a format byte, the body, and 16 bytes of HMAC-SHA256 over the
    // scope and the body.
    private async Task<TPosition?> LegacyDecodeAsync<TPosition>(string scope, byte[] bytes, ReadContext read, CancellationToken cancellationToken)
        where TPosition : class, IPagePosition<TPosition>
    {
        if (bytes.Length <= LegacyMacLength + 1 || bytes[0] is not (LegacyWithoutReadPosition or LegacyWithReadPosition))
        {
            return null;
        }

        var body = bytes[..^LegacyMacLength];
        var expected = await LegacyMacAsync(scope, body, cancellationToken);
        return CryptographicOperations.FixedTimeEquals(expected, bytes.AsSpan(bytes.Length - LegacyMacLength))
            ? Read<TPosition>(body[1..], withReadPosition: body[0] == LegacyWithReadPosition, read)
            : null;
    }

    /// <summary>The MAC a cursor of the form before Data Protection carries (also for tests that make one).</summary>
    internal async Task<byte[]> LegacyMacAsync(string scope, byte[] body, CancellationToken cancellationToken)
    {
        if (_legacyKey is null)
        {
            await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
            _legacyKey = await connection.QuerySingleAsync<byte[]>(new CommandDefinition(LoadLegacyKeySql, cancellationToken: cancellationToken));
        }

        byte[] signed = [.. Encoding.UTF8.GetBytes(scope), 0, .. body];
        return HMACSHA256.HashData(_legacyKey, signed)[..LegacyMacLength];
    }
}

public static class PageResults
{
    /// <summary>200 with the page as a plain JSON array, and <c>Link: &lt;next&gt;; rel="next"</c> when there is a next page.</summary>
    public static Ok<List<T>> Page<T>(HttpContext http, List<T> items, string? nextCursor, string cursorParameter = "cursor")
    {
        if (nextCursor is not null)
        {
            SetNextLink(http, cursorParameter, nextCursor);
        }

        return TypedResults.Ok(items);
    }

    /// <summary>
    /// <c>Link: &lt;next&gt;; rel="next"</c>: this request's URL with <paramref name="parameter"/> set to
    /// <paramref name="token"/>, and without the parameters <paramref name="dropped"/> names.
    /// </summary>
    public static void SetNextLink(HttpContext http, string parameter, string token, params string[] dropped)
    {
        var query = new QueryBuilder(http.Request.Query
            .Where(p => p.Key != parameter && !dropped.Contains(p.Key))
            .SelectMany(p => p.Value.Select(v => new KeyValuePair<string, string>(p.Key, v ?? ""))))
        {
            { parameter, token },
        };
        http.Response.Headers.Link = $"<{http.Request.PathBase}{http.Request.Path}{query}>; rel=\"next\"";
    }

    public static ProblemHttpResult InvalidCursor(string parameter = "cursor") => Problems.Validation(
        new Dictionary<string, string[]> { [parameter] = ["Not a cursor of this query: use the Link header of the previous page, unchanged and with the same filters."] },
        "Invalid cursor.");
}

/// <summary>
/// The keyset page every list serves: the cursor decoded into the position the page starts after, the rows after it,
/// the next page's cursor when more follow, and the <c>Link</c> to it.
/// </summary>
public static class KeysetPage
{
    /// <summary>
    /// A page from a repository that fetches the rows after a position (null: from the first), asked for one more
    /// than the page holds.
    /// </summary>
    public static Task<Results<Ok<List<TOut>>, ProblemHttpResult>> ServeAsync<TRow, TPosition, TOut>(
        HttpContext http, Cursors cursors, string scope, PageRequest page, ReadContext read,
        Func<TPosition?, int, Task<IReadOnlyList<TRow>>> fetchOneMore, Func<TRow, TPosition> positionOf, Func<TRow, TOut> map,
        CancellationToken cancellationToken)
        where TPosition : class, IPagePosition<TPosition> =>
        ServeOrNotFoundAsync<TRow, TPosition, TOut>(http, cursors, scope, page, read,
            async (after, limit) => KeysetRows.FromOneMore(await fetchOneMore(after, limit + 1), limit, positionOf), map, Unreachable, cancellationToken);

    /// <summary>As above, for a list of something that may not exist: the repository answers null then, and the page <paramref name="notFound"/>.</summary>
    public static Task<Results<Ok<List<TOut>>, ProblemHttpResult>> ServeAsync<TRow, TPosition, TOut>(
        HttpContext http, Cursors cursors, string scope, PageRequest page, ReadContext read,
        Func<TPosition?, int, Task<IReadOnlyList<TRow>?>> fetchOneMore, Func<TRow, TPosition> positionOf, Func<TRow, TOut> map,
        Func<ProblemHttpResult> notFound, CancellationToken cancellationToken)
        where TPosition : class, IPagePosition<TPosition> =>
        ServeOrNotFoundAsync<TRow, TPosition, TOut>(http, cursors, scope, page, read,
            async (after, limit) => await fetchOneMore(after, limit + 1) is { } rows ? KeysetRows.FromOneMore(rows, limit, positionOf) : null,
            map, notFound, cancellationToken);

    /// <summary>A page from a repository that finds its rows and the next position itself (given the page's size).</summary>
    public static Task<Results<Ok<List<TOut>>, ProblemHttpResult>> ServeAsync<TRow, TPosition, TOut>(
        HttpContext http, Cursors cursors, string scope, PageRequest page, ReadContext read,
        Func<TPosition?, int, Task<KeysetRows<TRow, TPosition>>> fetch, Func<TRow, TOut> map, CancellationToken cancellationToken)
        where TPosition : class, IPagePosition<TPosition> =>
        ServeOrNotFoundAsync<TRow, TPosition, TOut>(http, cursors, scope, page, read, async (after, limit) => await fetch(after, limit), map, Unreachable, cancellationToken);

    private static ProblemHttpResult Unreachable() => throw new UnreachableException("The repository answers a page for every position.");

    private static async Task<Results<Ok<List<TOut>>, ProblemHttpResult>> ServeOrNotFoundAsync<TRow, TPosition, TOut>(
        HttpContext http, Cursors cursors, string scope, PageRequest page, ReadContext read,
        Func<TPosition?, int, Task<KeysetRows<TRow, TPosition>?>> fetch, Func<TRow, TOut> map, Func<ProblemHttpResult> notFound,
        CancellationToken cancellationToken)
        where TPosition : class, IPagePosition<TPosition>
    {
        TPosition? after = null;
        if (page.Cursor is not null)
        {
            after = await cursors.DecodeAsync<TPosition>(scope, page.Cursor, read, cancellationToken);
            if (after is null)
            {
                return PageResults.InvalidCursor();
            }
        }

        var found = await fetch(after, page.Limit);
        if (found is null)
        {
            return notFound();
        }

        var next = found.Next is null ? null : cursors.Encode(scope, read, found.Next);
        return PageResults.Page(http, found.Rows.Select(map).ToList(), next);
    }

    /// <summary>The page as the answer of a list that also exports (<see cref="ExportResult"/>).</summary>
    public static Results<Ok<List<TOut>>, ProblemHttpResult, ExportResult> OrExport<TOut>(this Results<Ok<List<TOut>>, ProblemHttpResult> page) =>
        page.Result switch
        {
            Ok<List<TOut>> ok => ok,
            var problem => (ProblemHttpResult)problem,
        };
}
