#!/usr/bin/env bash
# The projection while a snapshot is held, as an export holds one for minutes (issue 28, issue 29):
# bench/held-snapshot.sh [--quick] [--devices N] [--seconds N] [--held-rounds N]
# One fresh cluster (shared_buffers 2 GB, max_wal_size 8 GB), the API in Release (or the build FM_API_DIR names: a
# worktree of an older commit, for a before and after), --devices (100,000) in one project, each with its own key;
# single reports from random devices at 64 connections (bench/ingest.lua) in rounds of --seconds (20): one to warm,
# one with nothing held, then --held-rounds (3) while another session holds a REPEATABLE READ snapshot (what an
# export's transaction does), so that no dead row anywhere can be removed. For each round: requests/s and p99, the
# projection's steps and events (the API's /metrics, before and after) and their mean duration, the age of the
# oldest event waiting for the projection (sampled every second, the round's worst), and the dead rows and index
# size of projection_step_transitions at its end. Writes bench/out/held-snapshot.md; docs/performance.md ("A step's
# changes keyed by the step") has what it found.
set -euo pipefail
cd "$(dirname "$0")/.."
devices=100000; seconds=20; held_rounds=3
while [ $# -gt 0 ]; do
  case $1 in
    --quick) devices=5000; seconds=3; held_rounds=1 ;;
    --devices) devices=$2; shift ;;
    --seconds) seconds=$2; shift ;;
    --held-rounds) held_rounds=$2; shift ;;
    *) echo "usage: bench/held-snapshot.sh [--quick] [--devices N] [--seconds N] [--held-rounds N]" >&2; exit 2 ;;
  esac
  shift
done
source bench/lib.sh
raw="$out/held-snapshot"
mkdir -p "$raw"
rm -rf "${raw:?}"/*
trap cleanup EXIT

[ -n "${FM_API_DIR:-}" ] || build_api
start_cluster -c shared_buffers=2GB -c max_wal_size=8GB
api_port=$(free_port 18980)
start_api "$api_port" "$raw/api.log" "Serilog__MinimumLevel__Override__Serilog.AspNetCore.RequestLoggingMiddleware=Warning"
log "provisioning $devices devices in one project, each with its own key"
psql_fm -v devices="$devices" -v big="$devices" -v events_per_device=1 -f bench/provision.sql > /dev/null
psql_fm -c "VACUUM ANALYZE" -c "CHECKPOINT" > /dev/null
psql_fm -c "\\copy (SELECT id, 'fmd_b' || md5(id::text) FROM devices ORDER BY id) TO '$raw/devices.csv' CSV"

# The age in seconds of the oldest event the projection has not applied (0 when none waits).
oldest_sql="
SELECT round(COALESCE(extract(epoch FROM now() - (
           SELECT e.received_at
           FROM firmware_events AS e
           WHERE e.project_id = 1
             AND e.arrival > COALESCE(p.position, 0)
           ORDER BY e.arrival
           LIMIT 1)), 0)::numeric, 3)
FROM project_event_arrivals AS a
LEFT JOIN project_projections AS p ON p.project_id = a.project_id
WHERE a.project_id = 1"
# metric NAME: the API's value of a Prometheus series (summed over its labels).
metric() { curl -fsS "http://127.0.0.1:$api_port/metrics" | awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $2 } END { print s + 0 }'; }
offset=0
# round LABEL: one round of reports; appends its row to the table.
round() {
  offset=$((offset + 1))
  local steps0 events0 seconds0 line
  steps0=$(metric firmware_manager_projection_steps_total)
  events0=$(metric firmware_manager_projection_events_total)
  seconds0=$(metric firmware_manager_projection_step_duration_seconds_sum)
  ( while :; do psql_fm -Atc "$oldest_sql"; sleep 1; done ) > "$raw/oldest.txt" &
  local sampler=$!
  line=$(wrk -t2 -c64 -d"${seconds}s" --latency -s bench/ingest.lua "http://127.0.0.1:$api_port" -- "$raw/devices.csv" "" "$offset" /firmware/ | grep '^RESULT')
  kill "$sampler"; wait "$sampler" 2>/dev/null || true
  local steps events busy
  steps=$(awk -v a="$steps0" -v b="$(metric firmware_manager_projection_steps_total)" 'BEGIN { print b - a }')
  events=$(awk -v a="$events0" -v b="$(metric firmware_manager_projection_events_total)" 'BEGIN { print b - a }')
  busy=$(awk -v a="$seconds0" -v b="$(metric firmware_manager_projection_step_duration_seconds_sum)" 'BEGIN { print b - a }')
  log "$1: $line"
  echo "| $1 | $(echo "$line" | sed -nE 's/.* rps=([^ ]*).*/\1/p') | $(echo "$line" | sed -nE 's/.* p99_ms=([^ ]*).*/\1/p') | $steps | $(awk -v e="$events" -v s="$steps" 'BEGIN { printf "%.0f", (s > 0 ? e / s : 0) }') | $(awk -v b="$busy" -v s="$steps" 'BEGIN { printf "%.1f", (s > 0 ? 1000 * b / s : 0) }') | $(awk -v b="$busy" -v t="$seconds" 'BEGIN { printf "%.0f%%", 100 * b / t }') | $(sort -g "$raw/oldest.txt" | tail -n 1) | $(psql_fm -Atc "SELECT n_dead_tup || ', ' || pg_size_pretty(pg_indexes_size(relid)) FROM pg_stat_user_tables WHERE relname = 'projection_step_transitions'") |" >> "$raw/table.md"
}

round "warming"
round "nothing held"
log "holding a snapshot for ${held_rounds} rounds"
psql_fm -c "BEGIN ISOLATION LEVEL REPEATABLE READ" -c "SELECT count(*) FROM devices" -c "SELECT pg_sleep(3600)" > /dev/null 2>&1 &
holder=$!
sleep 1
for i in $(seq 1 "$held_rounds"); do round "snapshot held, round $i"; done
psql_fm -Atc "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(3600)'" > /dev/null
wait "$holder" || true

{
  echo "Produced by \`bench/held-snapshot.sh\` on $(date -u +%F) at $(git rev-parse --short HEAD)${FM_API_DIR:+ (API from $FM_API_DIR)}: $devices devices in one project, 64 connections, rounds of ${seconds} s."
  echo
  echo "| round | requests/s | p99 ms | projection steps | events a step | ms a step | projecting, of the round | oldest event waiting, s (worst) | projection_step_transitions: dead rows, index |"
  echo "|---|---|---|---|---|---|---|---|---|"
  cat "$raw/table.md"
} > "$out/held-snapshot.md"
cat "$out/held-snapshot.md"
