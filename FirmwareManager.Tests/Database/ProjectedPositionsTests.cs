using FirmwareManager.Api.Database;

namespace FirmwareManager.Tests.Database;

/// <summary>What an instance knows of projects' positions: a lower bound, kept for the refresh interval.</summary>
public sealed class ProjectedPositionsTests
{
    private static ProjectedPositions With(int refreshMs) => new(refreshMs);

    [Fact]
    public void A_project_never_looked_at_is_read_from_the_database()
    {
        With(1000).TryGet(7, 0, out _).Should().BeFalse();
    }

    [Fact]
    public void A_position_seen_is_kept_and_never_lowered_by_an_older_one()
    {
        var positions = With(60_000);
        positions.Observe(7, 40);
        positions.Observe(7, 25);

        positions.TryGet(7, 0, out var known).Should().BeTrue();
        known.Should().Be(40);
        positions.TryGet(8, 0, out _).Should().BeFalse("each project has its own position");
    }

    [Fact]
    public void A_minimum_the_caller_saw_reached_raises_the_answer()
    {
        var positions = With(60_000);
        positions.Observe(7, 40);

        positions.TryGet(7, 55, out var known).Should().BeTrue();
        known.Should().Be(55);
    }

    [Fact]
    public async Task A_position_older_than_the_refresh_interval_is_read_again()
    {
        var positions = With(50);
        positions.Observe(7, 40);
        await Task.Delay(200);

        positions.TryGet(7, 0, out _).Should().BeFalse();
        positions.Observe(7, 41);
        positions.TryGet(7, 0, out var known).Should().BeTrue();
        known.Should().Be(41);
    }

    [Fact]
    public void With_no_refresh_interval_every_read_reads_the_position()
    {
        var positions = With(0);
        positions.Observe(7, 40);
        positions.TryGet(7, 0, out _).Should().BeFalse();
    }

    [Fact]
    public void Forgetting_starts_again_for_a_database_whose_positions_went_back()
    {
        var positions = With(60_000);
        positions.Observe(7, 40);
        positions.ForgetAll();
        positions.TryGet(7, 0, out _).Should().BeFalse();
    }
}
