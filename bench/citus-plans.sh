#!/usr/bin/env bash
# The distributed plan of every statement of each hot path on Citus: bench/citus-plans.sh
# Starts a throwaway Citus cluster (a coordinator and two workers) that logs every statement with its parameters,
# the API with the demo data on it, sends each hot path's requests with a fresh key cache, then explains each
# statement the API ran for them, with its parameters, and writes the plans to docs/citus-plans.md (python3 reads
# the log). Each should be one task on one shard ("Task Count: 1");
# FirmwareManager.Tests/ScaleOut/HotPathsOnOneShardTests fails when one is not.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

build_api
mkdir -p "$out"
start_citus -c log_statement=all
coordinator_log="$citus_dir/coordinator/postgres.log"
api_port=$(free_port 18090)
# Only the hot paths' statements: the two background scans that read every shard by design (docs/scale-out.md: the
# projection's discovery of projects with events waiting, the webhook sender's question which webhooks have
# deliveries due) would otherwise land in whichever section runs when their timer fires. The sender is off (nothing
# here is sent), and the discovery runs at the start and then once a minute, after the sections below are done (a
# report's own project is projected at once, without it, so the projection's step is in the sections).
start_api "$api_port" "$out/citus-plans-api.log" FirmwareManager__DemoData=true \
  FirmwareManager__Webhooks__SendDeliveries=false FirmwareManager__Projections__DiscoveryIntervalMs=60000
base="http://127.0.0.1:$api_port"
device1=super_secret_key_1 device3=super_secret_key_3 member1=super_secret_member_key_1

# mark NAME: a line in the coordinator's log that starts the hot path NAME's section.
mark() { psql_fm -c "DO \$\$ BEGIN RAISE LOG 'hot path: $1'; END \$\$"; sleep 0.3; }
call() { local key=$1; shift; curl -fsS -o /dev/null -H "api_key: $key" -H 'Content-Type: application/json' "$@"; }
at=2026-11-01T00:00:00Z

mark "a report (first request with a device key: the key lookup too)"
call "$device1" -d "{\"firmware\":\"2.0.0\",\"status\":\"installed\",\"timestamp\":\"$at\"}" "$base/firmware/1"
mark "a report from a device of another project"
call "$device3" -d "{\"firmware\":\"2.0.0\",\"status\":\"installed\",\"timestamp\":\"$at\"}" "$base/firmware/3"
mark "a batch"
call "$device1" -d "[{\"firmware\":\"2.0.1\",\"status\":\"downloading\",\"timestamp\":\"2026-11-01T00:01:00Z\"},{\"firmware\":\"2.0.1\",\"status\":\"updated\",\"timestamp\":\"2026-11-01T00:02:00Z\"}]" "$base/firmware/1/batch"
mark "history (first request with a member key: the key lookup too)"
call "$member1" "$base/firmware/1?limit=2"
mark "history, the next page"
next=$(curl -fsS -D - -o /dev/null -H "api_key: $member1" "$base/firmware/1?limit=2" | sed -nE 's/^Link: <([^>]*)>.*/\1/ip' | tr -d '\r')
call "$member1" "$base$next"
mark "the feed, polling after a position"
call "$member1" "$base/events?after=beginning&limit=100"
mark "devices"
call "$member1" "$base/devices?limit=100"
mark "devices on a version"
call "$member1" "$base/devices?firmware=2.0.1"
mark "firmware versions"
call "$member1" "$base/firmware-versions"
mark "end"
cp "$coordinator_log" "$out/citus-plans-coordinator.log"

# The API's statements, by section, from the coordinator's log, each explained again with its parameters written in
# as literals: Citus plans each execution with its values, so that is the plan the API's execution got. (Not
# auto_explain: Citus cannot explain an INSERT ... SELECT it runs through the coordinator without its parameters,
# which auto_explain does not pass on, and the request then fails.)
PGHOST=127.0.0.1 PGPORT=$pg_port PGUSER=postgres PGDATABASE=fm PSQL="$pg_bin/psql" \
  CITUS_VERSION=$(psql_fm -Atc "SELECT extversion FROM pg_extension WHERE extname = 'citus'") \
  PG_VERSION=$(psql_fm -Atc "SHOW server_version") \
  python3 - "$out/citus-plans-coordinator.log" > docs/citus-plans.md <<'PY'
