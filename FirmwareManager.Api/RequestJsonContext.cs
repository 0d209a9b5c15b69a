using System.Text.Json.Serialization;
using FirmwareManager.Api.Devices;
using FirmwareManager.Api.Firmware;
using FirmwareManager.Api.FleetHealth;
using FirmwareManager.Api.Http;
using FirmwareManager.Api.Members;
using FirmwareManager.Api.Rollouts;
using FirmwareManager.Api.Webhooks;

namespace FirmwareManager.Api;

/// <summary>
/// Source-generated reading of the request bodies, into the records the OpenAPI document describes, through
/// <see cref="JsonBody"/>: snake_case names (exact case), each at most once, nesting to 16, and the
/// <see cref="RequestFields"/> converters for every value.
/// </summary>
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    AllowDuplicateProperties = false,
    MaxDepth = 16,
    Converters = [typeof(RequestFields.Text), typeof(RequestFields.TextArray), typeof(RequestFields.WholeNumber), typeof(RequestFields.IdArray), typeof(RequestFields.Flag), typeof(RequestFields.Number)])]
[JsonSerializable(typeof(FirmwareEventBody))]
[JsonSerializable(typeof(FirmwareEventBody[]))]
[JsonSerializable(typeof(CreateDeviceBody))]
[JsonSerializable(typeof(EnrollDevicesBody))]
[JsonSerializable(typeof(ChangeDeviceBody))]
[JsonSerializable(typeof(ChangeDevicesBody))]
[JsonSerializable(typeof(InviteMemberBody))]
[JsonSerializable(typeof(ProjectRetentionBody))]
[JsonSerializable(typeof(FleetHealthSettingsBody))]
[JsonSerializable(typeof(CreateWebhookBody))]
[JsonSerializable(typeof(CreateRolloutBody))]
internal sealed partial class RequestJsonContext : JsonSerializerContext;
