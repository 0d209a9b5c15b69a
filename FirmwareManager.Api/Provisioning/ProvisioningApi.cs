using System.Buffers;
using System.Buffers.Text;
using System.Globalization;
using System.IO.Pipelines;
using System.Text;
using System.Text.Json;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Devices;
using FirmwareManager.Api.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;

namespace FirmwareManager.Api.Provisioning;

/// <summary>What <c>POST /devices</c> and <c>POST /members</c> answer: the new thing and its first key, shown this once.</summary>
public sealed record CreatedDeviceResponse(DeviceResponse Device, NewKeyResponse Key);

public sealed record CreatedMemberResponse(MemberResponse Member, NewKeyResponse Key);

/// <summary>Documents the request bodies (they are read and validated by hand, for per-field messages).</summary>
/// <param name="Name">Optional, 1 to 200 characters.</param>
/// <param name="Serial">Optional, 1 to 200 characters, unique within the project.</param>
public sealed record CreateDeviceBody(string? Name, string? Serial);

/// <param name="Count">How many devices to enroll without serials (1 to 100,000); or</param>
/// <param name="Serials">the serials of the devices to enroll (1 to 100,000, unique).</param>
public sealed record EnrollDevicesBody(int? Count, string[]? Serials);

/// <param name="Email">The member's email address.</param>
/// <param name="Role">admin (manages devices, keys and members) or viewer (reads only).</param>
public sealed record InviteMemberBody(string Email, string Role);

/// <summary>
/// Provisioning: devices and their keys, members and their keys (admins), one's own keys (any member), and the
/// audit log (admins). Every change is audited in its own transaction.
/// </summary>
public static class ProvisioningApi
{
    public const int MaxEnrollment = 100_000;
    private const int MaxTextLength = 200;

