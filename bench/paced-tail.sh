#!/usr/bin/env bash
# One tenant at its ordinary rate on a large fleet, the service against the naive endpoint, and where the service's
# time goes: bench/paced-tail.sh [--quick] [--devices N] [--project-devices N] [--load-seconds N] [--pause MS]
#                                [--connections N] [--rounds N] [--hold-projection] [-- VAR=value...]
# One fresh cluster (shared_buffers 1 GB, max_wal_size 8 GB, and any -c options in FM_BENCH_PG_OPTIONS), the API in
# Release (with the VAR=value settings after --) and bench/naive beside it. Provisions --devices (1,000,000; quick:
# 20,000) over 10 projects as bench/projections.sh does; single reports from all of them at 64 connections for
# --load-seconds (60; quick: 5); project 2's first --project-devices (all) warmed for 15 s on each target; then
# --rounds (2) alternating 15-s rounds of the service and the naive endpoint, project 2 on --connections (16) with
# --pause (63) ms before each request of a connection (bench/paced.lua). For each service round: the WAL written
# (pg_stat_wal) and the time of a report's stages (firmware_manager_ingest_stage_duration_seconds, /metrics before
# and after: count, mean, and the bucket that holds the p50 and the p99). --hold-projection: project 2's projection
# row is held locked (FOR UPDATE) through each service round, so the projector skips the project and its share of
# the tail shows. Writes bench/out/paced-tail.md; docs/performance.md ("another tenant at a fixed pace") has what it found.
set -euo pipefail
cd "$(dirname "$0")/.."
devices=1000000; project_devices=1000000; load_seconds=60; pause=63; connections=16; rounds=2; hold=0
while [ $# -gt 0 ]; do
  case $1 in
    --quick) devices=20000; load_seconds=5; rounds=1 ;;
    --devices) devices=$2; shift ;;
    --project-devices) project_devices=$2; shift ;;
    --load-seconds) load_seconds=$2; shift ;;
    --pause) pause=$2; shift ;;
    --connections) connections=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --hold-projection) hold=1 ;;
    --) shift; break ;;
    *) echo "usage: bench/paced-tail.sh [--quick] [--devices N] [--project-devices N] [--load-seconds N] [--pause MS] [--connections N] [--rounds N] [--hold-projection] [-- VAR=value...]" >&2; exit 2 ;;
  esac
  shift
