// What checking a firmware version costs: the Semver package (strict), as the service does it now, against the
// source-generated regular expression of semver.org's grammar it replaced. One thread, 2,000,000 checks a round.
using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Semver;

string[] versions =
[
    "1.4.2", "2.0.0-rc.1+build.5", "10.20.30", "1.0.0-alpha.beta.1", "3.0.0-x-y.z+001", "1.2", "v1.2.3", "01.2.3", "1.2.3-", "2.0.0-rc.1",
];
const int Checks = 2_000_000;
var grammar = new Regex(
    @"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)" +
    @"(?:-((?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?" +
    @"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?\z",
    RegexOptions.CultureInvariant | RegexOptions.ExplicitCapture | RegexOptions.Compiled);

for (var round = 1; round <= 3; round++)
{
    Measure("regex ", v => v.Length <= 128 && grammar.IsMatch(v));
    Measure("Semver", v => v.Length <= 128 && SemVersion.TryParse(v, SemVersionStyles.Strict, out _));
}

void Measure(string name, Func<string, bool> isValid)
{
    var valid = 0;
    var allocated = GC.GetAllocatedBytesForCurrentThread();
    var clock = Stopwatch.StartNew();
    for (var i = 0; i < Checks; i++)
    {
        if (isValid(versions[i % versions.Length]))
        {
            valid++;
        }
    }

    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"{name}: {clock.Elapsed.TotalNanoseconds / Checks:F0} ns and {(GC.GetAllocatedBytesForCurrentThread() - allocated) / Checks} bytes a check ({valid} valid)"));
}
