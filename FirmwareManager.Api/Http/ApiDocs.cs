using Microsoft.OpenApi;
using Scalar.AspNetCore;

namespace FirmwareManager.Api.Http;

/// <summary>The OpenAPI document at <c>/openapi/v1.json</c> and interactive docs (Scalar) at <c>/docs</c>.</summary>
public static class ApiDocs
{
    public const string DocsPath = "/docs";

    private const string ApiKeyScheme = "api_key";
    private const string BearerScheme = "bearer";

    public static IServiceCollection AddApiDocs(this IServiceCollection services) =>
        services.AddOpenApi(options =>
        {
            options.AddDocumentTransformer((document, _, _) =>
            {
                document.Info = new OpenApiInfo
                {
                    Title = "FirmwareManager",
                    Version = "v1",
                    Description =
                        "Devices report firmware update events with their own API key; project members read what happened on every " +
                        "device. Send the key in the api_key header (also X-Api-Key, or Authorization: Bearer). Errors are RFC 9457 " +
                        "problem details. Lists are plain JSON arrays; when more remain, a Link header with rel=\"next\" carries the next page.",
                };
                document.Components ??= new OpenApiComponents();
                document.Components.SecuritySchemes ??= new Dictionary<string, IOpenApiSecurityScheme>();
                document.Components.SecuritySchemes[ApiKeyScheme] = new OpenApiSecurityScheme
                {
                    Type = SecuritySchemeType.ApiKey,
                    In = ParameterLocation.Header,
                    Name = "api_key",
                    Description = "A device key or a project member's key. X-Api-Key works too.",
                };
                document.Components.SecuritySchemes[BearerScheme] = new OpenApiSecurityScheme
                {
                    Type = SecuritySchemeType.Http,
                    Scheme = "bearer",
                    Description = "The same key as Authorization: Bearer <key>.",
                };
                return Task.CompletedTask;
            });
            // A property the answer leaves out when it has no value (JsonIgnore WhenWritingNull) is not required,
            // whatever the record's constructor says: a client strict about required fields would reject ordinary answers.
            options.AddSchemaTransformer((schema, context, _) =>
            {
                if (schema.Required is { Count: > 0 } required)
                {
                    foreach (var property in context.JsonTypeInfo.Properties.Where(LeftOutWhenEmpty))
                    {
                        required.Remove(property.Name);
                    }
                }

                return Task.CompletedTask;
            });
            options.AddOperationTransformer((operation, context, _) =>
            {
                var anonymous = context.Description.ActionDescriptor.EndpointMetadata
                    .OfType<Microsoft.AspNetCore.Authorization.IAllowAnonymous>().Any();
                if (!anonymous)
                {
                    operation.Security =
                    [
                        new OpenApiSecurityRequirement { [new OpenApiSecuritySchemeReference(ApiKeyScheme, context.Document)] = [] },
                        new OpenApiSecurityRequirement { [new OpenApiSecuritySchemeReference(BearerScheme, context.Document)] = [] },
                    ];
                }

                return Task.CompletedTask;
            });
        });

    public static WebApplication MapApiDocs(this WebApplication app)
    {
        app.MapOpenApi().AllowAnonymous();
        app.MapScalarApiReference(DocsPath, options => options
            .WithTitle("FirmwareManager API")
            .WithOpenApiRoutePattern("/openapi/{documentName}.json")).AllowAnonymous();
        return app;
    }

    private static bool LeftOutWhenEmpty(System.Text.Json.Serialization.Metadata.JsonPropertyInfo property) =>
        property.AttributeProvider?.GetCustomAttributes(typeof(System.Text.Json.Serialization.JsonIgnoreAttribute), inherit: true)
            .OfType<System.Text.Json.Serialization.JsonIgnoreAttribute>()
            .Any(a => a.Condition is System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull
                or System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingDefault) == true;

    /// <summary>The problem responses every endpoint that takes a key can give.</summary>
    public static TBuilder WithKeyProblems<TBuilder>(this TBuilder builder)
        where TBuilder : IEndpointConventionBuilder =>
        builder
            .ProducesProblem(StatusCodes.Status401Unauthorized)
            .ProducesProblem(StatusCodes.Status403Forbidden)
            .ProducesProblem(StatusCodes.Status503ServiceUnavailable);
}
