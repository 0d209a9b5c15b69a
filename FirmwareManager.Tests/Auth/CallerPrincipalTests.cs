using System.Security.Claims;
using FirmwareManager.Api.Auth;

namespace FirmwareManager.Tests.Auth;

/// <summary>
/// The principal a key becomes makes its claims only when they are read: whatever reads them (a policy's claim,
/// a role, a copy, a principal read from claims alone) finds what a principal made from a list of claims has.
/// </summary>
public sealed class CallerPrincipalTests
{
    private static readonly Caller Admin = new(CallerKind.Member, 7, 3, Caller.AdminRole, 42, "fmk_abcd");
    private static readonly Caller Device = new(CallerKind.Device, 9001, 3, null, 43, "fmd_wxyz");

    [Fact]
    public void Its_claims_are_the_callers_however_they_are_read()
    {
        var principal = Admin.ToPrincipal("ApiKey");

        principal.Identity!.IsAuthenticated.Should().BeTrue();
        principal.Identity.AuthenticationType.Should().Be("ApiKey");
        principal.Identity.Name.Should().Be("7", "the caller's id is the identity's name claim");
        principal.FindFirstValue(Caller.KindClaim).Should().Be("member");
        principal.FindFirstValue(Caller.ProjectClaim).Should().Be("3");
        principal.FindFirstValue(Caller.KeyIdClaim).Should().Be("42");
        principal.FindFirstValue(Caller.KeyPrefixClaim).Should().Be("fmk_abcd");
        principal.HasClaim(Caller.KindClaim, "member").Should().BeTrue();
        principal.IsInRole(Caller.AdminRole).Should().BeTrue();
        principal.Claims.Should().OnlyContain(claim => ReferenceEquals(claim.Subject, principal.Identity));

        var device = Device.ToPrincipal("ApiKey");
        device.FindFirstValue(Caller.KindClaim).Should().Be("device");
        device.FindFirst(Caller.RoleClaim).Should().BeNull("a device has no role");
        device.IsInRole(Caller.AdminRole).Should().BeFalse();
    }

    [Fact]
    public void Read_from_its_claims_alone_it_is_the_same_caller()
    {
        foreach (var caller in new[] { Admin, Device })
        {
            var fromClaims = new ClaimsPrincipal(new ClaimsIdentity(caller.ToPrincipal("ApiKey").Claims, "ApiKey"));

            fromClaims.Should().NotBeOfType<CallerPrincipal>();
            Caller.From(fromClaims).Should().Be(caller);
        }
    }

    [Fact]
    public void A_copy_keeps_the_claims_and_a_claim_added_later_is_read_with_them()
    {
        var principal = Admin.ToPrincipal("ApiKey");
        var identity = (ClaimsIdentity)principal.Identity!;

        identity.AddClaim(new Claim("extra", "yes"));
        var copy = principal.Clone();
        var identityCopy = identity.Clone();

        identity.FindFirst("extra")!.Value.Should().Be("yes");
        identity.FindFirst(Caller.IdClaim)!.Value.Should().Be("7", "the caller's claims stay beside the added one");
        copy.Claims.Select(claim => (claim.Type, claim.Value)).Should().BeEquivalentTo(principal.Claims.Select(claim => (claim.Type, claim.Value)));
        copy.Identity!.AuthenticationType.Should().Be("ApiKey");
        copy.IsInRole(Caller.AdminRole).Should().BeTrue();
        Caller.From(copy).Should().Be(Admin);

        identityCopy.Claims.Select(claim => (claim.Type, claim.Value)).Should().BeEquivalentTo(identity.Claims.Select(claim => (claim.Type, claim.Value)));
        identityCopy.Claims.Should().Contain(claim => claim.Type == "extra");
        identityCopy.Name.Should().Be("7");
        identityCopy.IsAuthenticated.Should().BeTrue();
        Caller.From(new ClaimsPrincipal(identityCopy)).Should().Be(Admin);
    }
}
