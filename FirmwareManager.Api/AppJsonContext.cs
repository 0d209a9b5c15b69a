using System.Text.Json.Serialization;
using FirmwareManager.Api.Firmware;

namespace FirmwareManager.Api;

/// <summary>Source-generated JSON for the API's own response types (snake_case, as the reference API).</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower)]
[JsonSerializable(typeof(FirmwareEventResponse))]
[JsonSerializable(typeof(List<FirmwareEventResponse>))]
internal sealed partial class AppJsonContext : JsonSerializerContext;
