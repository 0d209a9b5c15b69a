#!/usr/bin/env bash
# A projection step's statements on a large project: bench/step-plans.sh [--devices N] [--step N] [--generic]
# One fresh cluster (migrated by the API, which is then stopped, so that nothing projects); project 1 holds N devices
# (100,000) with 10 events each (bench/provision.sql), analyzed; then a step's worth of new events (2,000), one per
# device picked at random, numbered past the statistics as ingest numbers them. Runs EXPLAIN ANALYZE of every statement
# of docs/projection-statements.sql for that step, in order in one transaction rolled back (as the step runs them:
# the first statements write the step's changes the others read), and prints each one's time (the second of two runs).
# --generic: each statement prepared and run with the generic plan, as the step runs them on one PostgreSQL
# (plan_cache_mode = force_generic_plan, ProjectionSteps.cs); otherwise planned for the step's values.
# Writes the plans to bench/out/step-plans/plans.txt. What it found is in docs/performance.md ("Exports", the
# projection step's plan).
set -euo pipefail
cd "$(dirname "$0")/.."
devices=100000; step=2000; generic=0
while [ $# -gt 0 ]; do
  case $1 in
    --devices) devices=$2; shift 2 ;;
    --step) step=$2; shift 2 ;;
    --generic) generic=1; shift ;;
    *) echo "usage: bench/step-plans.sh [--devices N] [--step N] [--generic]" >&2; exit 2 ;;
  esac
done
source bench/lib.sh
raw="$out/step-plans"
mkdir -p "$raw"
trap cleanup EXIT

build_api
start_cluster -c shared_buffers=1GB
api_port=$(free_port 18790)
start_api "$api_port" "$raw/api.log"
kill "$api_pid"; wait "$api_pid" 2>/dev/null || true
log "provisioning $devices devices with 10 events each"
psql_fm -v devices="$devices" -v big="$devices" -v events_per_device=10 -f bench/provision.sql > /dev/null
psql_fm -c "VACUUM ANALYZE"
psql_fm -c "INSERT INTO firmware_events (device_id, project_id, firmware, status, occurred_at, received_at, arrival)
            SELECT id, project_id, '2.0.0', (ARRAY['installed', 'updated', 'failed'])[1 + id % 3], now(), now(), 1000 + row_number() OVER (ORDER BY id)
            FROM (SELECT id, project_id FROM devices WHERE project_id = 1 ORDER BY random() LIMIT $step) AS picked"
python3 - "$step" "$generic" > "$raw/statements.sql" <<'PY'
import re, sys
step, generic = int(sys.argv[1]), sys.argv[2] == '1'
values = [('@ProjectId', '1'), ('@FirstArrival', '1001'), ('@LastArrival', str(1000 + step)),
          ('@EarliestOccurredAt', "(now() - interval '1 hour')"), ('@LatestOccurredAt', "(now() + interval '1 hour')"),
          ('@StepTime', 'now()')]
text = open('docs/projection-statements.sql').read()
# One transaction, the statements in the step's order: those after the first read the changes it wrote (StepChanges).
print("BEGIN;" + ("\nSET LOCAL plan_cache_mode = force_generic_plan;" if generic else ""))
for part in re.split(r'\n(?=-- \d+ )', text)[1:]:
    head = part.splitlines()[0]
    body = '\n'.join(l for l in part.splitlines() if not l.startswith('--')).strip().rstrip(';')
    if generic:
        for number, (name, _) in enumerate(values, 1):
            body = body.replace(name, f'${number}')
        print(f"\\echo {head}\n"
              f"PREPARE step(bigint, bigint, bigint, timestamptz, timestamptz, timestamptz) AS {body};\n"
              f"EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) EXECUTE step({', '.join(v for _, v in values)});\nDEALLOCATE step;")
    else:
        for name, value in values:
            body = body.replace(name, value)
        print(f"\\echo {head}\nEXPLAIN (ANALYZE, BUFFERS, TIMING OFF) {body};")
print("ROLLBACK;")
PY
# Twice in one session, and the second time reported: the first statement of a session pays for loading the catalog
# and compiling functions, which a pooled connection of the service has done long before.
psql_fm -c "SET statement_timeout = '120s'" -f "$raw/statements.sql" -f "$raw/statements.sql" > "$raw/plans.txt" 2>&1 || true
awk '/^-- [0-9]+ / { names[++n] = $2 " " $3 } /Execution Time/ { times[n] = $3 }
     END { for (i = n / 2 + 1; i <= n; i++) printf "%-24s %s ms\n", names[i], times[i] }' "$raw/plans.txt"
