#!/usr/bin/env bash
# The projection under load (issue 28): bench/projections.sh [--quick] [--lag-seconds N]   (docs/performance.md explains the figures)
# One fresh cluster, the API in Release and bench/naive beside it; 10 projects of 100,000 devices each (quick: 2,000),
# each device with its own key. Phases:
#   ten-projects  single reports from random devices of all 10 projects, 64 connections, for 10 minutes (quick:
#                 10 s; --lag-seconds: that many), the naive endpoint measured just before for the ratio; the projection lag sampled every
#                 second meanwhile (events waiting, and the age of the oldest event waiting, over every project);
#                 then the time from the load's end until nothing waits.
#   flood         project 2's devices reporting singly on 16 connections, alone and then while project 1's devices
#                 send 1000-event batches on 4 connections: project 2's p99 both times. Then the same two at a fixed
#                 pace (bench/paced.lua): project 2 at a tenth of the ten-projects rate (one project's share of it),
#                 so that its p99 is the service's at that rate, not the queue of a saturated one.
# Ends with verify-projections (every projected figure recounted from the events). Writes bench/out/projections.md.
set -euo pipefail
cd "$(dirname "$0")/.."
per_project=100000; duration=60; lag_duration=600; warmup=30
while [ $# -gt 0 ]; do
  case $1 in
    --quick) per_project=2000; duration=5; lag_duration=10; warmup=2 ;;
    --lag-seconds) lag_duration=$2; shift ;;
    *) echo "usage: bench/projections.sh [--quick] [--lag-seconds N]" >&2; exit 2 ;;
  esac
  shift
done
source bench/lib.sh
raw="$out/projections"
mkdir -p "$raw"
rm -rf "${raw:?}"/*

build_api
build_naive
start_cluster -c shared_buffers=2GB -c max_wal_size=8GB
api_port=$(free_port 18680)
start_api "$api_port" "$raw/api.log" "Serilog__MinimumLevel__Override__Serilog.AspNetCore.RequestLoggingMiddleware=Warning"
naive_port=$(free_port $((api_port + 1)))
start_naive "$naive_port" "$raw/naive.log"

log "provisioning 10 projects of $per_project devices, each with its own key"
# provision.sql puts :big devices in project 1 and spreads the rest over projects 2 to 10.
psql_fm -v devices=$((per_project * 10)) -v big="$per_project" -v events_per_device=1 -f bench/provision.sql > /dev/null
psql_fm -c "VACUUM ANALYZE" -c "CHECKPOINT"
psql_fm -c "\\copy (SELECT id, 'fmd_b' || md5(id::text) FROM devices ORDER BY id) TO '$raw/all.csv' CSV"
psql_fm -c "\\copy (SELECT id, 'fmd_b' || md5(id::text) FROM devices WHERE project_id = 1 ORDER BY id) TO '$raw/p1.csv' CSV"
psql_fm -c "\\copy (SELECT id, 'fmd_b' || md5(id::text) FROM devices WHERE project_id = 2 ORDER BY id) TO '$raw/p2.csv' CSV"

# wrk_run URL CONNECTIONS SECONDS SCRIPT ARGS...: prints wrk's RESULT line.
wrk_run() {
  local url=$1 conns=$2 seconds=$3 script=$4; shift 4
  wrk -t2 -c"$conns" -d"${seconds}s" --timeout 10s --latency -s "bench/$script" "$url" -- "$@" 2>&1 | grep '^RESULT'
}
value() { echo "$1" | sed -nE "s/.* $2=([^ ]*).*/\1/p"; }

# Every project's events waiting, and the age in seconds of the oldest event waiting (its receive time against now).
lag_sql="
SELECT COALESCE(sum(a.last_arrival - COALESCE(p.position, 0)), 0),
       round(COALESCE(max(extract(epoch FROM now() - (
           SELECT e.received_at
           FROM firmware_events AS e
           WHERE e.project_id = a.project_id
             AND e.arrival > COALESCE(p.position, 0)
           ORDER BY e.arrival
           LIMIT 1))), 0)::numeric, 3)
