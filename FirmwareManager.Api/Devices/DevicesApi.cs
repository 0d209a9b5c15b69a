using System.ComponentModel.DataAnnotations;
using System.Globalization;
using FirmwareManager.Api.Audit;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Database;
using FirmwareManager.Api.Firmware;
using FirmwareManager.Api.Http;
using FirmwareManager.Api.Keys;
using FirmwareManager.Api.Projections;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;

namespace FirmwareManager.Api.Devices;

/// <summary>What <c>POST /devices</c> answers: the new device and its first key, shown this once.</summary>
public sealed record CreatedDeviceResponse(DeviceResponse Device, NewKeyResponse Key);

/// <summary>A device to create.</summary>
/// <param name="Name">Optional, 1 to 200 characters.</param>
/// <param name="Serial">Optional, 1 to 200 characters, unique within the project.</param>
/// <param name="Hardware">Optional hardware revision: 1 to 64 of A-Z a-z 0-9 _ . : / + -.</param>
/// <param name="Tags">Optional labels: up to 16, each 1 to 64 of A-Z a-z 0-9 _ . : -.</param>
public sealed record CreateDeviceBody(string? Name = null, string? Serial = null, string? Hardware = null, string[]? Tags = null);

/// <param name="Count">How many devices to enroll without serials (1 to 100,000); or</param>
/// <param name="Serials">the serials of the devices to enroll (1 to 100,000, unique).</param>
/// <param name="Hardware">Optional: every enrolled device's hardware revision.</param>
/// <param name="Tags">Optional: every enrolled device's tags.</param>
public sealed record EnrollDevicesBody(int? Count = null, string[]? Serials = null, string? Hardware = null, string[]? Tags = null);

/// <summary>A change of a device's hardware and tags; what is left out stays as it is.</summary>
/// <param name="Hardware">Set the hardware revision.</param>
/// <param name="ClearHardware">true: no hardware revision any more.</param>
/// <param name="Tags">Replace the tags (up to 16).</param>
/// <param name="AddTags">Add these tags.</param>
/// <param name="RemoveTags">Remove these tags.</param>
public sealed record ChangeDeviceBody(
    string? Hardware = null, bool ClearHardware = false, string[]? Tags = null, string[]? AddTags = null, string[]? RemoveTags = null);

/// <summary>The same change for up to 1000 devices at once, all or nothing.</summary>
/// <param name="DeviceIds">1 to 1000 ids of the project's devices.</param>
public sealed record ChangeDevicesBody(
    [property: Required] long[]? DeviceIds, string? Hardware = null, bool ClearHardware = false, string[]? Tags = null,
    string[]? AddTags = null, string[]? RemoveTags = null);

/// <summary>What a bulk change answers: how many devices it changed.</summary>
public sealed record ChangedDevicesResponse(int Changed);

/// <summary>
/// <c>/devices</c>: the project's devices for members (list, one), and for admins their creation, bulk enrollment
/// and decommissioning, each change audited in its transaction. Their keys: <see cref="Keys.KeysApi"/>.
/// </summary>
public static class DevicesApi
{
    public const int MaxEnrollment = 100_000;
    public const int MaxBulkChange = 1000;
    private const int MaxTextLength = 200;

    public static RouteGroupBuilder MapDevicesApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/devices")
            .RequireAuthorization(Policies.Member)
            .WithTags("Devices")
            .WithKeyProblems()
            .ProducesValidationProblem();

        group.MapGet("/", ListAsync)
            .ReadsProjectedState()
            .WithSummary("The project's devices in id order, paged (member keys)")
            .WithDescription("Filters: firmware (the current version, exact), status_of_last_event (repeat or comma-separate), silent_since (devices with no report since then, or never), silent_after_update=true (newest event installed or updated, nothing reported for longer than the project's silent_after_hours), unexplained_downgrade=true (came down to a lower version without a rolled_back report), hardware (exact), tag (repeat for devices with every one). " +
                             "With Accept: text/csv or application/x-ndjson, every device the filters select, streamed in one snapshot.")
            .Exports();
        group.MapGet("/{device_id}", GetAsync)
            .ReadsProjectedState()
            .ProducesProblem(StatusCodes.Status404NotFound)
            .WithSummary("One device: current firmware, its newest event and when it last reported (member keys)");