import os, re, subprocess, sys, datetime
entry = re.compile(r'^\d{4}-\d\d-\d\d [^ ]+ [^ ]+ \[\d+\] (\w+):  (.*)$')
records, current = [], None
for line in open(sys.argv[1], encoding='utf-8', errors='replace'):
    line = line.rstrip('\n')
    m = entry.match(line)
    if m:
        current = [m.group(1), m.group(2)]
        records.append(current)
    elif current is not None:
        current[1] += '\n' + (line[1:] if line.startswith('\t') else line)
print(f"""# The hot paths' distributed plans on Citus

Written by `bash bench/citus-plans.sh` on {datetime.date.today()} (Citus {os.environ['CITUS_VERSION']}, PostgreSQL
{os.environ['PG_VERSION'].split()[0]}, a coordinator and two workers on loopback, the demo data; docs/scale-out.md explains
them). The coordinator logged every statement the API ran while it answered each hot path's requests, with its
parameters; each is shown once per section with the plan Citus makes for it with those values. "Task Count: 1"
is one task on one shard; an INSERT ... SELECT shown as "Citus INSERT ... SELECT" with "pull to coordinator"
would move its rows through the coordinator, and commit in two phases (none does).
`FirmwareManager.Tests/ScaleOut/HotPathsOnOneShardTests` fails when a statement of these paths needs more than
one task, and `bench/citus-ops.sh` when ingest makes a two-phase commit. The projection steps the reports cause are
in the sections (a step may fall in the section after its report's). Not here: the two background scans that read every shard by design (the projection's discovery of projects
with events waiting, the webhook sender's question which webhooks have deliveries due; docs/scale-out.md), kept out
of the sections by the script (the sender off, the discovery once a minute).""")
section, seen = None, set()
for i, (level, text) in enumerate(records):
    if level == 'LOG' and text.startswith('hot path: '):
        section = text[len('hot path: '):]
        if section != 'end':
            print(f"\n## {section}")
        continue
    if section in (None, 'end') or level != 'LOG':
        continue
    m = re.match(r'(?:execute [^:]*|statement): (.*)', text, re.S)
    if not m:
        continue
    sql = m.group(1).strip()
    if re.match(r'(BEGIN|COMMIT|ROLLBACK|SET |DO |DISCARD|SELECT 1$)', sql) or 'RAISE LOG' in sql:
        continue
    params = {}
    if i + 1 < len(records) and records[i + 1][0] == 'DETAIL' and records[i + 1][1].lower().startswith('parameters: '):
        params = dict(re.findall(r"\$(\d+) = ('(?:[^']|'')*'|NULL)", records[i + 1][1]))
    literal = re.sub(r'\$(\d+)', lambda p: params.get(p.group(1), p.group(0)), sql)
    if (section, sql) in seen:
        continue
    seen.add((section, sql))
    plan = subprocess.run([os.environ['PSQL'], '-X', '-A', '-t', '-c', 'EXPLAIN (COSTS OFF) ' + literal],
                          capture_output=True, text=True)
    print("\n```sql\n" + sql + "\n```\n")
    if params:
        print("Parameters: " + ", ".join(f"${k} = {v}" for k, v in sorted(params.items(), key=lambda kv: int(kv[0]))) + "\n")
    print("```\n" + (plan.stdout.strip() or plan.stderr.strip()) + "\n```")
PY
tasks=$(grep -cE '^ *Task Count:' docs/citus-plans.md || true)
multi=$(grep -E '^ *Task Count:' docs/citus-plans.md | grep -vc 'Task Count: 1$' || true)
subplans=$(grep -c 'Distributed Subplan' docs/citus-plans.md || true)
pulled=$(grep -c 'INSERT/SELECT method: pull to coordinator' docs/citus-plans.md || true)
log "docs/citus-plans.md: $tasks distributed scans, $multi of them over more than one shard, $subplans subplans, $pulled through the coordinator"
[ "$tasks" -gt 0 ] && [ "$multi" -eq 0 ] && [ "$subplans" -eq 0 ] && [ "$pulled" -eq 0 ]