FROM project_event_arrivals AS a
LEFT JOIN project_projections AS p ON p.project_id = a.project_id"
sample_lag() {
  while :; do
    printf '%s %s\n' "$(now_ms)" "$(psql_fm -tA -F ' ' -c "$lag_sql")"
    sleep 1
  done
}
# percentile FILE COLUMN P: the P-th percentile of a column of numbers.
percentile() { awk -v c="$2" '{ print $c }' "$1" | sort -g | awk -v p="$3" '{ v[NR] = $1 } END { i = int((NR * p / 100) + 0.999999); if (i < 1) i = 1; print v[i] + 0 }'; }
until_projected() {
  local t0 waiting
  t0=$(now_ms)
  while waiting=$(psql_fm -tA -F ' ' -c "$lag_sql" | cut -d' ' -f1); [ "$waiting" != 0 ]; do
    [ $(( $(now_ms) - t0 )) -lt 120000 ] || { echo "-1"; return; }
    sleep 0.05
  done
  echo $(( $(now_ms) - t0 ))
}

log "warming the service and the naive endpoint for ${warmup} s each"
wrk_run "http://127.0.0.1:$api_port" 64 "$warmup" ingest.lua "$raw/all.csv" "" "$(next_offset)" > /dev/null
wrk_run "http://127.0.0.1:$naive_port" 64 "$warmup" ingest.lua "$raw/all.csv" "" "$(next_offset)" /naive/ > /dev/null
until_projected > /dev/null

log "naive endpoint, 64 connections, ${duration} s"
naive=$(wrk_run "http://127.0.0.1:$naive_port" 64 "$duration" ingest.lua "$raw/all.csv" "" "$(next_offset)" /naive/)
log "naive: $naive"
log "ten-projects: single reports over 10 projects, 64 connections, ${lag_duration} s, the lag sampled every second"
sample_lag > "$raw/lag.txt" &
sampler=$!
ten=$(wrk_run "http://127.0.0.1:$api_port" 64 "$lag_duration" ingest.lua "$raw/all.csv" "" "$(next_offset)")
drained_ms=$(until_projected)
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
log "ten-projects: $ten; nothing waiting ${drained_ms} ms after the load ended"
samples=$(wc -l < "$raw/lag.txt")
half=$((samples / 2))
head -n "$half" "$raw/lag.txt" > "$raw/lag-first-half.txt"
tail -n +$((half + 1)) "$raw/lag.txt" > "$raw/lag-second-half.txt"
mean_of() { awk -v c="$2" '{ s += $c; n++ } END { printf "%.3f", (n ? s / n : 0) }' "$1"; }

log "flood: project 2 singly on 16 connections, alone for ${duration} s"
alone=$(wrk_run "http://127.0.0.1:$api_port" 16 "$duration" ingest.lua "$raw/p2.csv" "" "$(next_offset)")
log "alone: $alone"
until_projected > /dev/null
# A tenth of the ten-projects rate over 16 connections: each connection's pause in ms (the latency adds to it).
pause_ms=$(awk -v r="$(value "$ten" rps)" 'BEGIN { printf "%d", 16 * 1000 * 10 / r }')
log "flood: project 2 at a fixed pace (16 connections, ${pause_ms} ms between a connection's reports), alone for ${duration} s"
paced_alone=$(wrk_run "http://127.0.0.1:$api_port" 16 "$duration" paced.lua "$raw/p2.csv" "" "$(next_offset)" /firmware/ "$pause_ms")
log "paced alone: $paced_alone"
until_projected > /dev/null
log "flood: project 2 singly on 16 connections while project 1 sends 1000-event batches on 4, ${duration} s"
wrk_run "http://127.0.0.1:$api_port" 4 "$duration" batch.lua "$raw/p1.csv" "$(next_offset)" 1000 > "$raw/flooder.txt" &
flooder=$!
beside=$(wrk_run "http://127.0.0.1:$api_port" 16 "$duration" ingest.lua "$raw/p2.csv" "" "$(next_offset)")
wait "$flooder"
flood=$(cat "$raw/flooder.txt")
log "beside the flood: $beside; the flood: $flood"
until_projected > /dev/null
log "flood: project 2 at the same pace while project 1 sends 1000-event batches on 4, ${duration} s"
wrk_run "http://127.0.0.1:$api_port" 4 "$duration" batch.lua "$raw/p1.csv" "$(next_offset)" 1000 > "$raw/flooder-paced.txt" &
flooder=$!
paced_beside=$(wrk_run "http://127.0.0.1:$api_port" 16 "$duration" paced.lua "$raw/p2.csv" "" "$(next_offset)" /firmware/ "$pause_ms")
wait "$flooder"
flood_paced=$(cat "$raw/flooder-paced.txt")
log "paced beside the flood: $paced_beside; the flood: $flood_paced"
flood_drained_ms=$(until_projected)

