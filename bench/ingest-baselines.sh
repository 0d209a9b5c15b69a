#!/usr/bin/env bash
# Single reports against the two baselines of issue 28, in one run on one database (bench/ingest-baselines.sh
# [--quick]): 100,000 devices in one project, each with its own key; 64 connections; each target warmed, then
# measured in alternating rounds:
#   service  POST /firmware/{id}: the product (keys, validation, group commit, derived state)
#   naive    POST /naive/{id}: bench/naive, ASP.NET Core + Npgsql, one INSERT per request, no key
#   limit    POST /limit/{id}: bench/naive, the same rows through a channel and multi-row INSERTs (group commit)
# and reports each one's requests/s and p99, and the service's as fractions of the two, in
# bench/out/results-baselines.md. Absolute figures move by 2x from day to day on these machines: the ratios are
# what compares runs.
set -euo pipefail
cd "$(dirname "$0")/.."
devices=100000; duration=20; rounds=3; warmup=30
[ "${1:-}" = --quick ] && { devices=10000; duration=3; rounds=1; warmup=2; }
source bench/lib.sh
raw="$out/baselines"
mkdir -p "$raw"
rm -f "$raw"/*

build_api
build_naive
start_cluster -c shared_buffers=2GB -c max_wal_size=8GB
api_port=$(free_port 18580)
# As bench/run.sh: the request log at Warning (one line per request would measure the console); devices keep their
# rate limit, which a device picked at random out of 100,000 never reaches.
start_api "$api_port" "$raw/api.log" "Serilog__MinimumLevel__Override__Serilog.AspNetCore.RequestLoggingMiddleware=Warning"
naive_port=$(free_port $((api_port + 1)))
start_naive "$naive_port" "$raw/naive.log"

log "provisioning $devices devices in one project, each with its own key"
psql_fm -v devices="$devices" -v big="$devices" -v events_per_device=1 -f bench/provision.sql > /dev/null
psql_fm -c "VACUUM ANALYZE" -c "CHECKPOINT"
psql_fm -c "\\copy (SELECT id, 'fmd_b' || md5(id::text) FROM devices ORDER BY id) TO '$raw/devices.csv' CSV"

declare -A url=( [service]="http://127.0.0.1:$api_port" [naive]="http://127.0.0.1:$naive_port" [limit]="http://127.0.0.1:$naive_port" )
declare -A prefix=( [service]=/firmware/ [naive]=/naive/ [limit]=/limit/ )
run_offset=0
# measure TARGET SECONDS: a wrk run of 64 connections; prints its RESULT line.
measure() {
  run_offset=$((run_offset + 1))
  wrk -t2 -c64 -d"${2}s" --latency -s bench/ingest.lua "${url[$1]}" -- "$raw/devices.csv" "" "$run_offset" "${prefix[$1]}" 2>&1 | grep '^RESULT'
}
alternate "$out/results-baselines.md" "$rounds" "$duration" "$warmup" service naive limit
