#!/usr/bin/env bash
# A device's history against its baseline (issue 29), in one run on one database:
# bench/history-baselines.sh [--quick] [--devices N] [--key-cache N] [--against COMMIT] [--rounds N] (default 100,000
# devices in one project, 10 events each, each device with its own key; --key-cache sets the service's
# FirmwareManager:KeyCache:MaxEntries, so that a fleet larger than its default 200,000 keeps every key cached);
# 16 connections; each target warmed, then measured in alternating rounds (3 of 20 s, or --rounds N of 10 s):
#   service  GET /firmware/{id} with the device's key: the product (key, rate limit, routing, cursor, the page)
#   against  with --against COMMIT: the same request to that commit's API (built in a worktree), on the same
#            database beside the checkout's: a change's before and after in one run, paired round by round
#   naive    GET /naive/{project}/{id}: bench/naive, ASP.NET Core + Npgsql, the same index scan, no key
# Both use the same Npgsql settings (prepared statements, no session reset), so that the difference is what the
# service does around the read. Results in bench/out/results-history-N.md, with the plans of both statements.
set -euo pipefail
cd "$(dirname "$0")/.."
devices=100000; duration=20; rounds=3; warmup=30; key_cache=; against=
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) devices=10000; duration=3; rounds=1; warmup=2 ;;
    --devices) devices=${2:?--devices N}; shift ;;
    --key-cache) key_cache=${2:?--key-cache N}; shift ;;
    --against) against=$(git rev-parse --verify "${2:?--against COMMIT}^{commit}"); shift ;;
    --rounds) rounds=${2:?--rounds N}; duration=10; shift ;;
    *) echo "usage: bench/history-baselines.sh [--quick] [--devices N] [--key-cache N] [--against COMMIT] [--rounds N]" >&2; exit 2 ;;
  esac
  shift
