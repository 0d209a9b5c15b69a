using System.Diagnostics;
using System.Net;
using Dapper;
using FirmwareManager.Api.Auth;
using FirmwareManager.Api.Members;
using FirmwareManager.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;

namespace FirmwareManager.Tests.Auth;

public sealed class KeyCacheTests(FirmwareManagerApp app) : ApiTest(app)
{
    [Fact]
    public async Task A_key_revoked_by_another_instance_stops_working_within_5_seconds_even_when_cached()
    {
        var (deviceId, key) = await App.AddDeviceAsync(projectId: 1);
        using var device = App.ClientWithKey(key);
        // The first read of the change number forgets whatever was cached before it (a service just started).
        await App.Services.GetRequiredService<KeyCache>().FirstWatched.WaitAsync(TimeSpan.FromSeconds(10));
        (await device.GetAsync($"/firmware/{deviceId}")).StatusCode.Should().Be(HttpStatusCode.OK);
        (await device.GetAsync($"/firmware/{deviceId}")).StatusCode.Should().Be(HttpStatusCode.OK, "now answered from the cache");

        // Revoked by hand, without moving the change number: the cache keeps the key, well past the 4 s a lookup was
        // kept before migration 0040, because the number it watches says nothing changed.
        await using var connection = App.OpenConnection();
        await connection.ExecuteAsync("UPDATE device_api_keys SET revoked_at = now() WHERE key_hash = @Hash", new { Hash = ApiKeyHasher.Hash(key) });
        await Task.Delay(KeyCache.CacheLifetime + TimeSpan.FromSeconds(1));
        (await device.GetAsync($"/firmware/{deviceId}")).StatusCode.Should().Be(HttpStatusCode.OK, "the change number did not move");

        // As another instance revokes: with the change number, in the same transaction.
        await connection.ExecuteAsync("INSERT INTO api_key_epoch AS a (singleton, epoch) VALUES (true, 1) ON CONFLICT (singleton) DO UPDATE SET epoch = a.epoch + 1");
        var clock = Stopwatch.StartNew();
        while ((await device.GetAsync($"/firmware/{deviceId}")).StatusCode != HttpStatusCode.Unauthorized)
        {
            clock.Elapsed.Should().BeLessThan(TimeSpan.FromSeconds(5), "a revoked key must fail on every instance within 5 seconds");
            await Task.Delay(100);
        }
    }

    [Fact]
    public void The_lookup_on_one_server_is_the_per_project_lookup_without_its_two_project_conditions()
    {
        // Derived by removing text: should the per-project statement's layout change, the removal must still happen,
        // or every lookup on one PostgreSQL would ask for a parameter it is not given.
        KeyLookups.FindKeysSql.Should().NotContain("@ProjectId");
        KeyLookups.FindKeysSql.Split('\n').Length.Should().Be(KeyLookups.FindKeysInProjectSql.Split('\n').Length - 2);
    }

