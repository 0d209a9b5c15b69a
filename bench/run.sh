#!/usr/bin/env bash
# The benchmark: bench/run.sh [--quick] [--engine citus] [--replica]   (docs/performance.md explains the figures)
# Builds the API in Release, starts a fresh PostgreSQL cluster and the API on loopback, provisions a fleet
# (full: 1,000,000 devices in 10 projects, one of 200,000, and 10,000,000 events), then runs each phase for a
# bounded time with wrk and pgbench and writes bench/out/results.md (and, in the full profile, the results
# section of docs/performance.md). --quick: a small fleet and 3-second phases, for CI: it checks only that every
# phase completes and that no acknowledged event is lost, never a timing. --engine citus: the same on a Citus
# coordinator and two workers on this machine (bench/citus-cluster.sh), results in bench/out/results-citus.md
# (docs/scale-out.md reads them; docs/performance.md is left as it is). --replica: only members' history reads, on
# the primary alone and then with a hot standby beside it (the API given both hosts), in bench/out/results-replica.md.
# --webhook: only ingest, without a webhook and then with one subscribed to every event of every project (a local
# receiver, bench/webhook-receiver.py), then again with a second webhook in every project whose receiver never
# answers, in bench/out/results-webhook.md; it checks that every event stored got its delivery to the live receiver
# and that every such delivery arrives, and reports their lag.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=full
engine=postgresql
replica=0
webhook=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) profile=quick ;;
    --engine) engine=${2:?--engine postgresql|citus}; shift ;;
    --replica) replica=1 ;;
    --webhook) webhook=1 ;;
    *) echo "usage: bench/run.sh [--quick] [--engine postgresql|citus] [--replica | --webhook]" >&2; exit 2 ;;
  esac
  shift
done
if [ "$profile" = quick ]; then
  devices=20000; big=4000; events_per_device=5; duration=3; sample=5000; warmup=1; warm_max=3
  enroll_calls=2; enroll_per_call=5000
else
  devices=1000000; big=200000; events_per_device=10; duration=20; sample=100000; warmup=5; warm_max=60
  enroll_calls=10; enroll_per_call=100000