done
source bench/lib.sh
raw="$out/history-$devices"
mkdir -p "$raw"
rm -f "$raw"/*

build_api
build_naive
if [ -n "$against" ]; then
  against_src=$(mktemp -d /var/tmp/fm-against-XXXXXX)
  trap 'cleanup; git worktree remove --force "$against_src" 2>/dev/null || rm -rf "$against_src"' EXIT
  log "building the API of ${against:0:12} (Release) in a worktree"
  git worktree add -q --detach "$against_src" "$against"
  dotnet build "$against_src/FirmwareManager.Api" -c Release -v quiet -nologo >/dev/null
fi
start_cluster -c shared_buffers=2GB -c max_wal_size=8GB -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_planning=on
api_port=$(free_port 18680)
# As bench/run.sh: the request log at Warning (one line per request would measure the console); devices keep their
# rate limit, which a device picked at random never reaches.
start_api "$api_port" "$raw/api.log" "Serilog__MinimumLevel__Override__Serilog.AspNetCore.RequestLoggingMiddleware=Warning" \
  ${key_cache:+"FirmwareManager__KeyCache__MaxEntries=$key_cache"}
service_pid=$api_pid
if [ -n "$against" ]; then
  against_port=$(free_port $((api_port + 2)))
  FM_API_DIR="$against_src/FirmwareManager.Api/bin/Release/net10.0" start_api "$against_port" "$raw/against.log" \
    "Serilog__MinimumLevel__Override__Serilog.AspNetCore.RequestLoggingMiddleware=Warning" \
    ${key_cache:+"FirmwareManager__KeyCache__MaxEntries=$key_cache"}
  against_pid=$api_pid
fi
naive_port=$(free_port $((api_port + 1)))
start_naive "$naive_port" "$raw/naive.log" ";Max Auto Prepare=64;Auto Prepare Min Usages=2;No Reset On Close=true"
naive_pid=${api_pids[-1]}

log "provisioning $devices devices in one project, 10 events each"
psql_fm -v devices="$devices" -v big="$devices" -v events_per_device=10 -f bench/provision.sql > /dev/null
# The keys as a fleet in steady state has them: each used within the hour. The service writes a key's last use at
# most hourly (KeyUsage), so a run on keys never used before would measure that first write of 100,000 rows.
psql_fm -c "UPDATE device_api_keys SET last_used_at = now()"
psql_fm -c "VACUUM ANALYZE" -c "CHECKPOINT" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
track_statements none
psql_fm -c "\\copy (SELECT id, 'fmd_b' || md5(id::text) FROM devices ORDER BY id) TO '$raw/devices.csv' CSV"

declare -A url=( [service]="http://127.0.0.1:$api_port" [naive]="http://127.0.0.1:$naive_port" )
declare -A prefix=( [service]=/firmware/ [naive]=/naive/1/ ) target_pid=( [service]=$service_pid [naive]=$naive_pid )
targets=(service naive)
if [ -n "$against" ]; then
  url[against]="http://127.0.0.1:$against_port"; prefix[against]=/firmware/; target_pid[against]=$against_pid
  targets=(service against naive)
fi
# measure TARGET SECONDS [walk]: a wrk run of 16 connections; prints its RESULT line, with the CPU time per request
# of the target's process (app_us) and of PostgreSQL's (pg_us), from /proc: where a difference between targets goes;
# and for the API, the bytes it allocated per request (alloc_b, from /metrics: the metrics' own scrape included).
# Counted rounds run with no statement statistics for either target (since 2026-12-06; they cost the service's larger
# statement more); explain_round runs one more round of a target with them.
# The API's bytes allocated so far; empty for the naive endpoint, which has no /metrics.
allocated() {
  [ "$1" != naive ] || return 0
  curl -s "${url[$1]}/metrics" | awk '/^dotnet_gc_heap_total_allocated_bytes_total[ {]/ { bytes = $2 } END { printf "%.0f\n", bytes }'
}
measure() {
  local app0 alloc0 line requests
  app0=$(cpu_of "${target_pid[$1]}"); alloc0=$(allocated "$1"); pg_cpu_mark "$raw/pg-cpu.tmp"
  line=$(wrk -t2 -c16 -d"${2}s" --latency -s bench/history.lua "${url[$1]}" -- "$raw/devices.csv" "${prefix[$1]}" "${3:-}" 2>&1 | grep '^RESULT')
  requests=$(echo "$line" | sed -nE 's/.* requests=([^ ]*) .*/\1/p')
  line="$line $(awk -v a="$(( $(cpu_of "${target_pid[$1]}") - app0 ))" -v p="$(pg_cpu_since "$raw/pg-cpu.tmp")" \
    -v n="$requests" -v c="$clk" -v b0="$alloc0" -v b1="$(allocated "$1")" \
    'BEGIN { printf "app_us=%.0f pg_us=%.0f", a / c * 1e6 / n, p / c * 1e6 / n; if (b0 != "") printf " alloc_b=%.0f", (b1 - b0) / n }')"
  echo "$line"
}
# explain_round TARGET: one round more of the target, not counted, with pg_stat_statements on: its statements (calls,
# planning and execution) go to raw/statements.txt.
explain_round() {
  local line
  track_statements top
  psql_fm -Atc "SELECT pg_stat_statements_reset()" > /dev/null
  line=$(measure "$1" "$duration")
  log "explained round (statement statistics on, not counted), $1: $line"
  { echo "== $1 (statement statistics on; not counted): $line"
    psql_fm -c "
      SELECT calls, plans, round(total_plan_time::numeric) AS plan_ms, round(total_exec_time::numeric) AS exec_ms,
             round(((total_plan_time + total_exec_time) / calls * 1000)::numeric) AS us_per_call,
             left(regexp_replace(query, '\s+', ' ', 'g'), 100) AS statement
      FROM pg_stat_statements WHERE calls > 0 ORDER BY total_plan_time + total_exec_time DESC LIMIT 12"
  } >> "$raw/statements.txt"
  track_statements none
}
# Every device reads once before the measured rounds, so that the service's key cache holds the fleet's keys, as it
# does for a fleet that reads and reports steadily (Auth/ApiKeys.cs keeps a valid key's lookup up to 10 minutes);
# wrk's two threads walk the sample between them, for at most a minute (a million keys are more than the cache holds,
# FirmwareManager:KeyCache:MaxEntries, unless --key-cache makes room: then the walk may take up to 10 minutes).
walk_s=$(( devices / 2000 + 1 )); walk_max=60; [ -z "$key_cache" ] || walk_max=600
[ "$walk_s" -le "$walk_max" ] || walk_s=$walk_max
log "every device reads once (about ${walk_s} s)"
measure service "$walk_s" walk > /dev/null
[ -z "$against" ] || measure against "$walk_s" walk > /dev/null
alternate "$out/results-history-$devices.md" "$rounds" "$duration" "$warmup" "${targets[@]}"
for target in "${targets[@]}"; do
  explain_round "$target"
done
