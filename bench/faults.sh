#!/usr/bin/env bash
# Faults under load: bench/faults.sh [--quick]   (docs/reliability.md explains the figures)
# Starts a fresh cluster (fsync and synchronous commit on) and the API in Release, provisions a small fleet, and
# for each fault runs wrk posting events from random devices while the fault happens: PostgreSQL stopped and
# started again, restarted (fast and immediate), its connections killed (pg_terminate_backend), SIGTERM to the
# API, two API instances with one killed by SIGKILL, and one device flooding. wrk records the id of every event
# acknowledged with a 2xx; the script checks each is in the table, counts every answer by status, and measures
# how long the API took to answer 503 and to recover. Writes bench/out/faults.md (the full profile also the
# results section of docs/reliability.md). After the restarts and the two instances, every projected figure is
# recounted from the events (verify-projections). Fails when an acknowledged event is missing, an event is stored
# twice, the API answered 500, it did not recover within 5 seconds, or a recount differs. --quick: shorter phases, for CI.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=full
[ "${1:-}" = "--quick" ] && profile=quick
if [ "$profile" = quick ]; then duration=8; outage=2; else duration=20; outage=5; fi
devices=2000
source bench/lib.sh
raw="$out/faults"
rm -rf "$raw"
mkdir -p "$raw"

build_api
start_cluster
api_port=$(free_port 18180)
api_url="http://127.0.0.1:$api_port"
# The drain on SIGTERM is bounded by the shutdown timeout; 10 s here, so a hang shows as a failure, not a wait.
api_env=(FirmwareManager__Limits__ShutdownTimeoutSeconds=10 "Serilog__MinimumLevel__Override__Serilog.AspNetCore.RequestLoggingMiddleware=Warning")
start_api "$api_port" "$raw/api.log" "${api_env[@]}"
psql_fm -v devices="$devices" -v big=400 -v events_per_device=1 -f bench/provision.sql >/dev/null
# wrk's devices, and device 1 kept apart for the probe and the flood.
psql_fm -c "\\copy (SELECT id, 'fmd_b' || md5(id::text) FROM devices WHERE id > 1 ORDER BY id) TO '$raw/fleet.csv' CSV"
psql_fm -c "CREATE TABLE acked (id bigint)"
probe_key="fmd_b$(printf 1 | md5sum | cut -d' ' -f1)"
printf '1,%s\n' "$probe_key" > "$raw/flooder.csv"

mkdir -p "$raw/probe.acks"

# A database outage: PostgreSQL stopped (fast), down for a while, started again.
log "fault: PostgreSQL stopped for ${outage} s under load"
load pg-stop "$api_url" 32
sleep 2
pg_ctl_do stop -m fast
t503=$(until_status "$api_url/health" 503)
post_down=$(post_probe "$api_url")
sleep "$outage"
pg_ctl_start
recovered=$(until_ok "$api_url")
wait "$load_pid"
[ "$post_down" = 503 ] || fail "pg-stop: a report during the outage got $post_down, not 503"
[ "$recovered" -ge 0 ] && [ "$recovered" -le 5000 ] || fail "pg-stop: no recovery within 5 s ($recovered ms)"
check pg-stop "/health 503 after $t503 ms; a report during the outage: $post_down; recovered $recovered ms after PostgreSQL was back"

for mode in fast immediate; do
  log "fault: PostgreSQL restarted ($mode) under load"
  load "pg-restart-$mode" "$api_url" 32
  sleep 2
  pg_ctl_do stop -m "$mode"
  pg_ctl_start
  recovered=$(until_ok "$api_url")
  wait "$load_pid"
  [ "$recovered" -ge 0 ] && [ "$recovered" -le 5000 ] || fail "pg-restart-$mode: no recovery within 5 s ($recovered ms)"
  check "pg-restart-$mode" "recovered $recovered ms after PostgreSQL was back"
  # A restart kills every projection step in flight: the recount shows whether one was kept in part or twice.
  verify_projections "pg-restart-$mode"
done

log "fault: every API connection killed (pg_terminate_backend) each 0.2 s for $((duration / 2)) s under load"
load pg-terminate "$api_url" 32
sleep 1
killed=0
for _ in $(seq 1 $((duration * 5 / 2))); do
  n=$(psql_fm -tAc "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = 'fm' AND pid <> pg_backend_pid() AND backend_type = 'client backend'" 2>/dev/null)
  killed=$((killed + n))
  sleep 0.2
done
recovered=$(until_ok "$api_url")
wait "$load_pid"
check pg-terminate "$killed connections killed; next report acknowledged after $recovered ms"