fi
source bench/lib.sh
raw="$out/raw"
mkdir -p "$raw"
rm -f "$raw"/*

build_api
# pg_stat_statements: each phase's statements, with their planning, go to raw/PHASE-statements.txt (on Citus, the
# coordinator's).
settings=(-c shared_buffers=2GB -c max_wal_size=8GB -c checkpoint_timeout=30min -c pg_stat_statements.track_planning=on)
if [ "$engine" = citus ]; then
  start_citus "${settings[@]}" -c shared_preload_libraries=citus,pg_stat_statements
  # The CPU of every node's processes counts as PostgreSQL's.
  pg_pids() { for f in "$citus_dir"/*/data/postmaster.pid; do p=$(head -n 1 "$f"); echo "$p" $(pgrep -P "$p" || true); done; }
  checkpoint() { for node in "$citus_dir"/*/port; do "$pg_bin/psql" -h 127.0.0.1 -p "$(cat "$node")" -U postgres -d fm -X -qc "CHECKPOINT"; done; }
else
  start_cluster "${settings[@]}" -c shared_preload_libraries=pg_stat_statements
  checkpoint() { psql_fm -c "CHECKPOINT"; }
fi
api_port=$(free_port 18080)
log "starting the API on 127.0.0.1:$api_port (empty database: it applies the migrations)"
start_ns=$(date +%s%N)
# One log line per request would measure the console; the request log is kept at Warning here. Member keys' rate
# limit is off: the fleet phases send thousands of requests a second with one member key. Device keys keep theirs.
start_api "$api_port" "$raw/api.log" "Serilog__MinimumLevel__Override__Serilog.AspNetCore.RequestLoggingMiddleware=Warning" \
  FirmwareManager__RateLimits__Member__PermitsPerSecond=0
startup_s=$(awk -v a="$start_ns" -v b="$(date +%s%N)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
log "healthy after ${startup_s} s; provisioning $devices devices and $((devices * events_per_device)) events"
prov_start=$(date +%s)
psql_fm -v devices="$devices" -v big="$big" -v events_per_device="$events_per_device" -f bench/provision.sql > /dev/null
psql_fm -c "VACUUM ANALYZE"
# Loading 10 million rows leaves gigabytes of dirty buffers: without a checkpoint here, the first phase would
# measure PostgreSQL writing them out (the ingest phase of the first group-commit run: 1,124 req/s with the CPU
# two-thirds idle). The phases measure the service, from a checkpointed database, as pgbench's own runs do.
checkpoint
psql_fm -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
# pgbench's ceiling table is distributed like the events it stands for.
[ "$engine" = citus ] && psql_fm -c "SELECT create_distributed_table('bench_events', 'project_id', colocate_with => 'firmware_events')" >/dev/null
psql_fm -c "\\copy (SELECT id, 'fmd_b' || md5(id::text) FROM devices ORDER BY id) TO '$out/devices.csv' CSV"
psql_fm -c "\\copy (SELECT id, 'fmd_b' || md5(id::text) FROM devices ORDER BY random() LIMIT $sample) TO '$out/sample.csv' CSV"
provision_s=$(( $(date +%s) - prov_start ))
log "provisioned in ${provision_s} s (ids and keys: bench/out/devices.csv)"
member_key=fmm_bench_admin_1

results="$out/results.md"
[ "$engine" = citus ] && results="$out/results-citus.md"
{
  echo "| phase | connections | requests/s | p50 ms | p99 ms | p99.9 ms | non-2xx | CPU s: API / PostgreSQL / wrk |"
  echo "|---|---|---|---|---|---|---|---|"
} > "$results"
# metric PHASE KEY: a figure from the phase's RESULT line (wrk_phase runs in a subshell, so it leaves them in files).
metric() { sed -nE "s/^RESULT.* $2=([^ ]*).*/\1/p" "$raw/$1.txt"; }

# wrk_phase NAME CONNECTIONS SCRIPT ARGS...: runs wrk for the phase's duration and adds a row; the backends' waits
# go to raw/NAME-waits.txt (counts of samples).
# warm PHASE CONNECTIONS SCRIPT ARGS...: the phase's own requests, not measured, in rounds of $warmup seconds until the
# runtime has finished compiling them (at most $warm_max seconds); an argument RUN becomes a new offset (next_offset), so
# that warm-up events never repeat each other's or the phase's. The runtime compiles hot methods again, optimized,
# in the background for many seconds after they are first used (tiered compilation): a history load compiled for
# 8.3 s of its first 20 s and 0.03-0.13 s in each 5 s after that (`dotnet_jit_compilation_time_seconds_total`).
# A service that has run for a while has done that; a phase should not measure it. raw/warmup.txt says how long
# each phase was warmed.
# The runtime's compile time so far; fails the run when /metrics does not show it, which would otherwise end
# every warm-up after one round as if nothing were left to compile.
jit_seconds() {
  curl -fsS "http://127.0.0.1:$api_port/metrics" 2>/dev/null |
    awk '/^dotnet_jit_compilation_time_seconds_total/ { s = $2; found = 1 } END { if (!found) exit 1; print s + 0 }' ||
    { log "no dotnet_jit_compilation_time_seconds_total at /metrics: the warm-up cannot tell when compiling ends" >&2; return 1; }
}
warm() {
  local name=$1 conns=$2 script=$3; shift 3
  local round=0 start=$SECONDS jit0 jit1 a args
  jit1=$(jit_seconds)
  while :; do
    round=$((round + 1)); jit0=$jit1
    args=(); for a in "$@"; do [ "$a" = RUN ] && a=$(next_offset); args+=("$a"); done
    wrk -t2 -c"$conns" -d"${warmup}s" -s "bench/$script" "http://127.0.0.1:$api_port" -- "${args[@]}" > /dev/null 2>&1
    jit1=$(jit_seconds)
    # Settled: the round spent under 5% of its time compiling.
    if awk -v a="$jit0" -v b="$jit1" -v w="$warmup" 'BEGIN { exit !(b - a < 0.05 * w) }'; then break; fi
    [ $((SECONDS - start)) -lt "$warm_max" ] || break
  done
  printf '%s: warmed %d s in %d rounds, the last compiling for %.2f s\n' "$name" $((SECONDS - start)) \
    "$round" "$(awk -v a="$jit0" -v b="$jit1" 'BEGIN { print b - a }')" >> "$raw/warmup.txt"
  # wrk leaves its last requests in flight: let them finish before the phase counts the table.
  sleep 1
}

# The statements PostgreSQL ran since the last reset, costliest first: calls, how many were planned anew, time.
statements() {
  psql_fm -c "SELECT calls, plans, round(total_plan_time::numeric) AS plan_ms, round(total_exec_time::numeric) AS exec_ms,
      round((total_exec_time / calls)::numeric, 3) AS exec_ms_each, rows, left(regexp_replace(query, '\s+', ' ', 'g'), 100) AS statement
    FROM pg_stat_statements WHERE calls > 0 ORDER BY total_plan_time + total_exec_time DESC LIMIT 15"
}

wrk_phase() {
  local name=$1 conns=$2 script=$3; shift 3
  local api0 api1 pg line sampler
  sample_waits "$raw/$name.waits" &
  sampler=$!
  psql_fm -Atc "SELECT pg_stat_statements_reset()" >/dev/null
  api0=$(cpu_of "$api_pid"); pg_cpu_mark "$raw/$name.pgcpu"
  /usr/bin/time -f "WRKCPU %U %S" -o "$raw/$name.time" \
    wrk -t2 -c"$conns" -d"${duration}s" --latency -s "bench/$script" "http://127.0.0.1:$api_port" -- "$@" > "$raw/$name.txt" 2>&1
  api1=$(cpu_of "$api_pid"); pg=$(pg_cpu_since "$raw/$name.pgcpu"); rm -f "$raw/$name.pgcpu"
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  statements > "$raw/$name-statements.txt"
  sort "$raw/$name.waits" | uniq -c | sort -rn > "$raw/$name-waits.txt"
  rm -f "$raw/$name.waits"
  line=$(grep '^RESULT' "$raw/$name.txt")
  local wrk_cpu; wrk_cpu=$(awk '/^WRKCPU/ { printf "%.1f", $2 + $3 }' "$raw/$name.time")
  local get; get() { metric "$name" "$1"; }
  printf '| %s | %s | %s | %s | %s | %s | %s %s | %.1f / %.1f / %s |\n' "$name" "$conns" "$(get rps)" "$(get p50_ms)" "$(get p99_ms)" \
    "$(get p999_ms)" "$(get non2xx)" "$(echo "$line" | sed -E 's/.*errors=//')" \
    "$(awk -v a="$api0" -v b="$api1" -v c="$clk" 'BEGIN { print (b - a) / c }')" \
    "$(awk -v p="$pg" -v c="$clk" 'BEGIN { print p / c }')" "$wrk_cpu" >> "$results"
  log "$name: $line"
  echo "$line"
}

if [ "$replica" = 1 ]; then
  [ "$engine" = postgresql ] || { echo "bench: --replica is for one PostgreSQL server" >&2; exit 2; }
  # Members read devices' histories (a device's own reads stay on the primary: README, "Read replicas"): first with
  # the primary alone, then with a hot standby and the API given both hosts, both at 16 connections.
  results="$out/results-replica.md"
  head -n 2 "$out/results.md" > "$results"
  warm history-member 16 history-member.lua "$out/sample.csv" "$big"
  wrk_phase primary-alone 16 history-member.lua "$out/sample.csv" "$big" >/dev/null
  start_standby
  kill "$api_pid"; wait "$api_pid" 2>/dev/null || true
  start_api "$api_port" "$raw/api-replica.log" "Serilog__MinimumLevel__Override__Serilog.AspNetCore.RequestLoggingMiddleware=Warning" \
    FirmwareManager__RateLimits__Member__PermitsPerSecond=0 \
    "ConnectionStrings__FirmwareManager=Host=127.0.0.1:$pg_port,127.0.0.1:$standby_port;Username=postgres;Database=fm;Maximum Pool Size=${FM_BENCH_POOL:-128}"
  # Both servers' CPU counts as PostgreSQL's.
  pg_pids() { for p in "$postmaster" "$standby_postmaster"; do echo "$p" $(pgrep -P "$p" || true); done; }
  warm history-member 16 history-member.lua "$out/sample.csv" "$big"
  wrk_phase with-standby 16 history-member.lua "$out/sample.csv" "$big" >/dev/null
  reads=$(curl -fsS "http://127.0.0.1:$api_port/metrics" | awk '/^firmware_manager_reads_total/ { print }')
  {
    echo
    echo "Reads by node and reason since the API started with both hosts (warm-up included; /metrics):"
    echo
    echo '```'
    echo "$reads"
    echo '```'
    echo
    echo "Fleet: $devices devices ($big in project 1), $((devices * events_per_device)) events; a member key of each device's project reads its history (first page, 100 events)."
  } >> "$results"
  cat "$results"
  standby_reads=$(echo "$reads" | awk '/node="standby"/ { s += $2 } END { print s + 0 }')
  [ "$standby_reads" -gt 0 ] || { echo "bench: no read was served by the standby" >&2; exit 1; }
  log "done"
  exit 0
fi

# caught_up NAME: waits until every project's projection has reached its feed (at most 300 s) and prints the seconds
# that took after the phase's load stopped, also in raw/NAME-projected.txt: so that no phase measures the one before
# it still being projected beside it (reports are projected after they are answered; under 2 s here on both engines).
caught_up() {
  local start=$SECONDS
  until [ "$(psql_fm -tAc "SELECT count(*) FROM project_event_arrivals AS a LEFT JOIN project_projections AS p USING (project_id) WHERE a.last_arrival > COALESCE(p.position, 0)")" = 0 ]; do
    [ $(( SECONDS - start )) -lt 300 ] || { echo "bench: the projection did not catch up within 300 s" >&2; exit 1; }
    sleep 0.2
  done
  log "$1: projected $(( SECONDS - start )) s after the load stopped"
  echo $(( SECONDS - start )) | tee "$raw/$1-projected.txt"
}

if [ "$webhook" = 1 ]; then
  results="$out/results-webhook.md"
  head -n 2 "$out/results.md" > "$results"
  # The fleet-health tables are empty after provisioning; ingest's generic plans follow their statistics, so each
  # phase measures with them analyzed after its warm-up, as autovacuum would have them on a running system.
  warm ingest 64 ingest.lua "$out/sample.csv" "" RUN
  psql_fm -c "ANALYZE"
  wrk_phase ingest-no-webhook 64 ingest.lua "$out/sample.csv" "" "$(next_offset)" >/dev/null
  receiver_port=$(free_port 19080)
  python3 bench/webhook-receiver.py "$receiver_port" "$raw/receiver-count.txt" &
  receiver_pid=$!
  trap 'kill "$receiver_pid" 2>/dev/null || true; cleanup' EXIT
  kill "$api_pid"; wait "$api_pid" 2>/dev/null || true
  start_api "$api_port" "$raw/api-webhook.log" "Serilog__MinimumLevel__Override__Serilog.AspNetCore.RequestLoggingMiddleware=Warning" \
    FirmwareManager__RateLimits__Member__PermitsPerSecond=0 FirmwareManager__Webhooks__AllowPrivateTargets=true
  # One webhook through the API (project 1's admin), then the same for every other project.
  curl -fsS -X POST "http://127.0.0.1:$api_port/webhooks" -H "api_key: $member_key" -H 'Content-Type: application/json' \
    -d "{\"url\": \"http://127.0.0.1:$receiver_port/hook\", \"events\": [\"event.downloading\", \"event.downloaded\", \"event.installing\", \"event.installed\", \"event.updated\", \"event.failed\", \"event.rolled_back\"]}" >/dev/null
  psql_fm -c "INSERT INTO webhooks (project_id, url, event_types, secret_ciphertext)
              SELECT p.id, w.url, w.event_types, w.secret_ciphertext FROM projects AS p, webhooks AS w WHERE p.id <> 1 AND w.project_id = 1" >/dev/null
  live_webhooks=$(psql_fm -tAc "SELECT string_agg(id::text, ',') FROM webhooks")
  drain_limit=1800
  [ "$profile" = quick ] && drain_limit=120
  # webhook_phase NAME: ingest at 64 connections with the webhooks subscribed; then waits until every project is
  # projected and every delivery to the live receiver has arrived, and reports the deliveries and their lag (from the
  # event's receipt to its delivery's being recorded delivered).
  webhook_phase() {
    local name=$1 first_new stored recorded drain_start drain_s pending delivered lag
    first_new=$(psql_fm -tAc "SELECT COALESCE(max(id), 0) FROM firmware_events")
    warm ingest 64 ingest.lua "$out/sample.csv" "" RUN
    psql_fm -c "ANALYZE"
    wrk_phase "$name" 64 ingest.lua "$out/sample.csv" "" "$(next_offset)" >/dev/null
    # Deliveries are projected from the feed after the reports are answered: wait until every project is projected.
    caught_up "$name" > /dev/null
    stored=$(psql_fm -tAc "SELECT count(*) FROM firmware_events WHERE id > $first_new")
    recorded=$(psql_fm -tAc "SELECT count(*) FROM webhook_deliveries WHERE event_id > $first_new AND webhook_id IN ($live_webhooks)")
    log "$name: waiting for $recorded deliveries to arrive"
    drain_start=$(date +%s)
    until [ "$(psql_fm -tAc "SELECT count(*) FROM webhook_deliveries WHERE delivered_at IS NULL AND webhook_id IN ($live_webhooks)")" = 0 ]; do
      [ $(( $(date +%s) - drain_start )) -lt "$drain_limit" ] || break
      sleep 1
    done
    drain_s=$(( $(date +%s) - drain_start ))
    pending=$(psql_fm -tAc "SELECT count(*) FROM webhook_deliveries WHERE delivered_at IS NULL AND webhook_id IN ($live_webhooks)")
    delivered=$(psql_fm -tAc "SELECT count(*) FROM webhook_deliveries WHERE delivered_at IS NOT NULL AND event_id > $first_new AND webhook_id IN ($live_webhooks)")
    lag=$(psql_fm -tA -F ' ' -c "
      SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM d.delivered_at - e.received_at))::numeric, 2),
             round(percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM d.delivered_at - e.received_at))::numeric, 2)
      FROM webhook_deliveries AS d
      JOIN firmware_events AS e ON e.project_id = d.project_id AND e.id = d.event_id
      WHERE d.event_id > $first_new AND d.webhook_id IN ($live_webhooks) AND d.delivered_at IS NOT NULL")
    # Where the lag goes, p50 and p99 of each part: from the receipt to the step that recorded the delivery (the
    # projection), from there to the attempt that delivered it (the sender's claim), and the attempt with its recording
    # (the receiver and the sender's round trip); the two last over the deliveries delivered at their first attempt.
    parts=$(psql_fm -tA -F ' ' -c "
      SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM d.created_at - e.received_at))::numeric, 2),
             round(percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM d.created_at - e.received_at))::numeric, 2),
             round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM d.last_attempt_at - d.created_at)) FILTER (WHERE d.attempts = 1))::numeric, 2),
             round((percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM d.last_attempt_at - d.created_at)) FILTER (WHERE d.attempts = 1))::numeric, 2),
             round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM d.delivered_at - d.last_attempt_at)) FILTER (WHERE d.attempts = 1))::numeric, 2),
             round((percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM d.delivered_at - d.last_attempt_at)) FILTER (WHERE d.attempts = 1))::numeric, 2),
             count(*) FILTER (WHERE d.attempts > 1)
      FROM webhook_deliveries AS d
      JOIN firmware_events AS e ON e.project_id = d.project_id AND e.id = d.event_id
      WHERE d.event_id > $first_new AND d.webhook_id IN ($live_webhooks) AND d.delivered_at IS NOT NULL")
    read -r proj50 proj99 claim50 claim99 send50 send99 retried <<< "$parts"
    {
      echo
      echo "$name: events stored (warm-up included): $stored; deliveries to the live receiver recorded for them: $recorded;" \
        "delivered: $delivered, still pending: $pending; the last arrived ${drain_s} s after the load stopped;" \
        "lag from receipt to delivery p50 ${lag% *} s, p99 ${lag#* } s (p50 / p99 of its parts: projection $proj50 / $proj99 s," \
        "to the delivering attempt $claim50 / $claim99 s, the attempt $send50 / $send99 s; delivered after more than one attempt: $retried)."
    } >> "$results"
    [ "$stored" = "$recorded" ] || { echo "bench: $name: $stored events stored but $recorded deliveries recorded" >&2; exit 1; }
    [ "$pending" = 0 ] || { echo "bench: $name: $pending deliveries still pending" >&2; exit 1; }
  }
  webhook_phase ingest-webhook
  # A second webhook in every project, to a receiver that accepts connections and never answers: the live
  # receiver's deliveries must not wait for it (each webhook has a lane of its own).
  hanging_port=$(free_port $((receiver_port + 1)))
  python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(4096)
