using System.Net;
using FirmwareManager.Api.Database;
using FirmwareManager.Tests.Infrastructure;
using static FirmwareManager.Tests.Firmware.PagingHistoryTests;

namespace FirmwareManager.Tests.Versions;

/// <summary>
/// Identical reads share one query (<see cref="SharedReads{TKey, T}"/>), but never one that started before the
/// request arrived, and a query whose every waiting request has gone is cancelled.
/// </summary>
public sealed class SharedReadsTests(FirmwareManagerApp app) : ApiTest(app)
{
    [Fact]
    public async Task A_request_that_finds_the_query_running_is_answered_by_the_next_one_which_it_shares_with_the_others_that_came_meanwhile()
    {
        var shared = new SharedReads<string, int>();
        var started = new List<TaskCompletionSource<int>>();
        Task<int> Query(CancellationToken _)
        {
            var run = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
            lock (started)
            {
                started.Add(run);
            }

            return run.Task;
        }

        var first = shared.RunAsync("k", Query, CancellationToken.None);
        var second = shared.RunAsync("k", Query, CancellationToken.None);
        var third = shared.RunAsync("k", Query, CancellationToken.None);
        started.Should().HaveCount(1, "the two that came while the first query runs wait for the next");
        started[0].SetResult(1);
        (await first).Should().Be(1);
        await WaitUntilAsync(() => started.Count == 2);
        second.IsCompleted.Should().BeFalse("the first query started before the second request arrived");
        started[1].SetResult(2);
        (await second).Should().Be(2);
        (await third).Should().Be(2, "requests that came together share the next query");
        started.Should().HaveCount(2);
    }

    [Fact]
    public async Task A_query_is_cancelled_with_its_last_waiting_request_and_a_next_query_nobody_waits_for_never_starts()
    {
        var shared = new SharedReads<string, int>();
        var tokens = new List<CancellationToken>();
        Task<int> Query(CancellationToken token)
        {
            lock (tokens)
            {
                tokens.Add(token);
            }

            return Task.Delay(Timeout.Infinite, token).ContinueWith(_ => 0, TaskScheduler.Default);
        }

        using var firstLeaves = new CancellationTokenSource();
        using var secondLeaves = new CancellationTokenSource();
        using var thirdLeaves = new CancellationTokenSource();
        var first = shared.RunAsync("k", Query, firstLeaves.Token);
        var second = shared.RunAsync("k", Query, secondLeaves.Token);
        var third = shared.RunAsync("k", Query, thirdLeaves.Token);
        secondLeaves.Cancel();
        thirdLeaves.Cancel();
        await FluentActions.Awaiting(() => second).Should().ThrowAsync<OperationCanceledException>();
        await FluentActions.Awaiting(() => third).Should().ThrowAsync<OperationCanceledException>();
        tokens.Single().IsCancellationRequested.Should().BeFalse("the first request still waits for the running query");

        firstLeaves.Cancel();
        await FluentActions.Awaiting(() => first).Should().ThrowAsync<OperationCanceledException>();
        tokens.Single().IsCancellationRequested.Should().BeTrue("its last waiting request has gone");
        await Task.Delay(100);
        tokens.Should().HaveCount(1, "the next query had no request left to serve");
        (await shared.RunAsync("k", _ => Task.FromResult(7), CancellationToken.None)).Should().Be(7, "the key starts afresh");
    }

    [Fact]
    public async Task A_version_page_read_after_a_report_has_that_report_while_others_poll_the_same_page()
    {
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);
        using var member = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        using var stop = new CancellationTokenSource();
        var pollers = Enumerable.Range(0, 6).Select(_ => Task.Run(async () =>
        {
            using var poller = App.ClientWithKey(FirmwareManagerApp.MemberKey2);
            while (!stop.IsCancellationRequested)
            {
                (await poller.GetAsync("/firmware-versions?limit=1000")).StatusCode.Should().Be(HttpStatusCode.OK);
            }
        })).ToList();

        try
        {
            for (var i = 0; i < 30; i++)
            {
                var version = $"9.{i}.0";
                (await device.PostEventAsync(1, Event(version, "installed", new DateTime(2030, 1, 1, 0, 0, i, DateTimeKind.Utc))))
                    .StatusCode.Should().Be(HttpStatusCode.Created);
                var page = await (await member.GetAsync("/firmware-versions?limit=1000")).JsonAsync();
                page.EnumerateArray().Select(v => v.GetProperty("firmware").GetString()).Should().Contain(version, "the page was read after the report");
            }
        }
        finally
        {
            await stop.CancelAsync();
            await Task.WhenAll(pollers);
        }
    }

    private static async Task WaitUntilAsync(Func<bool> condition)
    {
        for (var i = 0; i < 200 && !condition(); i++)
        {
            await Task.Delay(10);
        }

        condition().Should().BeTrue();
    }
}