log "fault: SIGTERM to the API under load"
load sigterm "$api_url" 32
sleep 3
t0=$(now_ms)
kill -TERM "$api_pid"
wait "$api_pid" || true
drained=$(( $(now_ms) - t0 ))
wait "$load_pid" || true
[ "$drained" -le 10000 ] || fail "sigterm: the drain took $drained ms"
check sigterm "the API drained and exited $drained ms after SIGTERM"
start_api "$api_port" "$raw/api-restarted.log" "${api_env[@]}"
first_pid=$api_pid

log "fault: two API instances, one killed with SIGKILL under load"
second_port=$(free_port $((api_port + 1)))
start_api "$second_port" "$raw/api-2.log" "${api_env[@]}"
second_pid=$api_pid
load sigkill-killed "$api_url" 16
killed_load=$load_pid
load sigkill-survivor "http://127.0.0.1:$second_port" 16
sleep 3
kill -KILL "$first_pid"
wait "$first_pid" 2>/dev/null || true
wait "$killed_load" || true
wait "$load_pid"
check sigkill-killed "killed 3 s in"
check sigkill-survivor "the other instance"
[ "$(field sigkill-survivor non2xx)" = 0 ] && [ "$(field sigkill-survivor socket_errors)" = 0 ] ||
  fail "sigkill: the surviving instance answered errors: $(field sigkill-survivor errors)"
api_url="http://127.0.0.1:$second_port"
# Two instances projected the same projects, and one was killed mid-step.
verify_projections sigkill

log "abuse: one device floods (8 connections, one key) while the fleet reports"
load flood-baseline "$api_url" 16
wait "$load_pid"
load flood-others "$api_url" 16
others_pid=$load_pid
mkdir -p "$raw/flood-flooder.acks"
wrk -t1 -c8 -d"${duration}s" --timeout 10s --latency -s bench/ingest.lua "$api_url" -- \
  "$raw/flooder.csv" "$raw/flood-flooder.acks" "$(next_offset)" > "$raw/flood-flooder.wrk.txt" 2>&1
wait "$others_pid"
check flood-baseline "the fleet alone: p99 $(field flood-baseline p99_ms) ms"
check flood-others "the fleet beside the flood: p99 $(field flood-others p99_ms) ms"
check flood-flooder "device 1 alone: $(field flood-flooder ok) acknowledged"
case " $(field flood-flooder errors) " in *" 429:"*) ;; *) fail "flood: the flooder was not limited";; esac
case " $(field flood-others errors) " in *" 429:"*) fail "flood: other devices were limited";; esac

log "abuse: one device paced at up to 400 requests/s (a broken firmware's retry loop) while the fleet reports"
load flood-paced-others "$api_url" 16
others_pid=$load_pid
mkdir -p "$raw/flood-paced-flooder.acks"
wrk -t1 -c4 -d"${duration}s" --timeout 10s --latency -s bench/soak.lua "$api_url" -- \
  "$raw/flooder.csv" "$raw/flood-paced-flooder.acks" "$(next_offset)" 400 4 > "$raw/flood-paced-flooder.wrk.txt" 2>&1
wait "$others_pid"
check flood-paced-others "the fleet beside the paced flood: p99 $(field flood-paced-others p99_ms) ms"
check flood-paced-flooder "device 1 at $(field flood-paced-flooder rps) requests/s: $(field flood-paced-flooder ok) answered 2xx"
case " $(field flood-paced-flooder errors) " in *" 429:"*) ;; *) fail "paced flood: the flooder was not limited";; esac
case " $(field flood-paced-others errors) " in *" 429:"*) fail "paced flood: other devices were limited";; esac
check probe "device 1's single reports while faults were recovering (curl, one at a time)"

results="$out/faults.md"
{
  results_table
  echo
  echo "wrk, 2 threads, $duration s a phase, reports from $((devices - 1)) devices with their own keys; PostgreSQL $("$pg_bin/postgres" --version | awk '{ print $3 }') with fsync and synchronous_commit on."
} > "$results"
cat "$results"
if [ "$profile" = full ]; then
  doc=docs/reliability.md
  { sed -n '1,/<!-- faults:begin -->/p' "$doc"; echo; echo "Produced by \`bench/faults.sh\` on $(date -u +%Y-%m-%d)."; echo; cat "$results"; echo; sed -n '/<!-- faults:end -->/,$p' "$doc"; } > "$doc.new"
  mv "$doc.new" "$doc"
fi
exit_on_failures faults
log "done: nothing acknowledged was lost"
