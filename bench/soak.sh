#!/usr/bin/env bash
# The soak: bench/soak.sh [--quick]   (docs/reliability.md explains the figures)
# Starts a fresh cluster and the API in Release with a 20,000-device fleet, measures the maximum ingest rate
# (wrk, 64 connections, unthrottled), then runs half that rate for 10 minutes (--quick: 40 s), four reports to
# one history read, and samples the API's resident memory every 5 s. Fails on any error or non-2xx answer, on an
# acknowledged report missing from the table, and (full profile) when the memory at the end is more than 10%
# above its level after the first minute. Writes bench/out/soak.md (the full profile also docs/reliability.md).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=full
[ "${1:-}" = "--quick" ] && profile=quick
if [ "$profile" = quick ]; then soak_s=40; warmup_s=10; calibrate_s=5; else soak_s=600; warmup_s=60; calibrate_s=20; fi
devices=20000
connections=32
source bench/lib.sh
raw="$out/soak"
rm -rf "$raw"
mkdir -p "$raw/acks"

build_api
start_cluster -c shared_buffers=1GB
api_port=$(free_port 18280)
url="http://127.0.0.1:$api_port"
start_api "$api_port" "$raw/api.log" "Serilog__MinimumLevel__Override__Serilog.AspNetCore.RequestLoggingMiddleware=Warning"
psql_fm -v devices="$devices" -v big=4000 -v events_per_device=5 -f bench/provision.sql >/dev/null
psql_fm -c "VACUUM ANALYZE"
psql_fm -c "\\copy (SELECT id, 'fmd_b' || md5(id::text) FROM devices ORDER BY id) TO '$raw/fleet.csv' CSV"

log "calibrating: unthrottled ingest for $calibrate_s s"
wrk -t2 -c64 -d"${calibrate_s}s" --latency -s bench/ingest.lua "$url" -- "$raw/fleet.csv" "" 1 > "$raw/calibrate.txt" 2>&1
max_rps=$(sed -nE 's/^RESULT.* rps=([0-9.]+).*/\1/p' "$raw/calibrate.txt")
rate=$(awk -v r="$max_rps" 'BEGIN { printf "%d", r / 2 }')
log "maximum ${max_rps} req/s; soaking at $rate req/s for $soak_s s"

rss_mb() { awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$api_pid/status"; }
before=$(psql_fm -tAc "SELECT count(*) FROM firmware_events")
wrk -t2 -c"$connections" -d"${soak_s}s" --timeout 10s --latency -s bench/soak.lua "$url" -- \
  "$raw/fleet.csv" "$raw/acks" 2 "$rate" "$connections" > "$raw/soak.txt" 2>&1 &
load_pid=$!
: > "$raw/rss.tsv"
start=$(date +%s)
while kill -0 "$load_pid" 2>/dev/null; do
  printf '%s\t%s\n' "$(( $(date +%s) - start ))" "$(rss_mb)" >> "$raw/rss.tsv"
  sleep 5
done
wait "$load_pid"
line=$(grep '^RESULT' "$raw/soak.txt")
get() { echo "$line" | sed -nE "s/.* $1=([^ ]*).*/\1/p"; }

cat "$raw"/acks/*.txt > "$raw/acked"
psql_fm -c "CREATE TABLE acked (id bigint)" -c "\\copy acked FROM '$raw/acked'"
acked=$(wc -l < "$raw/acked")
missing=$(psql_fm -tAc "SELECT count(*) FROM acked AS a WHERE NOT EXISTS (SELECT 1 FROM firmware_events AS e WHERE e.id = a.id)")
grew=$(( $(psql_fm -tAc "SELECT count(*) FROM firmware_events") - before ))
warm_rss=$(awk -v w="$warmup_s" '$1 >= w { print $2; exit }' "$raw/rss.tsv")
end_rss=$(tail -n 1 "$raw/rss.tsv" | cut -f2)
peak_rss=$(sort -k2 -n "$raw/rss.tsv" | tail -n 1 | cut -f2)
growth=$(awk -v a="$warm_rss" -v b="$end_rss" 'BEGIN { printf "%+.1f", (b - a) * 100 / a }')

results="$out/soak.md"
{
  echo "| soak | figure |"
  echo "|---|---|"
  echo "| maximum ingest rate (wrk, 64 connections, $calibrate_s s, unthrottled) | $max_rps req/s |"
  echo "| soak: $soak_s s at half of it, $connections connections, 4 reports : 1 history read | $(get rps) req/s achieved, $(get requests) requests |"
  echo "| latency p50 / p99 / p99.9 / max | $(get p50_ms) / $(get p99_ms) / $(get p999_ms) / $(get max_ms) ms |"
  echo "| non-2xx answers; connection errors | $(get non2xx) ($(get errors | sed 's/^$/none/')); $(get socket_errors) |"
  echo "| reports acknowledged; missing from the table; the table grew by | $acked; $missing; $grew |"
  echo "| API resident memory: after ${warmup_s} s warm-up / at the end / peak | $warm_rss / $end_rss / $peak_rss MB ($growth %) |"
} > "$results"
cat "$results"
if [ "$profile" = full ]; then
  doc=docs/reliability.md
  { sed -n '1,/<!-- soak:begin -->/p' "$doc"; echo; echo "Produced by \`bench/soak.sh\` on $(date -u +%Y-%m-%d); memory samples in \`bench/out/soak/rss.tsv\`."; echo; cat "$results"; echo; sed -n '/<!-- soak:end -->/,$p' "$doc"; } > "$doc.new"
  mv "$doc.new" "$doc"
fi

failed=0
[ "$(get non2xx)" = 0 ] && [ "$(get socket_errors)" = 0 ] || { log "FAILED: errors during the soak"; failed=1; }
[ "$missing" = 0 ] || { log "FAILED: $missing acknowledged reports are not in the table"; failed=1; }
if [ "$profile" = full ] && awk -v a="$warm_rss" -v b="$end_rss" 'BEGIN { exit !(b > a * 1.10) }'; then
  log "FAILED: resident memory grew by $growth % after the warm-up"; failed=1
fi
exit "$failed"
