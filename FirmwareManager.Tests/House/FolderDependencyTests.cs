using Mono.Cecil;

namespace FirmwareManager.Tests.House;

/// <summary>
/// The service's folders (one namespace each) depend one way: a folder may use the shared ones and features below it,
/// never one that uses it. Read from the compiled assembly (every type a type names in its signatures and its method
/// bodies), so that nothing written anywhere escapes it. Constants are the exception: the compiler copies their values,
/// so a statement built from another folder's constant leaves no reference (they are read as text by a reader, not
/// called).
/// </summary>
public sealed class FolderDependencyTests
{
    private const string Root = "FirmwareManager.Api";

    [Fact]
    public void No_folder_of_the_service_depends_on_a_folder_that_depends_on_it()
    {
        var uses = NamespaceUses();
        uses.Should().ContainKey($"{Root}.Firmware", "the graph is read from the assembly");
        uses[$"{Root}.Firmware"].Should().ContainKey($"{Root}.Database", "Firmware's statements run through Database's helpers");

        var cycles = StronglyConnected(uses.Keys, n => uses[n].Keys).Where(c => c.Count > 1).ToList();
        cycles.Should().BeEmpty(string.Join("\n", cycles.Select(cycle =>
            "a cycle between " + string.Join(", ", cycle.Select(Short)) + ":\n" + string.Join("\n",
                from user in cycle
                from used in cycle
                where uses[user].ContainsKey(used)
                select $"  {Short(user)} -> {Short(used)}: {uses[user][used]}"))));
    }

    [Fact]
    public void The_shared_folders_use_no_feature()
    {
        var uses = NamespaceUses();
        foreach (var (shared, allowed) in new[] { ("Observability", Array.Empty<string>()), ("Database", ["Observability"]), ("Http", ["Database", "Observability"]), ("Upkeep", ["Database"]) })
        {
            uses[$"{Root}.{shared}"].Where(use => !allowed.Contains(Short(use.Key))).Select(use => $"{Short(use.Key)}: {use.Value}")
                .Should().BeEmpty($"{shared} is shared: the features use it, it uses {(allowed.Length == 0 ? "no other folder" : string.Join(" and ", allowed) + " only")}");
        }
    }

    private static string Short(string ns) => ns.Length > Root.Length ? ns[(Root.Length + 1)..] : ns;

    /// <summary>For each namespace of the service, the namespaces its types use, each with one example (user -> used).</summary>
    private static Dictionary<string, Dictionary<string, string>> NamespaceUses()
    {
        using var module = ModuleDefinition.ReadModule(typeof(Program).Assembly.Location);
        var uses = new Dictionary<string, Dictionary<string, string>>();
        foreach (var type in module.GetTypes())
        {
            var from = NamespaceOf(type);
            if (!from.StartsWith(Root + ".", StringComparison.Ordinal))
            {
                continue;
            }

            var targets = uses.TryGetValue(from, out var existing) ? existing : uses[from] = [];
            foreach (var used in UsedTypes(type))
            {
                foreach (var to in NamespacesOf(used))
                {
                    if (to != from && to.StartsWith(Root + ".", StringComparison.Ordinal))
                    {
                        targets.TryAdd(to, $"{Outermost(type).Name} uses {Outermost(used).Name}");
                    }
                }
            }
        }

        return uses;
    }

    private static IEnumerable<TypeReference> UsedTypes(TypeDefinition type)
    {
        if (type.BaseType is not null)
        {
            yield return type.BaseType;
        }

        foreach (var implemented in type.Interfaces)
        {
            yield return implemented.InterfaceType;
        }

        foreach (var field in type.Fields)
        {
            yield return field.FieldType;
        }

        foreach (var property in type.Properties)
        {
            yield return property.PropertyType;
        }

        foreach (var method in type.Methods)
        {
            yield return method.ReturnType;
            foreach (var parameter in method.Parameters)
            {
                yield return parameter.ParameterType;
            }

            if (!method.HasBody)
            {
                continue;
            }

            foreach (var variable in method.Body.Variables)
            {
                yield return variable.VariableType;
            }

            foreach (var instruction in method.Body.Instructions)
            {
                switch (instruction.Operand)
                {
                    case TypeReference used:
                        yield return used;
                        break;
                    case MethodReference called:
                        yield return called.DeclaringType;
                        yield return called.ReturnType;
                        foreach (var parameter in called.Parameters)
                        {
                            yield return parameter.ParameterType;
                        }

                        if (called is GenericInstanceMethod generic)
                        {
                            foreach (var argument in generic.GenericArguments)
                            {
                                yield return argument;
                            }
                        }

                        break;
                    case FieldReference field:
                        yield return field.DeclaringType;
                        yield return field.FieldType;
                        break;
                }
            }
        }
    }

    // A type's namespaces: its own (a nested type's is its outermost type's), and those of its generic arguments and elements.
    private static IEnumerable<string> NamespacesOf(TypeReference type)
    {
        switch (type)
        {
            case GenericInstanceType generic:
                foreach (var ns in NamespacesOf(generic.ElementType).Concat(generic.GenericArguments.SelectMany(NamespacesOf)))
                {
                    yield return ns;
                }

                break;
            case TypeSpecification specification:
                foreach (var ns in NamespacesOf(specification.ElementType))
                {
                    yield return ns;
                }

                break;
            case GenericParameter:
                break;
            default:
                yield return NamespaceOf(type);
                break;
        }
    }

    private static string NamespaceOf(TypeReference type) => Outermost(type).Namespace;

    private static TypeReference Outermost(TypeReference type)
    {
        while (type.DeclaringType is not null)
        {
            type = type.DeclaringType;
        }

        return type;
    }

    /// <summary>Tarjan's strongly connected components: each cycle of the graph as the set of its nodes.</summary>
    private static List<List<string>> StronglyConnected(IEnumerable<string> nodes, Func<string, IEnumerable<string>> next)
    {
        var index = new Dictionary<string, int>();
        var low = new Dictionary<string, int>();
        var stack = new Stack<string>();
        var onStack = new HashSet<string>();
        var components = new List<List<string>>();

        void Visit(string node)
        {
            index[node] = low[node] = index.Count;
            stack.Push(node);
            onStack.Add(node);
            foreach (var to in next(node))
            {
                if (!index.TryGetValue(to, out var seen))
                {
                    Visit(to);
                    low[node] = Math.Min(low[node], low[to]);
                }
                else if (onStack.Contains(to))
                {
                    low[node] = Math.Min(low[node], seen);
                }
            }

            if (low[node] == index[node])
            {
                var component = new List<string>();
                string member;
                do
                {
                    member = stack.Pop();
                    onStack.Remove(member);
                    component.Add(member);
                }
                while (member != node);
                components.Add(component);
            }
        }

        foreach (var node in nodes.Order(StringComparer.Ordinal))
        {
            if (!index.ContainsKey(node))
            {
                Visit(node);
            }
        }

        return components;
    }
}
