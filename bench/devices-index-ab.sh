#!/usr/bin/env bash
# What the devices' indexes cost ingest and its projection, in alternating rounds on one fleet and one API:
# bench/devices-index-ab.sh [--experiment tags|hot|hot-firmware] [--seconds N] [--pairs N] [--tagged]
# 100,000 devices in one project, each with its own key, untagged as bench/provision.sql makes them (--tagged: every
# device given two tags first). The two variants ("before" and "after"):
#   tags  the tags' GIN index of every device (before migration 0049) against the index of tagged devices only (0049);
#         with --tagged the two hold the same entries
#   hot   the devices as migrated against the devices without the three indexes that hold a column a projection step
#         changes (devices_silent_after_update_idx, devices_project_firmware_idx, devices_project_hardware_idx), so
#         that most of the step's updates are HOT: the bound of a design that keeps those columns apart; both at
#         fillfactor 80 (the table rewritten once first). An experiment, not a proposal to drop the indexes: they serve
#         /devices' filters and the fleet views
#   hot-firmware  as hot, but the "after" devices keep devices_project_firmware_idx: the share of updates that stay
#         HOT while the column a firmware event changes most (current_firmware) is still indexed, as it would be in a
#         table of the volatile columns apart (its filter by version needs that index wherever the column lives)
# Between rounds one variant's indexes are built and the other's dropped (CONCURRENTLY), then VACUUM and CHECKPOINT. A
# round: N s (30) of single reports at 64 connections with the projection held (as bench/ingest-baselines.sh's target
# held), then the backlog projected (its CPU an event, the WAL it wrote an event; tags: the GIN index's pages; hot:
# the share of the devices' updates that were HOT), then N s of reports with the projection running (req/s, p99, CPU
# a request). The pairs alternate which variant goes first: rounds later in a run ran faster on 2026-12-07, whatever
# their variant (docs/performance.md, "The tags' index of tagged devices only").
# Rounds: bench/out/devices-index-ab/rounds.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
devices=100000; secs=30; pairs=4; tagged=0; experiment=tags
while [ $# -gt 0 ]; do
  case $1 in
    --experiment) experiment=$2; shift 2 ;;
    --seconds) secs=$2; shift 2 ;;
    --pairs) pairs=$2; shift 2 ;;
    --tagged) tagged=1; shift ;;
    *) echo "usage: bench/devices-index-ab.sh [--experiment tags|hot|hot-firmware] [--seconds N] [--pairs N] [--tagged]" >&2; exit 2 ;;
  esac
