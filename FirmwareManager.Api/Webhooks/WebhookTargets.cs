using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Options;

namespace FirmwareManager.Api.Webhooks;

/// <summary>
/// Which URLs a webhook may target: http or https, no credentials in the URL, port 80, 443 or above 1023, and (unless
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

        if (!IsAllowedPort(uri.Port))
        {
            return "Its port must be 80, 443 or above 1023: the ports below 1024 are the system services' (SSH, SMTP, DNS, ...).";
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
        if (!IsAllowedPort(context.DnsEndPoint.Port))
        {
            throw new WebhookTargetRefusedException($"Port {context.DnsEndPoint.Port} is not one webhooks may target.");
        }

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

    // IANA's special-purpose registries (RFC 6890 and its updates), the ranges that are not globally reachable or
    // that lead somewhere else than their address says, and the hosts' own endpoints of cloud providers.
    private static readonly IPNetwork[] NotPublicV4 =
    [
        IPNetwork.Parse("0.0.0.0/8"), // this network
        IPNetwork.Parse("10.0.0.0/8"), // private
        IPNetwork.Parse("100.64.0.0/10"), // shared address space (carrier-grade NAT; Alibaba's metadata service)
        IPNetwork.Parse("127.0.0.0/8"), // loopback
        IPNetwork.Parse("169.254.0.0/16"), // link-local: the metadata services of AWS, GCP, Azure, ...
        IPNetwork.Parse("172.16.0.0/12"), // private
        IPNetwork.Parse("192.0.0.0/24"), // IETF protocol assignments (Oracle's metadata service)
        IPNetwork.Parse("192.0.2.0/24"), // documentation
        IPNetwork.Parse("192.88.99.0/24"), // 6to4 relay anycast: forwards to an address inside the packet
        IPNetwork.Parse("192.168.0.0/16"), // private
        IPNetwork.Parse("198.18.0.0/15"), // benchmarking
        IPNetwork.Parse("198.51.100.0/24"), // documentation
        IPNetwork.Parse("203.0.113.0/24"), // documentation
        IPNetwork.Parse("224.0.0.0/3"), // multicast, reserved, broadcast
        IPNetwork.Parse("168.63.129.16/32"), // Azure's host endpoint (DHCP, DNS, health probes, the VM agent)
    ];

    // Only global unicast (2000::/3) can be public; this refuses everything outside it (loopback, unspecified,
    // IPv4-compatible ::/96, IPv4-translated ::ffff:0:0:0/96, NAT64 64:ff9b::/96 and 64:ff9b:1::/48, discard-only
    // 100::/64, unique-local, link-local, site-local, multicast) and these parts of it:
    private static readonly IPNetwork GlobalUnicast = IPNetwork.Parse("2000::/3");

    private static readonly IPNetwork[] NotPublicInGlobalUnicast =
    [
        IPNetwork.Parse("2001::/23"), // IETF protocol assignments: Teredo (2001::/32, embeds an IPv4), ORCHID, ...
        IPNetwork.Parse("2001:db8::/32"), // documentation
        IPNetwork.Parse("2002::/16"), // 6to4: embeds any IPv4 address, 2002:7f00:1:: is 127.0.0.1's
        IPNetwork.Parse("3fff::/20"), // documentation
        IPNetwork.Parse("5f00::/16"), // segment routing identifiers
    ];

    /// <summary>
    /// Whether an address is on the public internet: not loopback, private, link-local, shared, multicast, reserved,
    /// a cloud host's own endpoint, or a tunnelling or translation form that embeds another address. An IPv4 address
    /// written as IPv6 (<c>::ffff:a.b.c.d</c>) is judged as that IPv4 address.
    /// </summary>
    public static bool IsPublic(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6)
        {
            address = address.MapToIPv4();
        }

        return address.AddressFamily switch
        {
            AddressFamily.InterNetwork => !NotPublicV4.Any(n => n.Contains(address)),
            AddressFamily.InterNetworkV6 => address.ScopeId == 0 && GlobalUnicast.Contains(address)
                && !NotPublicInGlobalUnicast.Any(n => n.Contains(address)),
            _ => false,
        };
    }

    /// <summary>The ports a webhook may target: HTTP's and HTTPS's, and those no system service binds (above 1023).</summary>
    public static bool IsAllowedPort(int port) => port is 80 or 443 or (> 1023 and <= 65535);
}

/// <summary>A delivery's target resolved only to addresses webhooks may not target.</summary>
public sealed class WebhookTargetRefusedException(string message) : Exception(message);
