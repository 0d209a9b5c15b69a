#!/usr/bin/env bash
# Single reports against the two baselines of issue 28, in one run on one database (bench/ingest-baselines.sh
# [--quick] [--projects 1|10] [--devices N] [--targets 'service naive limit'] [--batch N] [--key-cache N]): 100,000 devices
# (or N) in each of 1 or 10 projects, each with its own key, reports from
# random devices of them all; 64 connections; each target warmed, then measured in alternating
# rounds:
#   service  POST /firmware/{id}: the product (keys, validation, group commit, derived state)
#   naive    POST /naive/{id}: bench/naive, ASP.NET Core + Npgsql, one INSERT per request, no key
#   limit    POST /limit/{id}: bench/naive, the same rows through a channel and multi-row INSERTs (group commit)
#   held     the service's reports with the projection held (every project's position row locked for the round: the
#            projector skips it), so ingest alone; after each counted round the backlog is projected and its CPU per
#            event measured (the projection's cost, apart from ingest's)
# and reports each one's requests/s and p99, and the service's as fractions of the two, in
# bench/out/results-baselines.md. Absolute figures move by 2x from day to day on these machines: the ratios are
# what compares runs.
# --key-cache N sets the service's FirmwareManager:KeyCache:MaxEntries (a fleet larger than its default 200,000 then
# keeps every key cached, as the README advises), and every device's key is used once before the rounds (a walk of
# GET /firmware/{id}, bench/history.lua; at most 10 minutes), as a fleet that reports steadily keeps the cache.
# With --batch N (issue 28's batch target), 16 connections and the targets default to 'service pgbench':
#   service  POST /firmware/{id}/batch: N events from a random device (bench/batch.lua)
#   pgbench  pgbench, 16 clients, a transaction of one INSERT of N rows into firmware_events itself (its partitions
#            and indexes; a random device, 2026 clocks as bench/batch.lua's, feed number 0 as the
#            provisioned events: the projection never reads them), no key, nothing derived
# a request of one is a transaction of the other, so the ratio of requests/s is the ratio of rows/s.
set -euo pipefail
cd "$(dirname "$0")/.."
devices=100000; duration=20; rounds=3; warmup=30; projects=1; targets=""; batch=0; key_cache=
while [ $# -gt 0 ]; do
  case $1 in
    --quick) devices=10000; duration=3; rounds=1; warmup=2 ;;
    --projects) projects=$2; shift ;;
    --devices) devices=${2:?--devices N}; shift ;;
    --targets) targets=$2; shift ;;
    --batch) batch=$2; shift ;;
    --key-cache) key_cache=${2:?--key-cache N}; shift ;;
    *) echo "usage: bench/ingest-baselines.sh [--quick] [--projects 1|10] [--devices N] [--targets 'service naive limit'] [--batch N] [--key-cache N]" >&2; exit 2 ;;
  esac
  shift
done
if [ "$batch" -gt 0 ]; then
  targets=${targets:-service pgbench}; connections=16
else
  targets=${targets:-service naive limit}; connections=64