        var admin = app.MapGroup("/devices").RequireAuthorization(Policies.Admin).WithTags("Devices")
            .WithKeyProblems().ProducesValidationProblem().ProducesProblem(StatusCodes.Status404NotFound);
        admin.MapPost("/", CreateDeviceAsync).Accepts<CreateDeviceBody>("application/json")
            .ProducesProblem(StatusCodes.Status409Conflict)
            .WithSummary("Create one device with its first key (admin)");
        admin.MapPost("/bulk", EnrollAsync).Accepts<EnrollDevicesBody>("application/json")
            .Produces<string>(StatusCodes.Status200OK, "application/x-ndjson", "text/csv")
            .ProducesProblem(StatusCodes.Status409Conflict)
            .WithSummary("Enroll up to 100,000 devices at once, all or nothing (admin)")
            .WithDescription("Streams one line per device with its id, serial and key: NDJSON, or CSV with Accept: text/csv.")
            .WithRequestTimeout(Limits.LongRunningPolicy);
        admin.MapPatch("/{device_id}", ChangeDeviceAsync).Accepts<ChangeDeviceBody>("application/json")
            .WithSummary("Set or clear a device's hardware revision, replace its tags or add and remove some (admin, audited)");
        admin.MapPatch("/", ChangeDevicesAsync).Accepts<ChangeDevicesBody>("application/json")
            .WithSummary("The same change for up to 1000 devices at once, all or nothing (admin, audited)");
        admin.MapDelete("/{device_id}", DecommissionAsync)
            .WithSummary("Decommission a device: its keys stop working, its history stays readable (admin)");
        return group;
    }

    private static async Task<Results<Ok<List<DeviceResponse>>, ProblemHttpResult, ExportResult>> ListAsync(
        [FromQuery] string? limit,
        [FromQuery] string? cursor,
        [FromQuery] string? firmware,
        [FromQuery(Name = "status_of_last_event")] string[]? statusOfLastEvent,
        [FromQuery(Name = "silent_since")] string? silentSince,
        [FromQuery(Name = "silent_after_update")] string? silentAfterUpdate,
        [FromQuery(Name = "unexplained_downgrade")] string? unexplainedDowngrade,
        [FromQuery] string? hardware,
        [FromQuery] string[]? tag,
        HttpContext http,
        DeviceSummaries devices,
        Cursors cursors,
        ReadRouting reads,
        Exports exports,
        CancellationToken cancellationToken)
    {
        var errors = new Dictionary<string, string[]>();
        var export = ExportNegotiation.Requested(http.Request);
        // An export has every row the filters select: limit and cursor do not apply to it.
        var page = export is null ? PageRequest.Parse(limit, cursor, errors) : PageRequest.Parse(null, null, errors);
        var events = EventFilters.Parse(silentSince, null, statusOfLastEvent, firmware, null, errors);
        var silentAfter = ParseFlag("silent_after_update", silentAfterUpdate, errors);
        var downgraded = ParseFlag("unexplained_downgrade", unexplainedDowngrade, errors);
        if (hardware is not null && !DeviceLabelRules.IsHardware(hardware))
        {
            errors["hardware"] = [DeviceLabelRules.HardwareMessage];
        }

        var tags = DeviceLabelRules.Tags("tag", tag, errors);
        if (page is null || events is null || errors.Count > 0)
        {
            return Problems.Validation(RenameFilters(errors), "Invalid query parameters.");
        }

        var filters = new DeviceFilters(events.Firmware, events.Statuses, events.Since, silentAfter, downgraded, hardware, tags);

        var caller = Caller.From(http.User);
        var (read, behind) = await reads.ForProjectedAsync(caller, http);
        if (behind is not null)
        {
            return behind;
        }

        if (export is { } format)
        {
            return exports.Of<DeviceSummary, DeviceResponse>(
                format, "devices", caller.ProjectId, read, devices.Export(caller.ProjectId, filters), DeviceResponse.From);
        }

        var scope = string.Create(CultureInfo.InvariantCulture, $"devices|{caller.ProjectId}|{filters.Key}");
        return (await KeysetPage.ServeAsync(http, cursors, scope, page, read,
            (IdPosition? after, int count) => devices.PageAsync(caller.ProjectId, filters, after?.Id ?? 0, count, read, cancellationToken),
            device => new IdPosition(device.Id), DeviceResponse.From, cancellationToken)).OrExport();
    }

    private static async Task<Results<Ok<DeviceResponse>, ProblemHttpResult>> GetAsync(
        [FromRoute(Name = "device_id")] string deviceIdText,
        HttpContext http,
        DeviceSummaries devices,
        ReadRouting reads,
        CancellationToken cancellationToken)
    {
        if (!Problems.TryParseId(deviceIdText, out var deviceId))
        {
            return Problems.InvalidId("device_id", deviceIdText);
        }

        var caller = Caller.From(http.User);
        var (read, behind) = await reads.ForProjectedAsync(caller, http);
        if (behind is not null)
        {
            return behind;
        }

        var device = await devices.FindAsync(caller.ProjectId, deviceId, read, cancellationToken);
        return device is null
            ? Problems.NotFound("Device not found", $"There is no device {deviceId} in your project.")
            : TypedResults.Ok(DeviceResponse.From(device));
    }

    /// <summary><c>true</c> filters; <c>false</c> or nothing does not.</summary>
    private static bool ParseFlag(string name, string? value, Dictionary<string, string[]> errors)
    {
        switch (value)
        {
            case null or "false":
                return false;
            case "true":
                return true;
            default:
                errors[name] = ["Must be true or false."];
                return false;
        }
    }

    /// <summary>The shared filter parser names since and status; here they are silent_since and status_of_last_event.</summary>
    private static Dictionary<string, string[]> RenameFilters(Dictionary<string, string[]> errors) =>
        errors.ToDictionary(
            e => e.Key switch { "since" => "silent_since", "status" => "status_of_last_event", var key => key },
            e => e.Value);

    private static async Task<Results<Created<CreatedDeviceResponse>, ProblemHttpResult>> CreateDeviceAsync(
        HttpContext http, DeviceProvisioning provisioning, DeviceSummaries devices, CancellationToken cancellationToken)
    {
        var (body, problem) = await JsonBody.ReadAsync(http, RequestLimits.MaxBodyBytes, RequestJsonContext.Default.CreateDeviceBody, cancellationToken);
        if (body is null)
        {
            return problem!;
        }

        var errors = new Dictionary<string, string[]>();
        CheckOptionalText(body.Name, "name", errors);
        CheckOptionalText(body.Serial, "serial", errors);
        var labels = DeviceLabelRules.Labels(body.Hardware, body.Tags, errors);
        if (errors.Count > 0)
        {
            return Problems.Validation(errors, "Invalid device.");
        }

        var caller = Caller.From(http.User);
        try
        {
            var (deviceId, key) = await provisioning.CreateAsync(caller.ProjectId, body.Name, body.Serial, labels!, Actor.From(caller), cancellationToken);
            // Just written: read where it was written.
            var device = await devices.FindAsync(caller.ProjectId, deviceId, ReadContext.OnPrimary(), cancellationToken);
            return TypedResults.Created(string.Create(CultureInfo.InvariantCulture, $"/devices/{deviceId}"),
                new CreatedDeviceResponse(DeviceResponse.From(device!), key));
        }
        catch (SerialTakenException e)
        {
            return Problems.Conflict(e.Message);
        }
    }

    private static async Task<Results<EmptyHttpResult, ProblemHttpResult>> EnrollAsync(
        HttpContext http, DeviceProvisioning provisioning, CancellationToken cancellationToken)
    {
        var (body, problem) = await JsonBody.ReadAsync(http, 16 * 1024 * 1024, RequestJsonContext.Default.EnrollDevicesBody, cancellationToken);
        if (body is null)
        {
            return problem!;
        }

        var errors = new Dictionary<string, string[]>();
        var serials = new List<string?>();
        if ((body.Count is null) == (body.Serials is null))
        {
            errors["body"] = ["Send either {\"count\": n} or {\"serials\": [...]}."];
        }
        else if (body.Count is { } count)
        {
            if (count is < 1 or > MaxEnrollment)
            {
                errors["count"] = [$"Must be a whole number from 1 to {MaxEnrollment}."];
            }
            else
            {
                serials.AddRange(Enumerable.Repeat<string?>(null, count));
            }
        }
        else
        {
            CheckSerials(body.Serials!, errors);
            serials.AddRange(body.Serials!);
        }

        var labels = DeviceLabelRules.Labels(body.Hardware, body.Tags, errors);
        if (errors.Count > 0)
        {
            return Problems.Validation(errors, "Invalid enrollment.");
        }

        var caller = Caller.From(http.User);
        EnrolledDevices enrolled;
        try
        {
            enrolled = await provisioning.EnrollAsync(caller.ProjectId, serials, labels!, Actor.From(caller), cancellationToken);
        }
        catch (SerialTakenException e)
        {
            return Problems.Conflict(e.Message);
        }

        // Committed: now stream the keys, one line per device, flushing as it goes.
        var csv = http.Request.GetTypedHeaders().Accept.Any(a => a.MediaType.Equals("text/csv", StringComparison.OrdinalIgnoreCase));
        http.Response.StatusCode = StatusCodes.Status200OK;
        http.Response.ContentType = csv ? "text/csv; charset=utf-8" : "application/x-ndjson";
        await (csv
            ? EnrolledDevicesWriter.WriteCsvAsync(http.Response.BodyWriter, enrolled)
            : EnrolledDevicesWriter.WriteNdjsonAsync(http.Response.BodyWriter, enrolled));
        return TypedResults.Empty;
    }

    private static async Task<Results<Ok<DeviceResponse>, ProblemHttpResult>> ChangeDeviceAsync(
        [FromRoute(Name = "device_id")] string deviceIdText, HttpContext http, DeviceAttributes attributes, DeviceSummaries devices,
        CancellationToken cancellationToken)
    {
        if (!Problems.TryParseId(deviceIdText, out var deviceId))
        {
            return Problems.InvalidId("device_id", deviceIdText);
        }

        var (body, problem) = await JsonBody.ReadAsync(http, RequestLimits.MaxBodyBytes, RequestJsonContext.Default.ChangeDeviceBody, cancellationToken);
        if (body is null)
        {
            return problem!;
        }

        var errors = new Dictionary<string, string[]>();
        var change = DeviceLabelRules.Change(body.Hardware, body.ClearHardware, body.Tags, body.AddTags, body.RemoveTags, errors);
        if (change is null)
        {
            return Problems.Validation(errors, "Invalid change.");
        }

        var caller = Caller.From(http.User);
        try
        {
            if ((await attributes.ChangeAsync(caller.ProjectId, [deviceId], change, Actor.From(caller), cancellationToken)).Length > 0)
            {
                return Problems.NotFoundIn("device", deviceId);
            }
        }
        catch (TooManyTagsException e)
        {
            return Problems.Validation(new Dictionary<string, string[]> { ["add_tags"] = [e.Message] }, "Invalid change.");
        }

        var device = await devices.FindAsync(caller.ProjectId, deviceId, ReadContext.OnPrimary(), cancellationToken);
        return TypedResults.Ok(DeviceResponse.From(device!));
    }

    private static async Task<Results<Ok<ChangedDevicesResponse>, ProblemHttpResult>> ChangeDevicesAsync(
        HttpContext http, DeviceAttributes attributes, CancellationToken cancellationToken)
    {
        var (body, problem) = await JsonBody.ReadAsync(http, RequestLimits.MaxBodyBytes, RequestJsonContext.Default.ChangeDevicesBody, cancellationToken);
        if (body is null)
        {
            return problem!;
        }

        var errors = new Dictionary<string, string[]>();
        var ids = body.DeviceIds?.Distinct().ToArray();
        if (ids is not { Length: > 0 and <= MaxBulkChange })
        {
            errors["device_ids"] = [$"Must be an array of 1 to {MaxBulkChange} device ids."];
        }

        var change = DeviceLabelRules.Change(body.Hardware, body.ClearHardware, body.Tags, body.AddTags, body.RemoveTags, errors);
        if (change is null || errors.Count > 0)
        {
            return Problems.Validation(errors, "Invalid change.");
        }

        var caller = Caller.From(http.User);
        try
        {
            var missing = await attributes.ChangeAsync(caller.ProjectId, ids!, change, Actor.From(caller), cancellationToken);
            return missing.Length > 0
                ? Problems.Validation(
                    new Dictionary<string, string[]> { ["device_ids"] = [$"Not devices of your project: {string.Join(", ", missing.Take(20))}{(missing.Length > 20 ? ", ..." : "")}. Nothing was changed."] },
                    "Invalid change.")
                : TypedResults.Ok(new ChangedDevicesResponse(ids!.Length));
        }
        catch (TooManyTagsException e)
        {
            return Problems.Validation(new Dictionary<string, string[]> { ["add_tags"] = [e.Message + " Nothing was changed."] }, "Invalid change.");
        }
    }

    private static void CheckSerials(string[] serials, Dictionary<string, string[]> errors)
    {
        if (serials.Length is 0 or > MaxEnrollment)
        {
            errors["serials"] = [$"Must be an array of 1 to {MaxEnrollment} serials."];
            return;
        }

        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (var index = 0; index < serials.Length; index++)
        {
            var serial = serials[index];
            if (!IsValidText(serial))
            {
                errors[$"serials[{index}]"] = [$"Must be a string of 1 to {MaxTextLength} printable characters."];
            }
            else if (!seen.Add(serial))
            {
                errors[$"serials[{index}]"] = [$"'{serial}' appears more than once."];
            }
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
            : Problems.NotFoundIn("device", deviceId);
    }

    private static void CheckOptionalText(string? text, string name, Dictionary<string, string[]> errors)
    {
        if (text is not null && !IsValidText(text))
        {
            errors[name] = [$"Must be a string of 1 to {MaxTextLength} printable characters, or left out."];
        }
    }

    private static bool IsValidText(string text) => text.Length is > 0 and <= MaxTextLength && !text.Any(char.IsControl);
}