verify_projections projections

{
  echo "| phase | requests/s | p99 ms | non-2xx |"
  echo "|---|---|---|---|"
  echo "| naive endpoint, 64 connections, ${duration} s | $(value "$naive" rps) | $(value "$naive" p99_ms) | $(value "$naive" non2xx) |"
  echo "| service, 10 projects, 64 connections, ${lag_duration} s | $(value "$ten" rps) | $(value "$ten" p99_ms) | $(value "$ten" non2xx) |"
  echo "| project 2 alone, 16 connections | $(value "$alone" rps) | $(value "$alone" p99_ms) | $(value "$alone" non2xx) |"
  echo "| project 2 beside project 1's 1000-event batches | $(value "$beside" rps) | $(value "$beside" p99_ms) | $(value "$beside" non2xx) |"
  echo "| project 1's 1000-event batches, 4 connections (events/s: x1000) | $(value "$flood" rps) | $(value "$flood" p99_ms) | $(value "$flood" non2xx) |"
  echo "| project 2 alone, 16 connections at a fixed pace (${pause_ms} ms between a connection's reports) | $(value "$paced_alone" rps) | $(value "$paced_alone" p99_ms) | $(value "$paced_alone" non2xx) |"
  echo "| project 2 at that pace beside project 1's 1000-event batches | $(value "$paced_beside" rps) | $(value "$paced_beside" p99_ms) | $(value "$paced_beside" non2xx) |"
  echo "| project 1's 1000-event batches meanwhile (events/s: x1000) | $(value "$flood_paced" rps) | $(value "$flood_paced" p99_ms) | $(value "$flood_paced" non2xx) |"
  echo
  echo "Service / naive: $(awk -v a="$(value "$ten" rps)" -v b="$(value "$naive" rps)" 'BEGIN { printf "%.2fx", a / b }')."
  echo
  echo "| projection lag during ten-projects ($samples samples, one a second) | p50 | p99 | max | mean, first half | mean, second half |"
  echo "|---|---|---|---|---|---|"
  echo "| events waiting, over every project | $(percentile "$raw/lag.txt" 2 50) | $(percentile "$raw/lag.txt" 2 99) | $(percentile "$raw/lag.txt" 2 100) | $(mean_of "$raw/lag-first-half.txt" 2) | $(mean_of "$raw/lag-second-half.txt" 2) |"
  echo "| age of the oldest event waiting, s | $(percentile "$raw/lag.txt" 3 50) | $(percentile "$raw/lag.txt" 3 99) | $(percentile "$raw/lag.txt" 3 100) | $(mean_of "$raw/lag-first-half.txt" 3) | $(mean_of "$raw/lag-second-half.txt" 3) |"
  echo
  echo "Nothing waiting ${drained_ms} ms after the ten-projects load ended, ${flood_drained_ms} ms after the flood ended."
  echo "verify-projections at the end: $(tail -n 1 "$raw/verify-projections.txt" 2>/dev/null)"
} > "$out/projections.md"
cat "$out/projections.md"
exit_on_failures projections