held = []
while True:
    held.append(s.accept()[0])
' "$hanging_port" &
hanging_pid=$!
  trap 'kill "$receiver_pid" "$hanging_pid" 2>/dev/null || true; cleanup' EXIT
  psql_fm -c "INSERT INTO webhooks (project_id, url, event_types, secret_ciphertext)
              SELECT w.project_id, 'http://127.0.0.1:$hanging_port/hook', w.event_types, w.secret_ciphertext FROM webhooks AS w WHERE w.id IN ($live_webhooks)" >/dev/null
  webhook_phase ingest-webhook-beside-hanging
  sleep 1
  read -r arrived distinct repeated < "$raw/receiver-count.txt"
  delivered=$(psql_fm -tAc "SELECT count(*) FROM webhook_deliveries WHERE delivered_at IS NOT NULL AND webhook_id IN ($live_webhooks)")
  {
    echo
    echo "Requests the live receiver got: $arrived, of $distinct distinct messages (webhook-id), $repeated received more than once; deliveries to it marked delivered: $delivered."
    echo
    echo "Fleet: $devices devices ($big in project 1) in 10 projects; a webhook in each, subscribed to every event; receiver: bench/webhook-receiver.py on loopback; in the second phase, a second webhook in each project to a receiver that never answers."
  } >> "$results"
  cat "$results"
  [ "$arrived" -ge "$delivered" ] || { echo "bench: $delivered deliveries marked delivered, $arrived arrived" >&2; exit 1; }
  log "done"
  exit 0
