#!/usr/bin/env bash
# What a read of projected state pays for its X-Projected-Position, in one run on one database:
# bench/projected-reads.sh [--quick] [--engine citus] [--devices N]
# One project of N devices (100,000) with 10 events each, two instances of the API in Release on the same database:
#   statement  FirmwareManager:Projections:PositionRefreshMs=0: each read reads the project's position first
#   known      the default (1000): a read takes the position this instance saw within the last second
# Member reads at 16 connections of three views, each warmed, then measured in alternating rounds:
# GET /devices/{id} (a random device), GET /devices?limit=100, GET /firmware-versions.
# Results in bench/out/results-projected-reads-ENGINE.md; docs/performance.md reports them.
set -euo pipefail
cd "$(dirname "$0")/.."
devices=100000; duration=20; rounds=3; warmup=20; engine=postgresql
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) devices=10000; duration=3; rounds=1; warmup=2 ;;
    --engine) engine=${2:?--engine postgresql|citus}; shift ;;
    --devices) devices=${2:?--devices N}; shift ;;
    *) echo "usage: bench/projected-reads.sh [--quick] [--engine postgresql|citus] [--devices N]" >&2; exit 2 ;;
  esac
  shift
done
source bench/lib.sh
raw="$out/projected-reads-$engine"
mkdir -p "$raw"
rm -f "$raw"/*
trap cleanup EXIT

build_api
if [ "$engine" = citus ]; then
  start_citus -c shared_buffers=1GB
  pg_pids() { for f in "$citus_dir"/*/data/postmaster.pid; do p=$(head -n 1 "$f"); echo "$p" $(pgrep -P "$p" || true); done; }
else
  start_cluster -c shared_buffers=1GB
fi
member_key=fmm_bench_admin_1
declare -A port=() target_pid=()
next_port=18780
for target in statement known; do
  port[$target]=$(free_port "$next_port"); next_port=$((port[$target] + 1))
  # The request log at Warning and no member rate limit, as bench/run.sh's fleet phases (one member key reads).
  start_api "${port[$target]}" "$raw/api-$target.log" "Serilog__MinimumLevel__Override__Serilog.AspNetCore.RequestLoggingMiddleware=Warning" \
    FirmwareManager__RateLimits__Member__PermitsPerSecond=0 \
    FirmwareManager__Projections__PositionRefreshMs=$([ "$target" = statement ] && echo 0 || echo 1000)
  target_pid[$target]=$api_pid
done

log "provisioning $devices devices in one project, 10 events each"
psql_fm -v devices="$devices" -v big="$devices" -v events_per_device=10 -f bench/provision.sql > /dev/null
psql_fm -c "VACUUM ANALYZE" -c "CHECKPOINT"
psql_fm -c "\\copy (SELECT id, 'unused' FROM devices ORDER BY id) TO '$raw/devices.csv' CSV"
# A projection position for the project, as a project that has reported since migration 0037 has.
curl -fsS -o /dev/null -X POST "http://127.0.0.1:${port[known]}/firmware/1" -H "api_key: fmd_b$(echo -n 1 | md5sum | cut -c1-32)" \
  -H 'Content-Type: application/json' -d '{"firmware": "9.9.9", "status": "updated"}'

view=
# measure TARGET SECONDS: a wrk run of the current view at 16 connections; its RESULT line with the CPU time per request
# of the target's process (app_us) and of PostgreSQL's, every node's on Citus (pg_us).
measure() {
  local app0 line requests url="http://127.0.0.1:${port[$1]}"
  app0=$(cpu_of "${target_pid[$1]}"); pg_cpu_mark "$raw/pg-cpu.tmp"
  case $view in
    device) line=$(wrk -t2 -c16 -d"${2}s" --latency -s bench/projected-reads.lua "$url" -- "$raw/devices.csv" "$member_key" 2>&1 | grep '^RESULT') ;;
    devices) line=$(wrk -t2 -c16 -d"${2}s" --latency -s bench/fleet.lua "$url" -- "$member_key" "/devices?limit=100" 2>&1 | grep '^RESULT') ;;
    versions) line=$(wrk -t2 -c16 -d"${2}s" --latency -s bench/fleet.lua "$url" -- "$member_key" "/firmware-versions" 2>&1 | grep '^RESULT') ;;
  esac
  requests=$(echo "$line" | sed -nE 's/.* requests=([^ ]*) .*/\1/p')
  echo "$line $(awk -v a="$(( $(cpu_of "${target_pid[$1]}") - app0 ))" -v p="$(pg_cpu_since "$raw/pg-cpu.tmp")" \
    -v n="$requests" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "app_us=%.0f pg_us=%.0f", a / hz / n * 1e6, p / hz / n * 1e6 }')"
}
for view in device devices versions; do
  log "view: $view"
  alternate "$raw/$view.md" "$rounds" "$duration" "$warmup" known statement
done
{
  echo "Produced by \`bench/projected-reads.sh\` on $(date -u +%Y-%m-%d), engine $engine, $devices devices, commit $(git rev-parse --short HEAD)."
  for view in device devices versions; do echo; echo "GET $(case $view in device) echo '/devices/{id}' ;; devices) echo '/devices?limit=100' ;; versions) echo /firmware-versions ;; esac):"; echo; cat "$raw/$view.md"; done
  echo; echo "Rounds (app_us and pg_us: CPU per request of the target's process and of PostgreSQL):"; echo; sed 's/^/    /' "$raw/rounds.txt"
} > "$out/results-projected-reads-$engine.md"
cat "$out/results-projected-reads-$engine.md"