    [Fact]
    public async Task A_key_lookup_leaves_no_setting_on_the_pooled_connections()
    {
        var (deviceId, key) = await App.AddDeviceAsync(projectId: 1);
        using var device = App.ClientWithKey(key);
        (await device.GetAsync($"/firmware/{deviceId}")).StatusCode.Should().Be(HttpStatusCode.OK, "looked up in the database");

        // Every idle connection of the pool at once: the one the lookup used is among them.
        var dataSource = App.Services.GetRequiredService<Npgsql.NpgsqlDataSource>();
        var connections = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => dataSource.OpenConnectionAsync().AsTask()));
        try
        {
            foreach (var connection in connections)
            {
                (await connection.ExecuteScalarAsync<string>("SHOW plan_cache_mode")).Should().Be("auto");
            }
        }
        finally
        {
            foreach (var connection in connections)
            {
                await connection.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task A_key_revoked_through_this_instance_fails_at_once_and_every_change_of_a_caller_moves_the_number_others_watch()
    {
        using var admin = App.ClientWithKey(FirmwareManagerApp.MemberKey1);
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey2);
        (await device.GetAsync("/firmware/2")).StatusCode.Should().Be(HttpStatusCode.OK);
        await using var connection = App.OpenConnection();
        async Task<long> ChangeNumberAsync() => await connection.ExecuteScalarAsync<long>("SELECT COALESCE(max(epoch), 0) FROM api_key_epoch");
        var before = await ChangeNumberAsync();

        (await admin.DeleteAsync("/devices/2/keys/2")).StatusCode.Should().Be(HttpStatusCode.NoContent);

        await (await device.GetAsync("/firmware/2")).ShouldBeProblemAsync(HttpStatusCode.Unauthorized);
        (await ChangeNumberAsync()).Should().Be(before + 1, "a key revoked");

        (await admin.DeleteAsync("/devices/1")).StatusCode.Should().Be(HttpStatusCode.NoContent);
        (await ChangeNumberAsync()).Should().Be(before + 2, "a device decommissioned");

        (await admin.DeleteAsync("/members/2")).StatusCode.Should().Be(HttpStatusCode.NoContent);
        (await ChangeNumberAsync()).Should().Be(before + 3, "a member removed");

        (await App.Services.GetRequiredService<Memberships>().IssueAdminKeyAsync("project_1", "member_2@project-1.example", CancellationToken.None))
            .Should().NotBeNull();
        (await ChangeNumberAsync()).Should().Be(before + 4, "a member made admin again (issue-admin-key)");
    }

    [Fact]
    public async Task Concurrent_first_lookups_of_many_keys_are_answered_each_with_its_own_caller()
    {
        var devices = new List<(long DeviceId, string Key)>();
        for (var i = 0; i < 40; i++)
        {
            devices.Add(await App.AddDeviceAsync(projectId: i % 2 + 1));
        }
        var revoked = devices[7];
        await using (var connection = App.OpenConnection())
        {
            await connection.ExecuteAsync("UPDATE device_api_keys SET revoked_at = now() WHERE key_hash = @Hash", new { Hash = ApiKeyHasher.Hash(revoked.Key) });
        }
        App.Services.GetRequiredService<KeyCache>().ForgetAll();

        // Every key unseen, all at once: the misses are looked up in groups, and each answer must reach its own request.
        // A device may read only its own history: a 200 shows that the key was taken for its own device.
        List<(string Key, string Path, HttpStatusCode Expected)> asks =
        [
            .. devices.Select(d => (d.Key, $"/firmware/{d.DeviceId}", d == revoked ? HttpStatusCode.Unauthorized : HttpStatusCode.OK)),
            .. Enumerable.Range(0, 20).Select(i => ($"fmd_unknown_{i}", "/firmware/1", HttpStatusCode.Unauthorized)),
            (FirmwareManagerApp.MemberKey1, "/me", HttpStatusCode.OK),
        ];
        var answers = await Task.WhenAll(asks.Select(async a =>
        {
            using var client = App.ClientWithKey(a.Key);
            return (await client.GetAsync(a.Path)).StatusCode;
        }));

        answers.Should().Equal(asks.Select(a => a.Expected));
    }

    [Fact]
    public async Task A_lookup_that_read_the_key_before_its_revocation_never_caches_it_as_valid_after()
    {
        // Lookups through a link that holds the database's answers: the database reads the key as valid, the
        // revocation commits and this instance forgets its cache, and only then does the lookup's answer arrive.
        await using var slow = await SlowLinkKeysAsync();
        var (proxy, apiKeys, cache) = (slow.Proxy, slow.ApiKeys, slow.Cache);
        var (deviceId, firstKey) = await App.AddDeviceAsync(projectId: 1);
        (await apiKeys.FindCallerAsync(ApiKeyHasher.Hash(firstKey), CancellationToken.None)).Should().NotBeNull("the connection is open and the key valid");

        // The lookup asks for the key's project (api_key_digests), then for the key: the first answer passes and the
        // second is held. How the database's answers split into chunks varies, so an attempt may hold the first
        // answer instead, and the key is then read after the revocation: the property is checked every time, and
        // the race it is about must have happened three times.
        var raced = 0;
        for (var attempt = 0; attempt < 90 && raced < 3; attempt++)
        {
            // A new key each attempt: a revoked key stays revoked (migration 0011).
            var hash = ApiKeyHasher.Hash(await App.AddDeviceKeyAsync(deviceId));
            // How many chunks the first answer takes depends on the engine: 1 to 3 pass, by turns.
            proxy.HoldAnswers(passing: 1 + attempt % 3);
            var racing = apiKeys.FindCallerAsync(hash, CancellationToken.None);
            await EventuallyAsync(() => proxy.HeldAnswers > 0 || racing.IsCompleted, "the lookup's query has run and its answer is held");
            // An answer held across the revocation: the race. (Passed whole, the lookup was over before it.)
            var held = proxy.HeldAnswers > 0;
            // The revocation as Keys.RevokeAsync makes it: committed, then this instance's cache forgotten.
            await using (var connection = App.OpenConnection())
            {
                await connection.ExecuteAsync("UPDATE device_api_keys SET revoked_at = now() WHERE key_hash = @Hash", new { Hash = hash });
            }

            cache.ForgetAll();
            proxy.ReleaseAnswers();
            if (held && await racing is not null)
            {
                raced++; // it read the key before the revocation committed, and was answered after
            }

            (await apiKeys.FindCallerAsync(hash, CancellationToken.None)).Should().BeNull(
                $"attempt {attempt}: the revocation committed and this instance was told so before that answer arrived");
        }

        raced.Should().Be(3, "a lookup read the key as valid, and was answered only after the revocation, three times");
    }

    private static async Task EventuallyAsync(Func<bool> condition, string what)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            clock.Elapsed.Should().BeLessThan(TimeSpan.FromSeconds(20), what);
            await Task.Delay(5);
        }
    }

    /// <summary>An <see cref="ApiKeys"/> of its own (its own cache and lookups), reaching the database through a proxy that can slow its answers.</summary>
    private sealed class SlowLink(TcpProxy proxy, Npgsql.NpgsqlDataSource dataSource, KeyCache cache, KeyLookups lookups, ApiKeys apiKeys) : IAsyncDisposable
    {
        public TcpProxy Proxy => proxy;

        public KeyCache Cache => cache;

        public ApiKeys ApiKeys => apiKeys;

        public async ValueTask DisposeAsync()
        {
            proxy.ReleaseAnswers();
            await lookups.DisposeAsync();
            await cache.DisposeAsync();
            await dataSource.DisposeAsync();
            await proxy.DisposeAsync();
        }
    }

    private static KeyCache OwnCache(Npgsql.NpgsqlDataSource dataSource, int maxEntries = 200_000, TimeSpan? cacheLifetime = null) =>
        new(dataSource, Microsoft.Extensions.Options.Options.Create(new KeyCacheOptions { MaxEntries = maxEntries }),
            Microsoft.Extensions.Logging.Abstractions.NullLogger<KeyCache>.Instance, cacheLifetime);

    private ApiKeys OwnApiKeys(KeyCache cache, KeyLookups lookups, KeyUsage usage) =>
        new(cache, lookups, usage, App.Services.GetRequiredService<FirmwareManager.Api.Observability.FirmwareMetrics>());

    private async Task<SlowLink> SlowLinkKeysAsync()
    {
        var builder = new Npgsql.NpgsqlConnectionStringBuilder(App.ApiConnectionString);
        var proxy = new TcpProxy(builder.Host!, builder.Port);
        proxy.Start();
        builder.Host = "127.0.0.1";
        builder.Port = proxy.Port;
        var dataSource = Npgsql.NpgsqlDataSource.Create(builder.ConnectionString);
        var usage = new KeyUsage(dataSource, Microsoft.Extensions.Options.Options.Create(new FirmwareManager.Api.FirmwareManagerOptions()),
            Microsoft.Extensions.Logging.Abstractions.NullLogger<KeyUsage>.Instance);
        var cache = OwnCache(dataSource);
        var lookups = new KeyLookups(dataSource, App.Services.GetRequiredService<FirmwareManager.Api.Database.DatabaseEngine>());
        return new SlowLink(proxy, dataSource, cache, lookups, OwnApiKeys(cache, lookups, usage));
    }

    [Fact]
    public async Task Lookups_waiting_for_the_database_are_bounded_and_past_the_bound_are_refused_not_queued()
    {
        await using var slow = await SlowLinkKeysAsync();
        (await slow.ApiKeys.FindCallerAsync(ApiKeyHasher.Hash("fmd_warm_up"), CancellationToken.None)).Should().BeNull();
        // The database's answers held: the lookups in flight wait, and every other one queues.
        slow.Proxy.HoldAnswers();

        var lookups = Enumerable.Range(0, KeyLookups.MaxWaiting + 3_000)
            .Select(i => Task.Run(() => slow.ApiKeys.FindCallerAsync(ApiKeyHasher.Hash($"fmd_bound_{i}"), CancellationToken.None)))
            .ToArray();
        await EventuallyAsync(() => lookups.Count(l => l.IsFaulted) >= 1_000, "past the bound, lookups are refused at once");
        slow.Proxy.ReleaseAnswers();
        var outcomes = await Task.WhenAll(lookups.Select(async l =>
        {
            try
            {
                return await l is null ? "unknown" : "known";
            }
            catch (KeyLookupsOverloadedException)
            {
                return "refused";
            }
        }));

        outcomes.Should().Contain("refused", "more lookups than the bound were waiting at once");
        outcomes.Should().NotContain("known");
        outcomes.Count(o => o == "unknown").Should().BeGreaterThanOrEqualTo(KeyLookups.MaxWaiting);
    }

    [Fact]
    public async Task A_flood_of_made_up_keys_does_not_evict_the_valid_keys_of_the_fleet()
    {
        // Answers that outlive the flood, however slow the engine: the bound is what this is about, not expiry.
        // A cache of its own, smaller than the service's, with the same rules.
        const int maxEntries = 5_000;
        var dataSource = App.Services.GetRequiredService<Npgsql.NpgsqlDataSource>();
        await using var cache = OwnCache(dataSource, maxEntries, cacheLifetime: TimeSpan.FromMinutes(10));
        await using var lookups = new KeyLookups(dataSource, App.Services.GetRequiredService<FirmwareManager.Api.Database.DatabaseEngine>());
        var apiKeys = OwnApiKeys(cache, lookups, App.Services.GetRequiredService<KeyUsage>());
        // The first read of the change number forgets whatever was cached before it.
        await cache.FirstWatched.WaitAsync(TimeSpan.FromSeconds(10));
        var (_, key) = await App.AddDeviceAsync(projectId: 1);
        var hash = ApiKeyHasher.Hash(key);
        (await apiKeys.FindCallerAsync(hash, CancellationToken.None)).Should().NotBeNull();
        cache.HoldsAnswerFor(hash).Should().BeTrue();

        // More made-up keys than the cache holds, in groups as concurrent requests would send them.
        var madeUp = Enumerable.Range(0, maxEntries + 5_000).Select(i => ApiKeyHasher.Hash($"fmd_flood_{i}")).ToArray();
        foreach (var chunk in madeUp.Chunk(5_000))
        {
            var answers = await Task.WhenAll(chunk.Select(h => apiKeys.FindCallerAsync(h, CancellationToken.None)));
            answers.Should().OnlyContain(c => c == null);
        }

        cache.HoldsAnswerFor(hash).Should().BeTrue("a flood of unknown keys never evicts a valid key's answer");
        cache.HoldsAnswerFor(madeUp[^1]).Should().BeFalse("past the bound, no more unknown keys are kept while none has expired");
    }

    [Fact]
    public async Task A_full_cache_walks_its_entries_once_an_interval_not_at_every_store_and_keeps_new_answers_once_old_ones_expire()
    {
        // Unknown keys' answers kept 300 ms: the cache fills and overflows well within that, and they have all
        // expired by the next sweep.
        const int maxEntries = 1_000;
        var dataSource = App.Services.GetRequiredService<Npgsql.NpgsqlDataSource>();
        await using var cache = OwnCache(dataSource, maxEntries, cacheLifetime: TimeSpan.FromMilliseconds(300));
        await cache.FirstWatched.WaitAsync(TimeSpan.FromSeconds(10));
        var digests = Enumerable.Range(0, 3 * maxEntries).Select(i => new KeyDigest(ApiKeyHasher.Hash($"fmd_full_{i}"))).ToArray();

        // Full, then twice as many stores again: each would walk the whole cache if a full cache swept at every store
        // (a fleet larger than the cache keeps it full of answers still valid, and every miss stores one).
        var started = Stopwatch.StartNew();
        foreach (var digest in digests)
        {
            cache.Store(digest, null, null, cache.Generation);
        }

        var (sweeps, interval) = cache.UnknownKeysSweeps;
        sweeps.Should().BeGreaterThan(0, "the stores past the bound found the cache full")
            .And.BeLessThanOrEqualTo(1 + (int)(started.Elapsed / interval), "a full cache sweeps at most once an interval");
        cache.HoldsAnswerFor(ApiKeyHasher.Hash($"fmd_full_{(3 * maxEntries) - 1}")).Should().BeFalse("a full cache keeps nothing new between sweeps");

        // Once the answers have expired and the interval has passed, the next store sweeps them out and is kept.
        await Task.Delay(interval + TimeSpan.FromMilliseconds(400));
        var fresh = ApiKeyHasher.Hash("fmd_full_fresh");
        cache.Store(new KeyDigest(fresh), null, null, cache.Generation);
        cache.UnknownKeysSweeps.Sweeps.Should().Be(sweeps + 1, "the store found the cache full and the interval passed");
        cache.HoldsAnswerFor(fresh).Should().BeTrue("the sweep dropped the expired answers, making room");
    }
}

public sealed class HealthFloodTests(FirmwareManagerApp app) : ApiTest(app)
{
    [Fact]
    public async Task A_flood_of_health_checks_costs_the_database_one_query_a_second_not_one_a_request()
    {
        var check = App.Services.GetRequiredService<FirmwareManager.Api.Database.DatabaseHealthCheck>();
        using var anonymous = App.CreateClient();
        var before = check.Queries;
        var clock = Stopwatch.StartNew();

        var answers = await Task.WhenAll(Enumerable.Range(0, 2000).Select(_ => anonymous.GetAsync("/health")));

        answers.Should().OnlyContain(a => a.StatusCode == HttpStatusCode.OK);
        (check.Queries - before).Should().BeLessThanOrEqualTo((int)clock.Elapsed.TotalSeconds + 2);
    }
}