done
source bench/lib.sh
raw="$out/paced-tail"
mkdir -p "$raw"
rm -rf "${raw:?}"/*
trap cleanup EXIT

build_api
build_naive
# shellcheck disable=SC2086 # the options are words
start_cluster -c shared_buffers=1GB -c max_wal_size=8GB ${FM_BENCH_PG_OPTIONS:-}
api_port=$(free_port 18980)
start_api "$api_port" "$raw/api.log" "Serilog__MinimumLevel__Override__Serilog.AspNetCore.RequestLoggingMiddleware=Warning" "$@"
naive_port=$(free_port $((api_port + 1)))
start_naive "$naive_port" "$raw/naive.log"

log "provisioning $devices devices over 10 projects, each with its own key"
psql_fm -v devices="$devices" -v big=$((devices / 10)) -v events_per_device=1 -f bench/provision.sql > /dev/null
psql_fm -c "VACUUM ANALYZE" -c "CHECKPOINT"
psql_fm -c "\\copy (SELECT id, 'fmd_b' || md5(id::text) FROM devices ORDER BY id) TO '$raw/all.csv' CSV"
psql_fm -c "\\copy (SELECT id, 'fmd_b' || md5(id::text) FROM devices WHERE project_id = 2 ORDER BY id LIMIT $project_devices) TO '$raw/p2.csv' CSV"

log "single reports from every device, 64 connections, ${load_seconds} s"
wrk -t2 -c64 -d"${load_seconds}s" --timeout 10s -s bench/ingest.lua "http://127.0.0.1:$api_port" -- "$raw/all.csv" "" 1 > /dev/null 2>&1
log "project 2's devices warmed for 15 s on each target"
wrk -t2 -c16 -d15s --timeout 10s -s bench/ingest.lua "http://127.0.0.1:$api_port" -- "$raw/p2.csv" "" 2 > /dev/null 2>&1
wrk -t2 -c16 -d15s --timeout 10s -s bench/ingest.lua "http://127.0.0.1:$naive_port" -- "$raw/p2.csv" "" 2 /naive/ > /dev/null 2>&1

# paced URL PREFIX OFFSET: a 15-s round of project 2 at the pace; prints wrk's RESULT line.
paced() {
  wrk -t2 -c"$connections" -d15s --timeout 10s --latency -s bench/paced.lua "$1" -- "$raw/p2.csv" "" "$3" "$2" "$pause" 2>&1 | grep '^RESULT'
}
wal() { psql_fm -tA -F ' ' -c "SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal"; }

# stages BEFORE AFTER: each stage's count, mean and the upper bounds of the buckets holding its p50 and p99.
stages() {
  python3 - "$1" "$2" <<'PY'
import re, sys
def parse(path):
    series = {}
    for line in open(path):
        m = re.match(r'firmware_manager_ingest_stage_duration_seconds_(bucket|count|sum)\{([^}]*)\} (\S+)', line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            series[(labels.get('stage'), m.group(1), labels.get('le'))] = float(m.group(3))
    return series
before, after = parse(sys.argv[1]), parse(sys.argv[2])
delta = lambda key: after.get(key, 0) - before.get(key, 0)
for stage in ('key_lookup', 'queued', 'transaction'):
    count, total = delta((stage, 'count', None)), delta((stage, 'sum', None))
    buckets = sorted((float(k[2]), delta(k)) for k in after if k[0] == stage and k[1] == 'bucket')
    bound = lambda p: next((f"{le * 1000:g} ms" for le, n in buckets if count and n >= p * count), "-")
    mean = f"{1000 * total / count:.2f} ms" if count else "-"
    print(f"| {stage} | {count:.0f} | {mean} | {bound(0.5)} | {bound(0.99)} |")
PY
}

{
  echo "| round | target | requests/s | p50 ms | p99 ms | WAL records, full-page images, KB a report |"
  echo "|---|---|---|---|---|---|"
} > "$raw/rounds.md"
: > "$raw/stages.md"
value() { echo "$1" | sed -nE "s/.* $2=([^ ]*).*/\1/p"; }
for round in $(seq 1 "$rounds"); do
  holder=""
  if [ "$hold" = 1 ]; then
    psql_fm -c "BEGIN" -c "SELECT 1 FROM project_projections WHERE project_id = 2 FOR UPDATE" -c "SELECT pg_sleep(16)" -c "COMMIT" > /dev/null &
    holder=$!
    sleep 0.5
  fi
  curl -fsS "http://127.0.0.1:$api_port/metrics" > "$raw/metrics-before-$round.txt"
  read -r records0 fpi0 bytes0 < <(wal)
  line=$(paced "http://127.0.0.1:$api_port" /firmware/ $((10 + round)))
  read -r records1 fpi1 bytes1 < <(wal)
  sleep 0.5 # the exporter may answer a scrape from the last 300 ms again
  curl -fsS "http://127.0.0.1:$api_port/metrics" > "$raw/metrics-after-$round.txt"
  [ -z "$holder" ] || wait "$holder"
  log "round $round, service: $line"
  n=$(value "$line" requests)
  wal_per=$(awk -v r=$((records1 - records0)) -v f=$((fpi1 - fpi0)) -v b=$((bytes1 - bytes0)) -v n="$n" \
    'BEGIN { printf "%.1f, %.2f, %.1f", r / n, f / n, b / n / 1024 }')
  echo "| $round | service | $(value "$line" rps) | $(value "$line" p50_ms) | $(value "$line" p99_ms) | $wal_per |" >> "$raw/rounds.md"
  {
    echo "| round $round: stage | count | mean | p50 within | p99 within |"
    echo "|---|---|---|---|---|"
    stages "$raw/metrics-before-$round.txt" "$raw/metrics-after-$round.txt"
    echo
  } >> "$raw/stages.md"
  line=$(paced "http://127.0.0.1:$naive_port" /naive/ $((20 + round)))
  log "round $round, naive: $line"
  echo "| $round | naive | $(value "$line" rps) | $(value "$line" p50_ms) | $(value "$line" p99_ms) | |" >> "$raw/rounds.md"
done

{
  echo "Project 2 ($(wc -l < "$raw/p2.csv") devices) of $devices, $connections connections, ${pause} ms before each request; projection held: $([ "$hold" = 1 ] && echo yes || echo no)."
  echo
  cat "$raw/rounds.md"
  echo
  cat "$raw/stages.md"
} > "$out/paced-tail.md"
cat "$out/paced-tail.md"