fi

count_events() { psql_fm -tAc "SELECT count(*) FROM firmware_events"; }
lost=0

log "phase 1: ingest, 64 connections"
warm ingest 64 ingest.lua "$out/sample.csv" "" RUN
before=$(count_events)
line=$(wrk_phase ingest 64 ingest.lua "$out/sample.csv" "" "$(next_offset)")
after=$(count_events)
acked=$(echo "$line" | sed -E 's/.* ok=([0-9]+).*/\1/')
grew=$((after - before))
# Requests in flight when wrk stopped may have been stored without their answer being counted.
if [ "$grew" -lt "$acked" ] || [ "$grew" -gt $((acked + 64)) ]; then lost=1; fi
echo "ingest check: $acked acknowledged, the table grew by $grew (allowed: $acked to $((acked + 64)))" | tee "$raw/ingest-check.txt" >&2
ingest_projected_s=$(caught_up ingest)

log "phase 2: batch ingest of 100-event batches, 16 connections"
warm batch 16 batch.lua "$out/sample.csv" RUN
before=$(count_events)
line=$(wrk_phase batch 16 batch.lua "$out/sample.csv")
after=$(count_events)
acked=$(echo "$line" | sed -E 's/.* ok=([0-9]+).*/\1/')
grew=$((after - before))
if [ "$grew" -lt $((acked * 100)) ] || [ "$grew" -gt $(((acked + 16) * 100)) ]; then lost=1; fi
echo "batch check: $acked batches acknowledged ($((acked * 100)) events), the table grew by $grew" | tee "$raw/batch-check.txt" >&2
batch_projected_s=$(caught_up batch)
batch_rows=$(awk -v r="$(metric batch rps)" 'BEGIN { printf "%.0f", r * 100 }')

