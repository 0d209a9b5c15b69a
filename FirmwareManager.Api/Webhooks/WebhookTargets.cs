using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Options;

namespace FirmwareManager.Api.Webhooks;

/// <summary>
/// Which URLs a webhook may target: http or https, no credentials in the URL, and (unless
/// <see cref="WebhookOptions.AllowPrivateTargets"/>) a host whose every address is public. The same address check
/// runs again when a delivery connects (<see cref="ConnectAsync"/>), so that a name that resolves to a public address
/// when the webhook is made and to a private one later (DNS rebinding) is still refused.
/// </summary>
public sealed class WebhookTargets(IOptions<WebhookOptions> options)
{
    /// <summary>Null when the URL may be a target; otherwise why not.</summary>
    public async Task<string?> CheckAsync(string url, CancellationToken cancellationToken)
    {
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
        {
            return "Must be an absolute http or https URL.";
        }

        if (uri.UserInfo.Length > 0 || uri.Fragment.Length > 0)
        {
            return "Must not carry credentials or a fragment.";
        }

        IPAddress[] addresses;
        try
        {
            addresses = IPAddress.TryParse(uri.IdnHost.Trim('[', ']'), out var literal)
                ? [literal]
                : await Dns.GetHostAddressesAsync(uri.IdnHost, cancellationToken);
        }
        catch (SocketException)
        {
            return "Its host does not resolve.";
        }

        return addresses.Length == 0 ? "Its host does not resolve."
            : !options.Value.AllowPrivateTargets && addresses.Any(a => !IsPublic(a))
                ? "Its host resolves to a loopback, private or otherwise non-public address, which webhooks may not target (FirmwareManager:Webhooks:AllowPrivateTargets)."
                : null;
    }

    /// <summary>The connection a delivery makes: to the first allowed address of the host.</summary>
    public async ValueTask<Stream> ConnectAsync(SocketsHttpConnectionContext context, CancellationToken cancellationToken)
    {
        var host = context.DnsEndPoint.Host;
        var addresses = IPAddress.TryParse(host.Trim('[', ']'), out var literal)
            ? [literal]
            : await Dns.GetHostAddressesAsync(host, cancellationToken);
        var allowed = addresses.Where(a => options.Value.AllowPrivateTargets || IsPublic(a)).ToArray();
        if (allowed.Length == 0)
        {
            throw new WebhookTargetRefusedException($"{host} resolves to no address webhooks may target.");
        }

        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(allowed, context.DnsEndPoint.Port, cancellationToken);
            return new NetworkStream(socket, ownsSocket: true);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Whether an address is on the public internet: not loopback, private, link-local, shared, multicast or reserved.</summary>
    public static bool IsPublic(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6)
        {
            address = address.MapToIPv4();
        }

        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            var b = address.GetAddressBytes();
            return !(b[0] is 0 or 10 or 127 || b[0] >= 224 // this network, private, loopback, multicast and reserved
                || (b[0] == 100 && b[1] >= 64 && b[1] < 128) // shared address space (carrier-grade NAT)
                || (b[0] == 169 && b[1] == 254) // link-local, cloud metadata services
                || (b[0] == 172 && b[1] >= 16 && b[1] < 32)
                || (b[0] == 192 && b[1] == 168)
                || (b[0] == 192 && b[1] == 0 && b[2] is 0 or 2) // IETF protocol assignments, documentation
                || (b[0] == 198 && b[1] is 18 or 19) // benchmarking
                || (b[0] == 198 && b[1] == 51 && b[2] == 100)
                || (b[0] == 203 && b[1] == 0 && b[2] == 113));
        }

        if (address.AddressFamily == AddressFamily.InterNetworkV6)
        {
            var b = address.GetAddressBytes();
            return !(IPAddress.IsLoopback(address) || address.Equals(IPAddress.IPv6None) || address.IsIPv6LinkLocal
                || address.IsIPv6SiteLocal || address.IsIPv6Multicast || address.IsIPv6UniqueLocal || address.IsIPv4MappedToIPv6
                || (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8) // documentation
                || (b[0] == 0x00 && b.Take(12).All(x => x == 0)) // IPv4-compatible and unspecified
                || (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b)); // NAT64
        }

        return false;
    }
}

/// <summary>A delivery's target resolved only to addresses webhooks may not target.</summary>
public sealed class WebhookTargetRefusedException(string message) : Exception(message);
