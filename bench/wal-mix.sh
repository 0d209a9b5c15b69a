#!/usr/bin/env bash
# What the service writes to PostgreSQL's log for a report: bench/wal-mix.sh [--projects 1|10] [--seconds N]
# One fresh cluster (shared_buffers 2 GB, max_wal_size 8 GB, as bench/ingest-baselines.sh, and any -c options in
# FM_BENCH_PG_OPTIONS, e.g. "-c wal_compression=lz4"), the API in Release, 100,000 devices in each of 1 or 10 projects
# (10), each with its own key (bench/provision.sql); 30 s of single reports from random devices at 64 connections to
# warm the API and its key cache, a CHECKPOINT, then N seconds (60) more. Prints the reports stored, the WAL bytes per
# report, and pg_waldump's record statistics over those N seconds as records and bytes per report, largest first
# (full-page images are the bytes of the first change of each page after the checkpoint, as after any checkpoint in
# production). Raw: bench/out/wal-mix/. What it found is in docs/performance.md ("One index fewer on devices").
set -euo pipefail
cd "$(dirname "$0")/.."
projects=10; seconds=60
while [ $# -gt 0 ]; do
  case $1 in
    --projects) projects=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    *) echo "usage: bench/wal-mix.sh [--projects 1|10] [--seconds N]" >&2; exit 2 ;;
  esac
done
[ "$projects" = 1 ] || [ "$projects" = 10 ] || { echo "--projects takes 1 or 10" >&2; exit 2; }
source bench/lib.sh
raw="$out/wal-mix"
mkdir -p "$raw"
rm -f "$raw"/*
trap cleanup EXIT

build_api
# shellcheck disable=SC2086 # FM_BENCH_PG_OPTIONS is a list of -c options
start_cluster -c shared_buffers=2GB -c max_wal_size=8GB ${FM_BENCH_PG_OPTIONS:-}
api_port=$(free_port 18580)
# As bench/run.sh: the request log at Warning (one line per request would measure the console).
start_api "$api_port" "$raw/api.log" "Serilog__MinimumLevel__Override__Serilog.AspNetCore.RequestLoggingMiddleware=Warning"
log "provisioning 100000 devices in each of $projects project(s), each with its own key"
psql_fm -v devices=$((100000 * projects)) -v big=100000 -v events_per_device=1 -f bench/provision.sql > /dev/null
psql_fm -c "VACUUM ANALYZE" -c "CHECKPOINT"
psql_fm -c "\\copy (SELECT id, 'fmd_b' || md5(id::text) FROM devices WHERE project_id <= $projects ORDER BY id) TO '$raw/devices.csv' CSV"

log "warming for 30 s"
wrk -t2 -c64 -d30s --latency -s bench/ingest.lua "http://127.0.0.1:$api_port" -- "$raw/devices.csv" "" 1 /firmware/ 2>&1 | grep '^RESULT' > "$raw/warm.txt" || true
psql_fm -c "CHECKPOINT"
start=$(psql_fm -Atc "SELECT pg_current_wal_insert_lsn()")
before=$(psql_fm -Atc "SELECT count(*) FROM firmware_events")
log "measuring for $seconds s"
wrk -t2 -c64 -d"${seconds}s" --latency -s bench/ingest.lua "http://127.0.0.1:$api_port" -- "$raw/devices.csv" "" 2 /firmware/ 2>&1 | grep '^RESULT' > "$raw/load.txt"
# The projection's last steps of the load's events, then the log's end.
sleep 2
end=$(psql_fm -Atc "SELECT pg_current_wal_insert_lsn()")
after=$(psql_fm -Atc "SELECT count(*) FROM firmware_events")
reports=$((after - before))
[ "$reports" -gt 0 ] || { echo "no report was stored" >&2; exit 1; }
as_pg "$pg_bin/pg_waldump" -p "$cluster/data/pg_wal" -s "$start" -e "$end" --stats=record > "$raw/stats.txt" 2>&1 || true
grep -q '^Total' "$raw/stats.txt" || { cat "$raw/stats.txt" >&2; echo "pg_waldump gave no statistics" >&2; exit 1; }

{
  echo "load: $(cat "$raw/load.txt")"
  echo "reports stored: $reports; WAL: $(psql_fm -Atc "SELECT pg_wal_lsn_diff('$end', '$start')") bytes, $(psql_fm -Atc "SELECT round(pg_wal_lsn_diff('$end', '$start') / $reports)") a report"
  # pg_waldump --stats=record: type, records, record bytes, full-page image bytes, combined bytes, each with its share
  # in parentheses (brackets on the Total line).
  strip='{ gsub(/\([^)]*\)|\[[^]]*\]/, "") }'
  awk -v n="$reports" "$strip"' $1 == "Total" { printf "of which full-page images: %.0f bytes a report\n", $4 / n }' "$raw/stats.txt"
  awk -v n="$reports" "$strip"'
    $1 ~ /\// && $2 ~ /^[0-9]+$/ && $5 > 0 { printf "%10.0f bytes a report  %-28s %8.2f records (full-page images %.0f bytes)\n", $5 / n, $1, $2 / n, $4 / n }
  ' "$raw/stats.txt" | sort -s -k1,1 -g -r
} | tee "$out/results-wal-mix.txt"