log "phase 3: history reads, 16 and 64 connections"
warm history 16 history.lua "$out/sample.csv"
wrk_phase history16 16 history.lua "$out/sample.csv" >/dev/null
wrk_phase history64 64 history.lua "$out/sample.csv" >/dev/null

log "phase 4: fleet views of the largest project"
warm versions 16 fleet.lua "$member_key" "/firmware-versions"
wrk_phase versions 16 fleet.lua "$member_key" "/firmware-versions" >/dev/null
warm devices-on-version 16 fleet.lua "$member_key" "/devices?firmware=1.6.0&limit=100"
wrk_phase devices-on-version 16 fleet.lua "$member_key" "/devices?firmware=1.6.0&limit=100" >/dev/null

log "phase 5: the database's own ceilings (pgbench, 16 clients)"
checkpoint
pgbench_run() {
  local name=$1 script=$2
  "$pg_bin/pgbench" -h 127.0.0.1 -p "$pg_port" -U postgres -n -c 16 -j 2 -T "$duration" -D devices="$devices" -D big="$big" \
    -f "bench/$script" fm > "$raw/$name.txt" 2>&1
  grep -E '^tps' "$raw/$name.txt" | sed -E 's/tps = ([0-9.]+).*/\1/'
}
tps_insert=$(pgbench_run pgbench-insert pgbench-insert.sql)
tps_insert100=$(pgbench_run pgbench-insert100 pgbench-insert100.sql)
tps_history=$(pgbench_run pgbench-history pgbench-history.sql)
rows_insert100=$(awk -v t="$tps_insert100" 'BEGIN { printf "%.0f", t * 100 }')