fi
[ "$projects" = 1 ] || [ "$projects" = 10 ] || { echo "--projects takes 1 or 10" >&2; exit 2; }
source bench/lib.sh
raw="$out/baselines"
mkdir -p "$raw"
rm -f "$raw"/*

build_api
build_naive
start_cluster -c shared_buffers=2GB -c max_wal_size=8GB -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_planning=on
api_port=$(free_port 18580)
# As bench/run.sh: the request log at Warning (one line per request would measure the console); devices keep their
# rate limit, which a device picked at random out of 100,000 never reaches.
start_api "$api_port" "$raw/api.log" "Serilog__MinimumLevel__Override__Serilog.AspNetCore.RequestLoggingMiddleware=Warning" \
  ${key_cache:+"FirmwareManager__KeyCache__MaxEntries=$key_cache"}
naive_port=$(free_port $((api_port + 1)))
start_naive "$naive_port" "$raw/naive.log"
naive_pid=${api_pids[-1]}

log "provisioning $devices devices in each of $projects project(s), each with its own key"
# provision.sql puts :big devices in project 1 and spreads the rest over projects 2 to 10.
psql_fm -v devices=$((devices * projects)) -v big="$devices" -v events_per_device=1 -f bench/provision.sql > /dev/null
psql_fm -c "VACUUM ANALYZE" -c "CHECKPOINT" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
track_statements none
psql_fm -c "\\copy (SELECT id, 'fmd_b' || md5(id::text) FROM devices WHERE project_id <= $projects ORDER BY id) TO '$raw/devices.csv' CSV"

declare -A url=( [service]="http://127.0.0.1:$api_port" [held]="http://127.0.0.1:$api_port" [naive]="http://127.0.0.1:$naive_port" [limit]="http://127.0.0.1:$naive_port" )
declare -A prefix=( [service]=/firmware/ [held]=/firmware/ [naive]=/naive/ [limit]=/limit/ )
declare -A target_pid=( [service]=$api_pid [held]=$api_pid [naive]=$naive_pid [limit]=$naive_pid [pgbench]= )
if [ -n "$key_cache" ]; then
  walk_s=$(( devices * projects / 2000 + 1 )); [ "$walk_s" -le 600 ] || walk_s=600
  log "every device's key used once (about ${walk_s} s)"
  wrk -t2 -c16 -d"${walk_s}s" -s bench/history.lua "${url[service]}" -- "$raw/devices.csv" /firmware/ walk > /dev/null
fi
run_offset=0
cat > "$raw/pgbench-batch.sql" <<SQL
\\set d random(1, $devices)
\\set s random(0, 31535999)
INSERT INTO firmware_events (device_id, project_id, firmware, status, occurred_at, arrival)
SELECT :d, 1, '3.' || (g % 9) || '.0', 'downloading', timestamptz '2026-01-01' + :s * interval '1 second' + g * interval '1 microsecond', 0
FROM generate_series(1, $batch) AS g;
SQL
# load_once TARGET SECONDS: one run of the target's load; prints a RESULT line as bench/common.lua's (pgbench's from
# its per-transaction log).
load_once() {
  if [ "$1" = pgbench ]; then
    rm -f "$raw"/pgbench_log.*
    (cd "$raw" && "$pg_bin/pgbench" -h 127.0.0.1 -p "$pg_port" -U postgres -n -c "$connections" -j 2 -T "$2" -l --log-prefix=pgbench_log \
      -f "$raw/pgbench-batch.sql" fm > "$raw/pgbench.out" 2>&1) || { cat "$raw/pgbench.out" >&2; return 1; }
    awk '{ print $3 }' "$raw"/pgbench_log.* | sort -n | awk -v s="$2" -v failed="$(sed -nE 's/^number of failed transactions: ([0-9]+).*/\1/p' "$raw/pgbench.out")" \
      '{ l[NR] = $1 } END { printf "RESULT requests=%d ok=%d non2xx=%d socket_errors=0 rps=%.1f p50_ms=%.2f p99_ms=%.2f p999_ms=0 max_ms=%.2f timeouts=0 errors=\n", NR, NR, failed + 0, NR / s, l[int(NR * 0.5)] / 1000, l[int(NR * 0.99)] / 1000, l[NR] / 1000 }'
  elif [ "$batch" -gt 0 ]; then
    wrk -t2 -c"$connections" -d"${2}s" --latency -s bench/batch.lua "${url[$1]}" -- "$raw/devices.csv" "$run_offset" "$batch" 2>&1 | grep '^RESULT'
  else
    wrk -t2 -c"$connections" -d"${2}s" --latency -s bench/ingest.lua "${url[$1]}" -- "$raw/devices.csv" "" "$run_offset" "${prefix[$1]}" 2>&1 | grep '^RESULT'
  fi
}
# Events of the measured projects not projected yet.
waiting_sql="SELECT COALESCE(sum(a.last_arrival - COALESCE(p.position, 0)), 0) FROM project_event_arrivals AS a
  LEFT JOIN project_projections AS p ON p.project_id = a.project_id WHERE a.project_id <= $projects"