    public static IEndpointRouteBuilder MapProvisioningApi(this IEndpointRouteBuilder app)
    {
        var devices = app.MapGroup("/devices").RequireAuthorization(Policies.Admin).WithTags("Provisioning")
            .WithKeyProblems().ProducesValidationProblem().ProducesProblem(StatusCodes.Status404NotFound);
        devices.MapPost("/", CreateDeviceAsync).Accepts<CreateDeviceBody>("application/json")
            .ProducesProblem(StatusCodes.Status409Conflict)
            .WithSummary("Create one device with its first key (admin)");
        devices.MapPost("/bulk", EnrollAsync).Accepts<EnrollDevicesBody>("application/json")
            .Produces<string>(StatusCodes.Status200OK, "application/x-ndjson", "text/csv")
            .ProducesProblem(StatusCodes.Status409Conflict)
            .WithSummary("Enroll up to 100,000 devices at once, all or nothing (admin)")
            .WithDescription("Streams one line per device with its id, serial and key: NDJSON, or CSV with Accept: text/csv.")
            .WithRequestTimeout(Limits.LongRunningPolicy);
        devices.MapDelete("/{device_id}", DecommissionAsync)
            .WithSummary("Decommission a device: its keys stop working, its history stays readable (admin)");
        devices.MapPost("/{device_id}/keys", (string device_id, HttpContext http, Keys keys, CancellationToken ct) =>
                IssueKeyAsync(device_id, "device_id", id => KeyOwner.Device(id), http, keys, ct))
            .WithSummary("A new key for the device; its other keys keep working until revoked (admin)");
        devices.MapGet("/{device_id}/keys", (string device_id, HttpContext http, Keys keys, CancellationToken ct) =>
                ListKeysAsync(device_id, "device_id", id => KeyOwner.Device(id), http, keys, ct))
            .WithSummary("The device's keys: id, prefix, created, last used, revoked; never the key (admin)");
        devices.MapDelete("/{device_id}/keys/{key_id}", (string device_id, string key_id, HttpContext http, Keys keys, CancellationToken ct) =>
                RevokeKeyAsync(device_id, "device_id", id => KeyOwner.Device(id), key_id, http, keys, ct))
            .WithSummary("Revoke one of the device's keys (admin)");

        var members = app.MapGroup("/members").RequireAuthorization(Policies.Admin).WithTags("Provisioning")
            .WithKeyProblems().ProducesValidationProblem().ProducesProblem(StatusCodes.Status404NotFound);
        members.MapGet("/", ListMembersAsync).WithSummary("The project's members, removed ones included (admin)");
        members.MapPost("/", InviteAsync).Accepts<InviteMemberBody>("application/json")
            .ProducesProblem(StatusCodes.Status409Conflict)
            .WithSummary("Add a member by email with a role; answers their first key (admin)");
        members.MapDelete("/{member_id}", RemoveMemberAsync)
            .ProducesProblem(StatusCodes.Status409Conflict)
            .WithSummary("Remove a member and revoke every key of theirs (admin)");
        members.MapPost("/{member_id}/keys", (string member_id, HttpContext http, Keys keys, CancellationToken ct) =>
                IssueKeyAsync(member_id, "member_id", id => KeyOwner.Member(id), http, keys, ct))
            .WithSummary("A new key for a member (admin)");
        members.MapGet("/{member_id}/keys", (string member_id, HttpContext http, Keys keys, CancellationToken ct) =>
                ListKeysAsync(member_id, "member_id", id => KeyOwner.Member(id), http, keys, ct))
            .WithSummary("A member's keys (admin)");
        members.MapDelete("/{member_id}/keys/{key_id}", (string member_id, string key_id, HttpContext http, Keys keys, CancellationToken ct) =>
                RevokeKeyAsync(member_id, "member_id", id => KeyOwner.Member(id), key_id, http, keys, ct))
            .ProducesProblem(StatusCodes.Status409Conflict)
            .WithSummary("Revoke one of a member's keys (admin); 409 for the last active key of the project's admins");

        var me = app.MapGroup("/me").RequireAuthorization(Policies.Member).WithTags("Provisioning")
            .WithKeyProblems().ProducesProblem(StatusCodes.Status404NotFound);
        me.MapGet("/", MeAsync).WithSummary("The calling member");
        me.MapPost("/keys", (HttpContext http, Keys keys, CancellationToken ct) =>
                IssueKeyAsync(Caller.From(http.User).Id.ToString(CultureInfo.InvariantCulture), "member_id", id => KeyOwner.Member(id), http, keys, ct))
            .WithSummary("A new key for oneself; the key in use keeps working until revoked");
        me.MapGet("/keys", (HttpContext http, Keys keys, CancellationToken ct) =>
                ListKeysAsync(Caller.From(http.User).Id.ToString(CultureInfo.InvariantCulture), "member_id", id => KeyOwner.Member(id), http, keys, ct))
            .WithSummary("One's own keys");
        me.MapDelete("/keys/{key_id}", (string key_id, HttpContext http, Keys keys, CancellationToken ct) =>
                RevokeKeyAsync(Caller.From(http.User).Id.ToString(CultureInfo.InvariantCulture), "member_id", id => KeyOwner.Member(id), key_id, http, keys, ct))
            .ProducesProblem(StatusCodes.Status409Conflict)
            .WithSummary("Revoke one of one's own keys; 409 for the last active key of the project's admins");

        app.MapGroup("/audit").RequireAuthorization(Policies.Admin).WithTags("Provisioning").WithKeyProblems().ProducesValidationProblem()
            .MapGet("/", AuditPageAsync)
            .WithSummary("Key, member and device changes: who, what, when, with which key prefix; newest first, paged (admin)");
        return app;
    }

    private static async Task<Results<Created<CreatedDeviceResponse>, ProblemHttpResult>> CreateDeviceAsync(
        HttpContext http, DeviceProvisioning provisioning, Devices.Devices devices, CancellationToken cancellationToken)
    {
        var (body, problem) = await JsonBody.ReadAsync(http, RequestLimits.MaxBodyBytes, cancellationToken);
        if (body is null)
        {
            return problem!;
        }

        var errors = new Dictionary<string, string[]>();
        string? name, serial;
        using (body)
        {
            var root = body.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                return Problems.Validation(new Dictionary<string, string[]> { ["body"] = ["Must be a JSON object."] }, "Invalid device.");
            }

            name = OptionalText(root, "name", errors);
            serial = OptionalText(root, "serial", errors);
        }

