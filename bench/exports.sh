#!/usr/bin/env bash
# Exports (issue 29): bench/exports.sh [--quick]   (docs/performance.md explains the figures)
# One fresh cluster, the API in Release; project 1 holds 1,000,000 devices with 10 events each (quick: 20,000 with 2).
# Each export goes to a client that discards the bytes (curl -o /dev/null) and is timed by curl: first byte, total,
# bytes. Rows per second are the rows the database holds for it over the total time; the service's peak memory
# (VmRSS, sampled every 50 ms) is reported above what it was just before that export.
#   devices.csv      GET /devices, Accept: text/csv; then the same with Accept-Encoding: gzip
#   events.ndjson    GET /events, Accept: application/x-ndjson; then with gzip
#   beside ingest    single reports at 64 connections for 30 s (quick: 5 s) alone, then while two exports run
#                    back to back on two connections: ingest's p99 both times.
# Checks (any failure exits 1): every export has exactly its rows (lines counted) and the service logged none as
# ended early, no 5xx during ingest.
# Writes bench/out/exports.md.
set -euo pipefail
cd "$(dirname "$0")/.."
devices=1000000; events_per_device=10; ingest_seconds=30
[ "${1:-}" = --quick ] && { devices=20000; events_per_device=2; ingest_seconds=5; }
source bench/lib.sh
raw="$out/exports"
mkdir -p "$raw"
rm -rf "${raw:?}"/*

build_api
start_cluster -c shared_buffers=2GB -c max_wal_size=8GB
api_port=$(free_port 18780)
start_api "$api_port" "$raw/api.log" "Serilog__MinimumLevel__Override__Serilog.AspNetCore.RequestLoggingMiddleware=Warning"
base="http://127.0.0.1:$api_port"
key=fmm_bench_admin_1

log "provisioning $devices devices with $events_per_device events each, all in project 1"
psql_fm -v devices="$devices" -v big="$devices" -v events_per_device="$events_per_device" -f bench/provision.sql > /dev/null
psql_fm -c "VACUUM ANALYZE" -c "CHECKPOINT"
psql_fm -c "\\copy (SELECT id, 'fmd_b' || md5(id::text) FROM devices ORDER BY id) TO '$raw/all.csv' CSV"
event_rows=$(psql_fm -tA -c "SELECT count(*) FROM firmware_events WHERE project_id = 1")

rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$api_pid/status"; }
# export_run NAME PATH ACCEPT ROWS [gzip]: one export, timed; prints a table row.
export_run() {
  local name=$1 path=$2 accept=$3 rows=$4 gzip=${5:-} before peak sampler timing lines
  local -a extra=()
  [ -n "$gzip" ] && extra=(-H 'Accept-Encoding: gzip')
  before=$(rss_kb)
  ( peak=0; while :; do r=$(rss_kb); [ "$r" -gt "$peak" ] && { peak=$r; echo "$peak" > "$raw/$name.peak"; }; sleep 0.05; done ) &
  sampler=$!
  timing=$(curl -sS -o "$raw/$name.body" -H "api_key: $key" -H "Accept: $accept" "${extra[@]}" \
    -w '%{http_code} %{time_starttransfer} %{time_total} %{size_download}' "$base$path")
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  peak=$(cat "$raw/$name.peak")
  if [ -n "$gzip" ]; then lines=$(gzip -dc "$raw/$name.body" | wc -l); else lines=$(wc -l < "$raw/$name.body"); fi
  rm -f "$raw/$name.body"
  read -r code first total bytes <<< "$timing"
  local expected=$rows
  [ "$accept" = text/csv ] && expected=$((rows + 1))
  [ "$code" = 200 ] || fail "$name answered $code"
  [ "$lines" = "$expected" ] || fail "$name had $lines lines, expected $expected"
  awk -v n="$name" -v r="$rows" -v f="$first" -v t="$total" -v b="$bytes" -v m=$(( (peak - before) / 1024 )) \
    'BEGIN { printf "| %s | %d | %.0f | %.0f | %.1f | %.1f | %d |\n", n, r, r / t, f * 1000, t, b / 1048576, m }'
}

log "warming: a small export of each kind"
curl -sS -o /dev/null -H "api_key: $key" -H 'Accept: text/csv' "$base/devices?firmware=1.1.0"
curl -sS -o /dev/null -H "api_key: $key" -H 'Accept: application/x-ndjson' "$base/events?device_id=1"

{
  echo "| export | rows | rows/s | first byte ms | total s | MB sent | peak memory above before, MB |"
  echo "|---|---|---|---|---|---|---|"
  log "devices as CSV"
  export_run devices.csv /devices text/csv "$devices"
  export_run devices.csv.gz /devices text/csv "$devices" gzip
  log "events as NDJSON"
  export_run events.ndjson /events application/x-ndjson "$event_rows"
  export_run events.ndjson.gz /events application/x-ndjson "$event_rows" gzip
} > "$raw/exports.md"
cat "$raw/exports.md"
# The client above reads every export to its end: the service must not have ended one early (a limit cut exports
# longer than 30 s once, and the line count alone cannot tell a cut that the service ended properly).
cut=$(grep -c -e "The client left the export" -e "failed after it began" "$raw/api.log" || true)
[ "$cut" = 0 ] || fail "$cut exports ended before their last row (see $raw/api.log)"

wrk_p99() { sed -nE 's/^RESULT.* p99_ms=([^ ]*).*/\1/p' "$1"; }
wrk_field() { sed -nE "s/^RESULT.* $2=([^ ]*).*/\1/p" "$1"; }
ingest() {
  wrk -t2 -c64 -d"${ingest_seconds}s" --timeout 10s --latency -s bench/ingest.lua "$base" -- "$raw/all.csv" "" "$1" > "$raw/$2.wrk.txt" 2>&1
}
log "ingest alone for $ingest_seconds s"
ingest 1 ingest-alone
log "ingest beside two exports running back to back"
exporter() {
  while :; do
    curl -sS -o /dev/null -H "api_key: $key" -H "Accept: $1" "$base$2" || true
  done
}
exporter text/csv /devices & e1=$!
exporter application/x-ndjson /events & e2=$!
sleep 1
ingest 2 ingest-beside-exports
kill "$e1" "$e2" 2>/dev/null || true
wait "$e1" "$e2" 2>/dev/null || true
for phase in ingest-alone ingest-beside-exports; do
  errors=$(wrk_field "$raw/$phase.wrk.txt" non2xx)
  [ "${errors:-0}" = 0 ] || fail "$phase: $errors answers other than 2xx"
done
{
  echo
  echo "| ingest, 64 connections | req/s | p99 ms |"
  echo "|---|---|---|"
  echo "| alone | $(wrk_field "$raw/ingest-alone.wrk.txt" rps) | $(wrk_p99 "$raw/ingest-alone.wrk.txt") |"
  echo "| beside two exports | $(wrk_field "$raw/ingest-beside-exports.wrk.txt" rps) | $(wrk_p99 "$raw/ingest-beside-exports.wrk.txt") |"
} | tee -a "$raw/exports.md"
cp "$raw/exports.md" "$out/exports.md"
exit_on_failures exports
