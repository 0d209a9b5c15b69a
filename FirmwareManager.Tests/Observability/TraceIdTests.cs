using System.Net;
using FirmwareManager.Tests.Infrastructure;

namespace FirmwareManager.Tests.Observability;

public sealed class TraceIdTests(FirmwareManagerApp app) : ApiTest(app)
{
    [Fact]
    public async Task A_problem_responses_trace_id_finds_the_requests_log_line()
    {
        using var device = App.ClientWithKey(FirmwareManagerApp.DeviceKey1);

        var problem = await (await device.PostRawAsync("/firmware/1", """{"firmware": "1.0", "status": "updated"}"""))
            .ShouldBeProblemAsync(HttpStatusCode.BadRequest);

        var traceId = problem.GetProperty("trace_id").GetString();
        traceId.Should().MatchRegex("^[0-9a-f]{32}$");
        App.Logs.Events
            .Where(e => e.TraceId?.ToHexString() == traceId)
            .Select(e => e.RenderMessage(System.Globalization.CultureInfo.InvariantCulture))
            .Should().Contain(line => line.Contains("responded 400", StringComparison.Ordinal));
    }
}
