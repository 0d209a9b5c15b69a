using System.Text.Json.Serialization;
using FirmwareManager.Api.Audit;
using FirmwareManager.Api.Devices;
using FirmwareManager.Api.Firmware;
using FirmwareManager.Api.FleetHealth;
using FirmwareManager.Api.Keys;
using FirmwareManager.Api.Members;
using FirmwareManager.Api.Rollouts;
using FirmwareManager.Api.Versions;
using FirmwareManager.Api.Webhooks;

namespace FirmwareManager.Api;

/// <summary>Source-generated JSON for the API's own response types (snake_case, as the reference API).</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower)]
[JsonSerializable(typeof(FirmwareEventResponse))]
[JsonSerializable(typeof(List<FirmwareEventResponse>))]
[JsonSerializable(typeof(BatchResult))]
[JsonSerializable(typeof(ProjectRetentionResponse))]
[JsonSerializable(typeof(FleetHealthSettingsResponse))]
[JsonSerializable(typeof(List<FirmwareTransition>))]
[JsonSerializable(typeof(WebhookPayload))]
[JsonSerializable(typeof(RolloutWebhookPayload))]
[JsonSerializable(typeof(RolloutResponse))]
[JsonSerializable(typeof(List<RolloutResponse>))]
[JsonSerializable(typeof(CreatedWebhookResponse))]
[JsonSerializable(typeof(WebhookResponse))]
[JsonSerializable(typeof(List<WebhookResponse>))]
[JsonSerializable(typeof(WebhookDeliveryResponse))]
[JsonSerializable(typeof(List<WebhookDeliveryResponse>))]
[JsonSerializable(typeof(DeviceResponse))]
[JsonSerializable(typeof(List<DeviceResponse>))]
[JsonSerializable(typeof(List<FirmwareVersionCount>))]
[JsonSerializable(typeof(CreatedDeviceResponse))]
[JsonSerializable(typeof(ChangedDevicesResponse))]
[JsonSerializable(typeof(CreatedMemberResponse))]
[JsonSerializable(typeof(NewKeyResponse))]
[JsonSerializable(typeof(List<KeyResponse>))]
[JsonSerializable(typeof(MemberResponse))]
[JsonSerializable(typeof(List<MemberResponse>))]
[JsonSerializable(typeof(List<AuditEntryResponse>))]
internal sealed partial class AppJsonContext : JsonSerializerContext;
