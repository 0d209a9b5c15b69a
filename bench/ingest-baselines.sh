#!/usr/bin/env bash
# Single reports against the two baselines of issue 28, in one run on one database (bench/ingest-baselines.sh
# [--quick] [--projects 1|10] [--targets 'service naive limit']): 100,000 devices in each of 1 or 10 projects, each with its own key, reports from
# random devices of them all; 64 connections; each target warmed, then measured in alternating
# rounds:
#   service  POST /firmware/{id}: the product (keys, validation, group commit, derived state)
#   naive    POST /naive/{id}: bench/naive, ASP.NET Core + Npgsql, one INSERT per request, no key
#   limit    POST /limit/{id}: bench/naive, the same rows through a channel and multi-row INSERTs (group commit)
# and reports each one's requests/s and p99, and the service's as fractions of the two, in
# bench/out/results-baselines.md. Absolute figures move by 2x from day to day on these machines: the ratios are
# what compares runs.
set -euo pipefail
cd "$(dirname "$0")/.."
devices=100000; duration=20; rounds=3; warmup=30; projects=1; targets="service naive limit"
while [ $# -gt 0 ]; do
  case $1 in
    --quick) devices=10000; duration=3; rounds=1; warmup=2 ;;
    --projects) projects=$2; shift ;;
    --targets) targets=$2; shift ;;
    *) echo "usage: bench/ingest-baselines.sh [--quick] [--projects 1|10] [--targets 'service naive limit']" >&2; exit 2 ;;
  esac
  shift
done
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
start_api "$api_port" "$raw/api.log" "Serilog__MinimumLevel__Override__Serilog.AspNetCore.RequestLoggingMiddleware=Warning"
naive_port=$(free_port $((api_port + 1)))
start_naive "$naive_port" "$raw/naive.log"

log "provisioning $devices devices in each of $projects project(s), each with its own key"
# provision.sql puts :big devices in project 1 and spreads the rest over projects 2 to 10.
psql_fm -v devices=$((devices * projects)) -v big="$devices" -v events_per_device=1 -f bench/provision.sql > /dev/null
psql_fm -c "VACUUM ANALYZE" -c "CHECKPOINT" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
psql_fm -c "\\copy (SELECT id, 'fmd_b' || md5(id::text) FROM devices WHERE project_id <= $projects ORDER BY id) TO '$raw/devices.csv' CSV"

declare -A url=( [service]="http://127.0.0.1:$api_port" [naive]="http://127.0.0.1:$naive_port" [limit]="http://127.0.0.1:$naive_port" )
declare -A prefix=( [service]=/firmware/ [naive]=/naive/ [limit]=/limit/ )
run_offset=0
# measure TARGET SECONDS: a wrk run of 64 connections; prints its RESULT line. For each measured round of the service,
# raw/service-rounds.txt gets what explains its figure: the CPU seconds of the API and of PostgreSQL, what the busy
# backends were doing (sampled five times a second), and the statements PostgreSQL ran (pg_stat_statements: calls,
# rows, planning and execution time).
measure() {
  run_offset=$((run_offset + 1))
  if [ "$1" != service ] || [ "$2" != "$duration" ]; then
    wrk -t2 -c64 -d"${2}s" --latency -s bench/ingest.lua "${url[$1]}" -- "$raw/devices.csv" "" "$run_offset" "${prefix[$1]}" 2>&1 | grep '^RESULT'
    return
  fi
  psql_fm -Atc "SELECT pg_stat_statements_reset()" > /dev/null
  sample_waits "$raw/waits.tmp" &
  local sampler=$! api0 pg0 line
  api0=$(cpu_of "$api_pid"); pg0=$(cpu_of $(pg_pids))
  line=$(wrk -t2 -c64 -d"${2}s" --latency -s bench/ingest.lua "${url[$1]}" -- "$raw/devices.csv" "" "$run_offset" "${prefix[$1]}" 2>&1 | grep '^RESULT')
  kill "$sampler"; wait "$sampler" 2>/dev/null || true
  {
    echo "== service round: $line"
    echo "CPU s over ${2} s: API $(awk -v a="$api0" -v b="$(cpu_of "$api_pid")" -v c="$clk" 'BEGIN { print (b - a) / c }'), PostgreSQL $(awk -v a="$pg0" -v b="$(cpu_of $(pg_pids))" -v c="$clk" 'BEGIN { print (b - a) / c }')"
    echo "backends sampled: $(sort "$raw/waits.tmp" | uniq -c | sort -rn | awk '{ printf "%s %s; ", $2, $1 }')"
    psql_fm -c "
      SELECT calls, rows, plans, round(total_plan_time::numeric) AS plan_ms, round(total_exec_time::numeric) AS exec_ms,
             round((total_exec_time / calls)::numeric, 3) AS exec_ms_per_call, left(regexp_replace(query, '\s+', ' ', 'g'), 90) AS statement
      FROM pg_stat_statements WHERE calls > 0 ORDER BY total_plan_time + total_exec_time DESC LIMIT 20"
  } >> "$raw/service-rounds.txt"
  rm -f "$raw/waits.tmp"
  echo "$line"
}
# shellcheck disable=SC2086 # the targets are words
alternate "$out/results-baselines.md" "$rounds" "$duration" "$warmup" $targets
# The service's own counters after the rounds (group sizes, projection steps and their sizes): what explains its figure.
curl -fsS "http://127.0.0.1:$api_port/metrics" > "$raw/metrics.txt" || true
