using System.Text;
using FirmwareManager.Api.Events;
using FirmwareManager.Api.Firmware;
using FirmwareManager.Api.FleetHealth;
using FirmwareManager.Api.Http;
using FirmwareManager.Api.Versions;

namespace FirmwareManager.Tests.Http;

/// <summary>
/// The lists' positions: each reads back what it wrote, and writes the bytes the cursors handed out before the
/// one keyset page wrote (so a client's saved cursor keeps working across the upgrade).
/// </summary>
public sealed class KeysetPageTests
{
    private static byte[] Written<TPosition>(TPosition position)
        where TPosition : class, IPagePosition<TPosition>
    {
        using var bytes = new MemoryStream();
        using (var writer = new BinaryWriter(bytes, Encoding.UTF8, leaveOpen: true))
        {
            position.WriteTo(writer);
        }

        return bytes.ToArray();
    }

    private static TPosition? ReadBack<TPosition>(byte[] bytes)
        where TPosition : class, IPagePosition<TPosition>
    {
        using var reader = new BinaryReader(new MemoryStream(bytes), Encoding.UTF8);
        return TPosition.ReadFrom(reader);
    }

    // The layout the handlers wrote inline before: the same BinaryWriter calls, field by field.
    private static byte[] Layout(Action<BinaryWriter> write)
    {
        using var bytes = new MemoryStream();
        using (var writer = new BinaryWriter(bytes, Encoding.UTF8, leaveOpen: true))
        {
            write(writer);
        }

        return bytes.ToArray();
    }

    [Fact]
    public void Every_position_writes_the_bytes_of_the_cursors_handed_out_before_and_reads_them_back()
    {
        var occurred = new DateTime(2026, 11, 30, 23, 59, 59, 999, DateTimeKind.Utc).AddTicks(7);

        Written(new IdPosition(42)).Should().Equal(Layout(w => w.Write(42L)));
        ReadBack<IdPosition>(Written(new IdPosition(42))).Should().Be(new IdPosition(42));

        var history = new DeviceHistory.Position(occurred, "1.4.2-rc.1", "failed");
        Written(history).Should().Equal(Layout(w =>
        {
            w.Write(occurred.Ticks);
            w.Write("1.4.2-rc.1");
            w.Write("failed");
        }));
        ReadBack<DeviceHistory.Position>(Written(history)).Should().Be(history);

        var arrival = new ArrivalPosition(7, long.MaxValue);
        Written(arrival).Should().Equal(Layout(w =>
        {
            w.Write(7L);
            w.Write(long.MaxValue);
        }));
        ReadBack<ArrivalPosition>(Written(arrival)).Should().Be(arrival);

        var transition = new FirmwareTransitions.Position("2.0.0", "");
        Written(transition).Should().Equal(Layout(w =>
        {
            w.Write("2.0.0");
            w.Write("");
        }));
        ReadBack<FirmwareTransitions.Position>(Written(transition)).Should().Be(transition);

        var version = new FirmwareVersionPosition([1, 0, 2, 0xff]);
        Written(version).Should().Equal(Layout(w =>
        {
            w.Write(4);
            w.Write(new byte[] { 1, 0, 2, 0xff });
        }));
        ReadBack<FirmwareVersionPosition>(Written(version))!.Key.Should().Equal(1, 0, 2, 0xff);
    }

    [Fact]
    public void Bytes_that_are_no_position_read_as_none()
    {
        ReadBack<DeviceHistory.Position>(Layout(w => w.Write(-1L))).Should().BeNull();
        ReadBack<ArrivalPosition>(Layout(w =>
        {
            w.Write(-5L);
            w.Write(1L);
        })).Should().BeNull();
        ReadBack<FirmwareVersionPosition>(Layout(w => w.Write(0))).Should().BeNull();
        ReadBack<FirmwareVersionPosition>(Layout(w =>
        {
            w.Write(3);
            w.Write((byte)1);
        })).Should().BeNull();
    }

    [Theory]
    [InlineData(0, 3, 0, false)]
    [InlineData(3, 3, 3, false)]
    [InlineData(4, 3, 3, true)]
    public void A_page_fetched_with_one_row_more_serves_its_limit_and_follows_on_only_when_the_extra_row_came(
        int fetched, int limit, int served, bool follows)
    {
        var rows = Enumerable.Range(1, fetched).Select(i => (long)i).ToList();

        var page = KeysetRows.FromOneMore(rows, limit, id => new IdPosition(id));

        page.Rows.Should().Equal(rows.Take(served));
        page.Next.Should().Be(follows ? new IdPosition(limit) : null);
    }
}