done
case $experiment in tags|hot|hot-firmware) ;; *) echo "--experiment takes tags, hot or hot-firmware" >&2; exit 2 ;; esac
source bench/lib.sh
raw="$out/devices-index-ab"; mkdir -p "$raw"; rm -f "$raw"/*
build_api
start_cluster -c shared_buffers=2GB -c max_wal_size=8GB
api_port=$(free_port 18580)
start_api "$api_port" "$raw/api.log" "Serilog__MinimumLevel__Override__Serilog.AspNetCore.RequestLoggingMiddleware=Warning"
psql_fm -v devices=$devices -v big=$devices -v events_per_device=1 -f bench/provision.sql > /dev/null
[ "$tagged" = 0 ] || psql_fm -c "UPDATE devices SET tags = ARRAY['site:' || (id % 50), 'wave-' || (id % 7)]"
[ "$experiment" = tags ] || psql_fm -c "ALTER TABLE devices SET (fillfactor = 80)" -c "VACUUM FULL devices"
psql_fm -c "VACUUM ANALYZE" -c "CHECKPOINT"
psql_fm -c "\\copy (SELECT id, 'fmd_b' || md5(id::text) FROM devices WHERE project_id <= 1 ORDER BY id) TO '$raw/devices.csv' CSV"
waiting_sql="SELECT COALESCE(sum(a.last_arrival - COALESCE(p.position, 0)), 0) FROM project_event_arrivals AS a
  LEFT JOIN project_projections AS p ON p.project_id = a.project_id WHERE a.project_id <= 1"
until_projected() { until [ "$(psql_fm -tAc "$waiting_sql")" = 0 ]; do sleep 0.1; done; }
hold() {
  PGAPPNAME=fm-bench-hold psql_fm -c "INSERT INTO project_projections (project_id, position) VALUES (1, 0) ON CONFLICT DO NOTHING" \
    -c "BEGIN" -c "SELECT 1 FROM project_projections WHERE project_id = 1 FOR UPDATE" -c "SELECT pg_sleep(3600)" > /dev/null 2>&1 &
  holder=$!
  until [ "$(psql_fm -tAc "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'fm-bench-hold' AND query LIKE '%pg_sleep%'")" = 1 ]; do sleep 0.05; done
}
release() { psql_fm -tAc "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'fm-bench-hold'" > /dev/null; wait "$holder" || true; }
variant() {
  if [ "$experiment" = tags ] && [ "$1" = before ]; then
    psql_fm -c "SET client_min_messages = warning" -c "CREATE INDEX CONCURRENTLY IF NOT EXISTS devices_tags_idx ON devices USING gin (tags)" \
      -c "DROP INDEX CONCURRENTLY IF EXISTS devices_tagged_idx"
  elif [ "$experiment" = tags ]; then
    psql_fm -c "SET client_min_messages = warning" \
      -c "CREATE INDEX CONCURRENTLY IF NOT EXISTS devices_tagged_idx ON devices USING gin (tags) WHERE tags <> '{}'" \
      -c "DROP INDEX CONCURRENTLY IF EXISTS devices_tags_idx"
  elif [ "$1" = before ]; then
    psql_fm -c "SET client_min_messages = warning" \
      -c "CREATE INDEX CONCURRENTLY IF NOT EXISTS devices_silent_after_update_idx ON devices (project_id, current_firmware, last_reported_at) WHERE last_event_status IN ('installed', 'updated')" \
      -c "CREATE INDEX CONCURRENTLY IF NOT EXISTS devices_project_firmware_idx ON devices (project_id, current_firmware, id)" \
      -c "CREATE INDEX CONCURRENTLY IF NOT EXISTS devices_project_hardware_idx ON devices (project_id, hardware, id) WHERE hardware IS NOT NULL"
  else
    psql_fm -c "SET client_min_messages = warning" -c "DROP INDEX CONCURRENTLY IF EXISTS devices_silent_after_update_idx" \
      -c "DROP INDEX CONCURRENTLY IF EXISTS devices_project_hardware_idx"
    [ "$experiment" = hot-firmware ] || psql_fm -c "SET client_min_messages = warning" -c "DROP INDEX CONCURRENTLY IF EXISTS devices_project_firmware_idx"
  fi
  psql_fm -c "VACUUM devices" -c "CHECKPOINT"
}
# The experiment's figure of a round: tags, the GIN index's pages; hot, the share of the devices' updates that were HOT
# since the mark (the statistics are flushed a moment after a backend goes idle).
updates() { psql_fm -tAc "SELECT n_tup_upd || ' ' || n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'devices'"; }
figure() {
  if [ "$experiment" = tags ]; then
    echo "GIN index $(psql_fm -tAc "SELECT pg_relation_size(c.oid) / 8192 FROM pg_class AS c WHERE relname IN ('devices_tags_idx', 'devices_tagged_idx')") pages"
  else
    sleep 1; updates | awk -v h="$1" '{ split(h, a, " "); u = $1 - a[1]; printf "HOT %d%% of the devices'"'"' updates\n", u ? 100 * ($2 - a[2]) / u : 0 }'
  fi
}
wrk_round() { wrk -t2 -c64 -d"${1}s" --latency -s bench/ingest.lua "http://127.0.0.1:$api_port" -- "$raw/devices.csv" "" "$(next_offset)" /firmware/ 2>&1 | grep '^RESULT'; }
log "warm-up"; wrk_round 30 > /dev/null; until_projected
for pair in $(seq 1 "$pairs"); do
  order="before after"; [ $((pair % 2)) = 1 ] || order="after before"
  for v in $order; do
    variant "$v"
    hold
    a0=$(cpu_of "$api_pid"); pg_cpu_mark "$raw/pg.tmp"
    line=$(wrk_round "$secs"); n=$(echo "$line" | sed -nE 's/.* requests=([0-9]+).*/\1/p')
    a1=$(cpu_of "$api_pid"); p=$(pg_cpu_since "$raw/pg.tmp")
    events=$(psql_fm -tAc "$waiting_sql"); release; u0=$(updates)
    w0=$(psql_fm -tAc "SELECT wal_bytes FROM pg_stat_wal"); t0=$(now_ms); b0=$(cpu_of "$api_pid"); pg_cpu_mark "$raw/pg.tmp"; until_projected; w1=$(psql_fm -tAc "SELECT wal_bytes FROM pg_stat_wal"); fig=$(figure "$u0")
    bp=$(pg_cpu_since "$raw/pg.tmp"); b1=$(cpu_of "$api_pid"); ms=$(( $(now_ms) - t0 ))
    s0=$(cpu_of "$api_pid"); pg_cpu_mark "$raw/pg.tmp"
    sline=$(wrk_round "$secs"); sn=$(echo "$sline" | sed -nE 's/.* requests=([0-9]+).*/\1/p')
    s1=$(cpu_of "$api_pid"); sp=$(pg_cpu_since "$raw/pg.tmp"); until_projected
    awk -v v="$v" -v pr="$pair" -v n="$n" -v a=$((a1 - a0)) -v p="$p" -v e="$events" -v ms="$ms" -v b=$((b1 - b0)) -v bp="$bp" \
        -v sn="$sn" -v s=$((s1 - s0)) -v sp="$sp" -v c="$clk" -v secs="$secs" -v rps="$(echo "$line" | sed -nE 's/.* rps=([0-9.]+).*/\1/p')" \
        -v wal="$(( (w1 - w0) / events ))" -v fig="$fig" -v srps="$(echo "$sline" | sed -nE 's/.* rps=([0-9.]+).*/\1/p')" -v sp99="$(echo "$sline" | sed -nE 's/.* p99_ms=([0-9.]+).*/\1/p')" 'BEGIN {
      printf "%s %d | held %.0f req/s, µs a report API %.1f PG %.1f | backlog %d events %d ms, µs an event API %.1f PG %.1f, WAL %d B an event, %s | service %.0f req/s p99 %s ms, µs a request API %.1f PG %.1f\n",
        v, pr, rps, a / c * 1e6 / n, p / c * 1e6 / n, e, ms, b / c * 1e6 / e, bp / c * 1e6 / e, wal, fig, srps, sp99, s / c * 1e6 / sn, sp / c * 1e6 / sn }' | tee -a "$raw/rounds.txt"
  done
done
psql_fm -tAc "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'devices'" | tee -a "$raw/rounds.txt"
