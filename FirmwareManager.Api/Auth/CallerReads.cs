using FirmwareManager.Api.Database;
using Npgsql;

namespace FirmwareManager.Api.Auth;

/// <summary>Where a caller's reads may run (<see cref="ReadRouting"/>): devices on the primary, members from their own last write on.</summary>
public static class CallerReads
{
    /// <summary>The read context of <paramref name="caller"/>.</summary>
    public static ReadContext For(this ReadRouting reads, Caller caller) =>
        caller.Kind == CallerKind.Device ? reads.ForDevice() : reads.ForMemberKey(caller.KeyId);

    /// <summary>
    /// With a standby: a member's successful write (any method but GET, HEAD and OPTIONS) records where the primary's
    /// WAL stood before the answer goes out, so that the member's reads through this instance are served only by
    /// a node that has it. After authentication; without a standby it adds nothing.
    /// </summary>
    public static IApplicationBuilder UseReadYourWrites(this IApplicationBuilder app)
    {
        var routing = app.ApplicationServices.GetRequiredService<ReadRouting>();
        if (!routing.HasStandby)
        {
            return app;
        }

        var logger = app.ApplicationServices.GetRequiredService<ILogger<ReadRouting>>();
        return app.Use(async (context, next) =>
        {
            var method = context.Request.Method;
            if (context.User.Identity?.IsAuthenticated == true && !HttpMethods.IsGet(method) && !HttpMethods.IsHead(method) &&
                !HttpMethods.IsOptions(method) && Caller.From(context.User) is { Kind: CallerKind.Member } caller)
            {
                context.Response.OnStarting(async () =>
                {
                    if (context.Response.StatusCode >= 400)
                    {
                        return;
                    }

                    try
                    {
                        await routing.RememberWriteAsync(caller.KeyId, context.RequestAborted);
                    }
                    catch (Exception e) when (e is NpgsqlException or TimeoutException or OperationCanceledException)
                    {
                        // The write is done; only its reads may now come from a standby that lacks it.
                        logger.LogWarning("Could not read the primary's WAL position after a write: {Reason}", e.Message);
                    }
                });
            }

            await next();
        });
    }
}