until_projected() { until [ "$(psql_fm -tAc "$waiting_sql")" = 0 ]; do sleep 0.1; done; }
# hold_projection: every measured project's position row locked, in the background until release_projection: the
# projector's claim skips a locked row (FOR UPDATE SKIP LOCKED, ProjectionSteps), so nothing is projected meanwhile.
hold_projection() {
  PGAPPNAME=fm-bench-hold psql_fm \
    -c "INSERT INTO project_projections (project_id, position) SELECT g, 0 FROM generate_series(1, $projects) AS g ON CONFLICT DO NOTHING" \
    -c "BEGIN" -c "SELECT 1 FROM project_projections WHERE project_id <= $projects FOR UPDATE" -c "SELECT pg_sleep(3600)" > /dev/null 2>&1 &
  holder=$!
  until [ "$(psql_fm -tAc "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'fm-bench-hold' AND query LIKE '%pg_sleep%'")" = 1 ]; do
    kill -0 "$holder" 2>/dev/null || { echo "the projection's hold ended before it began" >&2; exit 1; }
    sleep 0.05
  done
}
# release_projection: the holder's sleep cancelled, so its transaction ends and the rows are free.
release_projection() {
  psql_fm -tAc "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'fm-bench-hold'" > /dev/null
  wait "$holder" || true
}
# measure TARGET SECONDS: a run of the target's load (wrk, 64 connections or 16 for batches); prints its RESULT line.
# Every counted round runs uninstrumented, whatever its target: no statement statistics, no sampling (until
# 2026-12-06 the service's rounds alone had both, and their cost fell on the service's figure only). For each
# counted round, raw/cpu-rounds.txt gets the CPU a request of the target's process and of PostgreSQL (read from /proc
# before and after, PostgreSQL's per process: pg_cpu_mark); after a round of held, the backlog is projected and its
# CPU an event goes there too. explain_round adds one more service round, not counted, with the rest.
measure() {
  run_offset=$(next_offset)
  local target=$1 seconds=$2 counted=0 app0 line requests
  [ "$seconds" = "$duration" ] && counted=1
  [ "$target" != held ] || hold_projection
  app0=$(cpu_of ${target_pid[$target]}); pg_cpu_mark "$raw/pg-cpu.tmp"
  line=$(load_once "$target" "$seconds")
  requests=$(echo "$line" | sed -nE 's/.* requests=([0-9]+).*/\1/p')
  [ "$counted" = 0 ] || awk -v t="$target" -v n="$requests" -v a="$(( $(cpu_of ${target_pid[$target]}) - app0 ))" \
    -v p="$(pg_cpu_since "$raw/pg-cpu.tmp")" -v c="$clk" -v line="$line" 'BEGIN {
      printf "%s: %s\n  CPU a request, µs: its process %.1f, PostgreSQL %.1f\n", t, line, a / c * 1e6 / n, p / c * 1e6 / n }' >> "$raw/cpu-rounds.txt"
  if [ "$target" = held ]; then
    local events t0 api0
    events=$(psql_fm -tAc "$waiting_sql")
    release_projection
    t0=$(now_ms); api0=$(cpu_of "$api_pid"); pg_cpu_mark "$raw/pg-cpu.tmp"
    until_projected
    [ "$counted" = 0 ] || awk -v n="$events" -v ms=$(( $(now_ms) - t0 )) -v a="$(( $(cpu_of "$api_pid") - api0 ))" \
      -v p="$(pg_cpu_since "$raw/pg-cpu.tmp")" -v c="$clk" 'BEGIN {
        printf "  then the backlog projected: %d events in %d ms; CPU an event, µs: the API %.1f, PostgreSQL %.1f\n", n, ms, a / c * 1e6 / n, p / c * 1e6 / n }' >> "$raw/cpu-rounds.txt"
  fi
  echo "$line"
}
# explain_round: one more service round after the counted ones, instrumented and not counted: what the busy backends
# were doing (sampled five times a second) and the statements PostgreSQL ran (pg_stat_statements: calls, rows,
# planning and execution time), with the API's CPU seconds, to raw/service-rounds.txt. Its figure is not the
# service's: on 2026-12-06 the instrumented round ran at about 0.7 of the counted ones, with a p99 of 530 ms.
explain_round() {
  run_offset=$(next_offset)
  track_statements top
  psql_fm -Atc "SELECT pg_stat_statements_reset()" > /dev/null
  sample_waits "$raw/waits.tmp" &
  local sampler=$! api0 line
  api0=$(cpu_of "$api_pid")
  line=$(load_once service "$duration")
  kill "$sampler"; wait "$sampler" 2>/dev/null || true
  log "explained round (instrumented, not counted), service: $line"
  {
    echo "== explained service round (statement statistics and sampling on; not counted): $line"
    # PostgreSQL's CPU is not summed here: the sampler's own backends would count in it.
    echo "CPU s over ${duration} s: API $(awk -v a="$api0" -v b="$(cpu_of "$api_pid")" -v c="$clk" 'BEGIN { print (b - a) / c }')"
    echo "backends sampled: $(sort "$raw/waits.tmp" | uniq -c | sort -rn | awk '{ printf "%s %s; ", $2, $1 }')"
    psql_fm -c "
      SELECT calls, rows, plans, round(total_plan_time::numeric) AS plan_ms, round(total_exec_time::numeric) AS exec_ms,
             round((total_exec_time / calls)::numeric, 3) AS exec_ms_per_call, left(regexp_replace(query, '\s+', ' ', 'g'), 90) AS statement
      FROM pg_stat_statements WHERE calls > 0 ORDER BY total_plan_time + total_exec_time DESC LIMIT 20"
  } >> "$raw/service-rounds.txt"
  rm -f "$raw/waits.tmp"
  track_statements none
}
# shellcheck disable=SC2086 # the targets are words
alternate "$out/results-baselines.md" "$rounds" "$duration" "$warmup" $targets
if [[ " $targets " == *" held "* ]]; then
  sed -nE 's/.*CPU an event, µs: the API ([0-9.]+), PostgreSQL ([0-9.]+)$/\1 \2/p' "$raw/cpu-rounds.txt" | awk '{ a += $1; p += $2; n++ } END {
    printf "\nheld: each round'"'"'s backlog projected afterwards cost %.1f µs of the API'"'"'s CPU and %.1f of PostgreSQL'"'"'s an event (mean of %d rounds; every round'"'"'s CPU a request in baselines/cpu-rounds.txt).\n", a / n, p / n, n }' |
    tee -a "$out/results-baselines.md"
fi
[[ " $targets " != *" service "* ]] || explain_round
# The service's own counters after the rounds (group sizes, projection steps and their sizes): what explains its figure.
curl -fsS "http://127.0.0.1:$api_port/metrics" > "$raw/metrics.txt" || true