log "phase 6: bulk enrollment through the API, $enroll_calls calls of $enroll_per_call devices"
enroll_line=$(CALLS=$enroll_calls PER_CALL=$enroll_per_call bash bench/enroll-1m.sh "http://127.0.0.1:$api_port" "$member_key" | tee "$raw/enroll.txt")
enroll_s=$(echo "$enroll_line" | sed -nE 's/.* in ([0-9.]+) s .*/\1/p')
log "$enroll_line"

peak_rss_mb=$(awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$api_pid/status")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
{
  echo
  echo "| ceiling (pgbench, 16 clients, ${duration} s) | per second |"
  echo "|---|---|"
  echo "| single-row INSERT transactions into a table of firmware_events' shape | $tps_insert |"
  echo "| 100-row INSERT transactions (rows/s) | $rows_insert100 |"
  echo "| the history SELECT | $tps_history |"
  echo
  echo "| target | measured | ratio |"
  echo "|---|---|---|"
  echo "| ingest ≥ 1.2 × single-row INSERT tps, p99 < 25 ms | $(metric ingest rps) req/s, p99 $(metric ingest p99_ms) ms | $(ratio "$(metric ingest rps)" "$tps_insert") |"
  echo "| batch rows/s ≥ 0.5 × 100-row INSERT rows/s | $batch_rows rows/s | $(ratio "$batch_rows" "$rows_insert100") |"
  echo "| history at 16 connections ≥ 0.5 × pgbench's SELECT tps, p99 < 5 ms | $(metric history16 rps) req/s, p99 $(metric history16 p99_ms) ms | $(ratio "$(metric history16 rps)" "$tps_history") |"
  echo "| version distribution of the $big-device project: p99 < 10 ms | p99 $(metric versions p99_ms) ms | |"
  echo "| $((enroll_calls * enroll_per_call)) devices enrolled through the bulk API in under two minutes | $enroll_s s ($enroll_calls calls) | |"
  echo "| API resident memory < 300 MB | peak $peak_rss_mb MB (VmHWM, the whole run) | |"
  echo "| startup to healthy on an empty database < 3 s | $startup_s s | |"
  echo
  echo "Fleet: $devices devices ($big in project 1), $((devices * events_per_device)) events before the phases; provisioned in ${provision_s} s."
  echo "Projection: every project's feed projected ${ingest_projected_s} s after the ingest phase stopped, ${batch_projected_s} s after the batches (each phase starts after that)."
  [ "$engine" = citus ] && echo "Engine: Citus $(psql_fm -Atc "SELECT extversion FROM pg_extension WHERE extname = 'citus'"), a coordinator and two workers on this machine, $(psql_fm -Atc "SHOW citus.shard_count") shards per table; PostgreSQL's CPU is all three nodes'."
  echo "Lost or duplicated acknowledged events: $([ "$lost" -eq 0 ] && echo none || echo SEE raw/*-check.txt)."
} >> "$results"
cat "$results"

if [ "$profile" = full ] && [ "$engine" = postgresql ]; then
  doc=docs/performance.md
  { sed -n '1,/<!-- results:begin -->/p' "$doc"; echo; echo "Produced by \`bench/run.sh\` on $(date -u +%Y-%m-%d)."; echo; cat "$results"; echo; sed -n '/<!-- results:end -->/,$p' "$doc"; } > "$doc.new"
  mv "$doc.new" "$doc"
fi

[ "$lost" -eq 0 ] || { echo "bench: acknowledged events were lost or stored twice" >&2; exit 1; }
log "done"