        if (errors.Count > 0)
        {
            return Problems.Validation(errors, "Invalid device.");
        }

        var caller = Caller.From(http.User);
        try
        {
            var (deviceId, key) = await provisioning.CreateAsync(caller.ProjectId, name, serial, Actor.From(caller), cancellationToken);
            var device = await devices.FindAsync(caller.ProjectId, deviceId, cancellationToken);
            return TypedResults.Created(string.Create(CultureInfo.InvariantCulture, $"/devices/{deviceId}"),
                new CreatedDeviceResponse(DeviceResponse.From(device!), key));
        }
        catch (SerialTakenException e)
        {
            return Conflict(e.Message);
        }
    }

    private static async Task<Results<EmptyHttpResult, ProblemHttpResult>> EnrollAsync(
        HttpContext http, DeviceProvisioning provisioning, CancellationToken cancellationToken)
    {
        var (body, problem) = await JsonBody.ReadAsync(http, 16 * 1024 * 1024, cancellationToken);
        if (body is null)
        {
            return problem!;
        }

        var errors = new Dictionary<string, string[]>();
        var serials = new List<string?>();
        using (body)
        {
            var root = body.RootElement;
            var hasCount = root.ValueKind == JsonValueKind.Object && root.TryGetProperty("count", out var count) && count.ValueKind != JsonValueKind.Null;
            var hasSerials = root.ValueKind == JsonValueKind.Object && root.TryGetProperty("serials", out var list) && list.ValueKind != JsonValueKind.Null;
            if (hasCount == hasSerials)
            {
                errors["body"] = ["Send either {\"count\": n} or {\"serials\": [...]}."];
            }
            else if (hasCount)
            {
                if (!root.GetProperty("count").TryGetInt32(out var n) || n < 1 || n > MaxEnrollment)
                {
                    errors["count"] = [$"Must be a whole number from 1 to {MaxEnrollment}."];
                }
                else
                {
                    serials.AddRange(Enumerable.Repeat<string?>(null, n));
                }
            }
            else
            {
                ReadSerials(root.GetProperty("serials"), serials, errors);
            }
        }

        if (errors.Count > 0)
        {
            return Problems.Validation(errors, "Invalid enrollment.");
        }

        var caller = Caller.From(http.User);
        EnrolledDevices enrolled;
        try
        {
            enrolled = await provisioning.EnrollAsync(caller.ProjectId, serials, Actor.From(caller), cancellationToken);
        }
        catch (SerialTakenException e)
        {
            return Conflict(e.Message);
        }

        // Committed: now stream the keys, one line per device, flushing as it goes.
        var csv = http.Request.GetTypedHeaders().Accept.Any(a => a.MediaType.Equals("text/csv", StringComparison.OrdinalIgnoreCase));
        http.Response.StatusCode = StatusCodes.Status200OK;
        http.Response.ContentType = csv ? "text/csv; charset=utf-8" : "application/x-ndjson";
        await WriteEnrolledAsync(http.Response.BodyWriter, enrolled, csv);
        return TypedResults.Empty;
    }

    /// <summary>
    /// One line per device, <c>{"id":1,"serial":"s","key":"fmd_…"}</c> or <c>1,s,fmd_…</c> under a CSV header,
    /// written as UTF-8 straight into the response's pipe: a 100,000-device answer (about 7 MB) makes no string
    /// per line. Flushes every 32 KB; the client going away does not undo the committed enrollment.
    /// </summary>
    private static async Task WriteEnrolledAsync(PipeWriter writer, EnrolledDevices enrolled, bool csv)
    {
        const int flushEvery = 32 * 1024;
        var pending = 0;
        if (csv)
        {
            pending += Write(writer, "id,serial,key\n"u8);
        }

        for (var i = 0; i < enrolled.Count; i++)
        {
            pending += WriteLine(writer, enrolled, i, csv);
            if (pending >= flushEvery || i == enrolled.Count - 1)
            {
                await writer.FlushAsync(CancellationToken.None);
                pending = 0;
            }
        }
    }

    private static int WriteLine(PipeWriter writer, EnrolledDevices enrolled, int index, bool csv)
    {
        var serial = enrolled.Serials[index];
        ReadOnlySpan<byte> serialText = serial is null ? (csv ? ""u8 : "null"u8)
            : csv ? Encoding.UTF8.GetBytes(CsvField(serial))
            : JsonEncodedQuoted(serial);
        var line = writer.GetSpan(64 + serialText.Length + IssuedDeviceKeys.KeyLength);
        var length = Write(line, csv ? ""u8 : "{\"id\":"u8);
        Utf8Formatter.TryFormat(enrolled.Ids[index], line[length..], out var idLength);
        length += idLength;
        length += Write(line[length..], csv ? ","u8 : ",\"serial\":"u8);
        length += Write(line[length..], serialText);
        length += Write(line[length..], csv ? ","u8 : ",\"key\":\""u8);
        length += enrolled.Keys.CopyKeyTo(index, line[length..]);
        length += Write(line[length..], csv ? "\n"u8 : "\"}\n"u8);
        writer.Advance(length);
        return length;
    }

    private static int Write(Span<byte> destination, ReadOnlySpan<byte> bytes)
    {
        bytes.CopyTo(destination);
        return bytes.Length;
    }

    private static int Write(PipeWriter writer, ReadOnlySpan<byte> bytes)
    {
        writer.Write(bytes);
        return bytes.Length;
    }

    private static byte[] JsonEncodedQuoted(string text)
    {
        var encoded = JsonEncodedText.Encode(text).EncodedUtf8Bytes;
        var quoted = new byte[encoded.Length + 2];
        quoted[0] = quoted[^1] = (byte)'"';
        encoded.CopyTo(quoted.AsSpan(1));
        return quoted;
    }

    private static void ReadSerials(JsonElement list, List<string?> serials, Dictionary<string, string[]> errors)
    {
        if (list.ValueKind != JsonValueKind.Array || list.GetArrayLength() is 0 or > MaxEnrollment)
        {
            errors["serials"] = [$"Must be an array of 1 to {MaxEnrollment} serials."];
            return;
        }

        var seen = new HashSet<string>(StringComparer.Ordinal);
        var index = 0;
        foreach (var item in list.EnumerateArray())
        {
            if (item.ValueKind == JsonValueKind.String && !item.TryGetText(out _))
            {
                errors[$"serials[{index}]"] = [JsonBody.InvalidTextMessage];
                serials.Add(null);
                index++;
                continue;
            }

            item.TryGetText(out var serial);
            if (serial is null || !IsValidText(serial))
            {
                errors[$"serials[{index}]"] = [$"Must be a string of 1 to {MaxTextLength} printable characters."];
            }
            else if (!seen.Add(serial))
            {
                errors[$"serials[{index}]"] = [$"'{serial}' appears more than once."];
            }

            serials.Add(serial);
            index++;
        }
    }

    private static async Task<Results<NoContent, ProblemHttpResult>> DecommissionAsync(
        [FromRoute(Name = "device_id")] string deviceIdText, HttpContext http, DeviceProvisioning provisioning, CancellationToken cancellationToken)
    {
        if (!Problems.TryParseId(deviceIdText, out var deviceId))
        {
            return Problems.InvalidId("device_id", deviceIdText);
        }

        var caller = Caller.From(http.User);
        return await provisioning.DecommissionAsync(caller.ProjectId, deviceId, Actor.From(caller), cancellationToken)
            ? TypedResults.NoContent()
            : NotFound("device", deviceId);
    }

    private static async Task<Results<Created<NewKeyResponse>, ProblemHttpResult>> IssueKeyAsync(
        string ownerIdText, string parameter, Func<long, KeyOwner> owner, HttpContext http, Keys keys, CancellationToken cancellationToken)
    {
        if (!Problems.TryParseId(ownerIdText, out var ownerId))
        {
            return Problems.InvalidId(parameter, ownerIdText);
        }

        var caller = Caller.From(http.User);
        var key = await keys.IssueAsync(caller.ProjectId, owner(ownerId), Actor.From(caller), cancellationToken);
        return key is null
            ? Problems.NotFound("Not found", $"There is no active {owner(ownerId).OwnerKind} {ownerId} in your project.")
            : TypedResults.Created(KeysPath(http, key.Id), key);
    }

    private static async Task<Results<Ok<List<KeyResponse>>, ProblemHttpResult>> ListKeysAsync(
        string ownerIdText, string parameter, Func<long, KeyOwner> owner, HttpContext http, Keys keys, CancellationToken cancellationToken)
    {
        if (!Problems.TryParseId(ownerIdText, out var ownerId))
        {
            return Problems.InvalidId(parameter, ownerIdText);
        }

        var found = await keys.ListAsync(Caller.From(http.User).ProjectId, owner(ownerId), cancellationToken);
        return found is null ? NotFound(owner(ownerId).OwnerKind, ownerId) : TypedResults.Ok(found.Select(KeyResponse.From).ToList());
    }

    private static async Task<Results<NoContent, ProblemHttpResult>> RevokeKeyAsync(
        string ownerIdText, string parameter, Func<long, KeyOwner> owner, string keyIdText, HttpContext http, Keys keys,
        CancellationToken cancellationToken)
    {
        if (!Problems.TryParseId(ownerIdText, out var ownerId))
        {
            return Problems.InvalidId(parameter, ownerIdText);
        }

        if (!Problems.TryParseId(keyIdText, out var keyId))
        {
            return Problems.InvalidId("key_id", keyIdText);
        }

        var caller = Caller.From(http.User);
        try
        {
            return await keys.RevokeAsync(caller.ProjectId, owner(ownerId), keyId, Actor.From(caller), cancellationToken)
                ? TypedResults.NoContent()
                : Problems.NotFound("Key not found", $"The {owner(ownerId).OwnerKind} {ownerId} has no key {keyId} in your project.");
        }
        catch (LastAdminKeyException e)
        {
            return Conflict(e.Message);
        }
    }

    private static async Task<Ok<List<MemberResponse>>> ListMembersAsync(HttpContext http, Members members, CancellationToken cancellationToken) =>
        TypedResults.Ok((await members.ListAsync(Caller.From(http.User).ProjectId, cancellationToken)).Select(MemberResponse.From).ToList());

    private static async Task<Results<Created<CreatedMemberResponse>, ProblemHttpResult>> InviteAsync(
        HttpContext http, Members members, CancellationToken cancellationToken)
    {
        var (body, problem) = await JsonBody.ReadAsync(http, RequestLimits.MaxBodyBytes, cancellationToken);
        if (body is null)
        {
            return problem!;
        }

        var errors = new Dictionary<string, string[]>();
        string? email = null, role = null;
        using (body)
        {
            var root = body.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                errors["body"] = ["Must be a JSON object."];
            }
            else
            {
                email = root.TryGetProperty("email", out var e) && e.TryGetText(out var emailText) ? emailText.Trim().ToLowerInvariant() : null;
                role = root.TryGetProperty("role", out var r) && r.TryGetText(out var roleText) ? roleText : null;
                if (email is null || email.Length is < 3 or > 320 || email.IndexOf('@', StringComparison.Ordinal) is <= 0 ||
                    email.Any(c => char.IsWhiteSpace(c) || char.IsControl(c)) || email.EndsWith('@'))
                {
                    errors["email"] = ["Must be an email address."];
                }

                if (role is not (Members.Admin or Members.Viewer))
                {
                    errors["role"] = ["Must be admin or viewer."];
                }
            }
        }

        if (errors.Count > 0)
        {
            return Problems.Validation(errors, "Invalid member.");
        }

        var caller = Caller.From(http.User);
        var (member, key) = await members.InviteAsync(caller.ProjectId, email!, role!, Actor.From(caller), cancellationToken);
        return member is null
            ? Conflict($"{email} is already a member of this project.")
            : TypedResults.Created(string.Create(CultureInfo.InvariantCulture, $"/members/{member.Id}"),
                new CreatedMemberResponse(MemberResponse.From(member), key!));
    }

    private static async Task<Results<NoContent, ProblemHttpResult>> RemoveMemberAsync(
        [FromRoute(Name = "member_id")] string memberIdText, HttpContext http, Members members, CancellationToken cancellationToken)
    {
        if (!Problems.TryParseId(memberIdText, out var memberId))
        {
            return Problems.InvalidId("member_id", memberIdText);
        }

        var caller = Caller.From(http.User);
        try
        {
            return await members.RemoveAsync(caller.ProjectId, memberId, Actor.From(caller), cancellationToken)
                ? TypedResults.NoContent()
                : NotFound("member", memberId);
        }
        catch (LastAdminException e)
        {
            return Conflict(e.Message);
        }
    }

    private static async Task<Results<Ok<MemberResponse>, ProblemHttpResult>> MeAsync(HttpContext http, Members members, CancellationToken cancellationToken)
    {
        var caller = Caller.From(http.User);
        var member = await members.FindActiveAsync(caller.ProjectId, caller.Id, cancellationToken);
        return member is null ? NotFound("member", caller.Id) : TypedResults.Ok(MemberResponse.From(member));
    }

    private static async Task<Results<Ok<List<AuditEntryResponse>>, ProblemHttpResult>> AuditPageAsync(
        [FromQuery] string? limit, [FromQuery] string? cursor, HttpContext http, Audit audit, Cursors cursors, CancellationToken cancellationToken)
    {
        var errors = new Dictionary<string, string[]>();
        var page = PageRequest.Parse(limit, cursor, errors);
        if (page is null)
        {
            return Problems.Validation(errors, "Invalid query parameters.");
        }

        var caller = Caller.From(http.User);
        var scope = string.Create(CultureInfo.InvariantCulture, $"audit|{caller.ProjectId}");
        var beforeId = long.MaxValue;
        if (page.Cursor is not null)
        {
            var position = await cursors.DecodeAsync(scope, page.Cursor, reader => new IdPosition(reader.ReadInt64()), cancellationToken);
            if (position is null)
            {
                return PageResults.InvalidCursor();
            }

            beforeId = position.Id;
        }

        var entries = await audit.PageAsync(caller.ProjectId, beforeId, page.Limit + 1, cancellationToken);
        string? next = null;
        if (entries.Count > page.Limit)
        {
            var lastId = entries[page.Limit - 1].Id;
            next = await cursors.EncodeAsync(scope, writer => writer.Write(lastId), cancellationToken);
        }

        return PageResults.Page(http, entries.Take(page.Limit).Select(AuditEntryResponse.From).ToList(), next);
    }

    private static string? OptionalText(JsonElement root, string name, Dictionary<string, string[]> errors)
    {
        if (!root.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null)
        {
            return null;
        }

        if (value.TryGetText(out var text) && IsValidText(text))
        {
            return text;
        }

        errors[name] = [value.ValueKind == JsonValueKind.String && !value.TryGetText(out _)
            ? JsonBody.InvalidTextMessage
            : $"Must be a string of 1 to {MaxTextLength} printable characters, or left out."];
        return null;
    }

    private static bool IsValidText(string text) => text.Length is > 0 and <= MaxTextLength && !text.Any(char.IsControl);

    private static string CsvField(string? text) =>
        text is null ? "" : text.IndexOfAny([',', '"', '\n', '\r']) >= 0 ? $"\"{text.Replace("\"", "\"\"", StringComparison.Ordinal)}\"" : text;

    private static string KeysPath(HttpContext http, long keyId) =>
        string.Create(CultureInfo.InvariantCulture, $"{http.Request.Path.Value!.TrimEnd('/')}/{keyId}");


    private static ProblemHttpResult NotFound(string kind, long id) =>
        Problems.NotFound("Not found", string.Create(CultureInfo.InvariantCulture, $"There is no {kind} {id} in your project."));

    private static ProblemHttpResult Conflict(string detail) =>
        TypedResults.Problem(statusCode: StatusCodes.Status409Conflict, title: "Conflict", detail: detail);
}
