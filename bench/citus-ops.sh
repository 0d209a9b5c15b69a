#!/usr/bin/env bash
# Operations on Citus under load: bench/citus-ops.sh [--quick]   (docs/scale-out.md explains the figures)
# Starts a throwaway Citus cluster (a coordinator and two workers, with logical replication for moving shards while they
# are written) and the API in Release, provisions a fleet (project 1 holds a fifth of it), and while wrk posts
# events from random devices:
#   worker-outage  one worker is stopped, then started again: reports of devices whose project lives there get 503
#                  and are acknowledged again within 5 s of its return; the other projects' devices keep working;
#   rebalance      a third worker is added and citus_rebalance_start() moves shards onto it;
#   isolate        project 1 is moved to a shard of its own (isolate_tenant_to_new_shard), then to the new worker.
# wrk records every event acknowledged with a 2xx; the script checks each is in the table, nothing is stored twice
# and no answer was a 500 (bench/lib.sh, as bench/faults.sh does). Writes bench/out/citus-ops.md. --quick: shorter
# phases and a smaller fleet, for CI.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=full
[ "${1:-}" = "--quick" ] && profile=quick
# Shards per distributed table: Citus' default (32) in the full profile, fewer in the quick one, so that the
# rebalance moves fewer of them.
if [ "$profile" = quick ]; then duration=8; outage=2; devices=2000; shards=8; else duration=20; outage=5; devices=20000; shards=32; fi
source bench/lib.sh
raw="$out/citus-ops"
rm -rf "$raw"
mkdir -p "$raw"

build_api
# Prepared transactions are not recovered in the background, so that pg_dist_transaction counts every two-phase
# commit: ingest must make none.
start_citus -c max_wal_senders=30 -c max_replication_slots=30 -c citus.shard_count=$shards -c citus.recover_2pc_interval=-1
api_port=$(free_port 18280)
api_url="http://127.0.0.1:$api_port"
start_api "$api_port" "$raw/api.log" FirmwareManager__Limits__ShutdownTimeoutSeconds=10 \
  "Serilog__MinimumLevel__Override__Serilog.AspNetCore.RequestLoggingMiddleware=Warning"
log "provisioning $devices devices in 10 projects"
psql_fm -v devices="$devices" -v big=$((devices / 5)) -v events_per_device=1 -f bench/provision.sql >/dev/null
psql_fm -c "CREATE TABLE acked (id bigint)"
key_of() { printf 'fmd_b%s' "$(printf '%s' "$1" | md5sum | cut -d' ' -f1)"; }
probe_key=$(key_of 1)

# The node that holds a value's shard of a distributed table (from the catalog alone).
node_of() {
  psql_fm -Atc "SELECT n.nodename || ':' || n.nodeport FROM pg_dist_placement AS p JOIN pg_dist_node AS n USING (groupid)
                WHERE p.shardid = get_shard_id_for_distribution_column('$1', $2)"
}
project_node() { node_of devices "$1"; }
victim=worker2
victim_node="127.0.0.1:$(bash bench/citus-cluster.sh port "$citus_dir" "$victim")"
# A probe device of a project on the victim, and one of a project elsewhere whose key's digest is elsewhere too:
# the first needs the victim, the second must not.
down_device="" up_device=""
for project in $(seq 1 10); do
  if [ "$(project_node "$project")" = "$victim_node" ]; then
    [ -n "$down_device" ] && continue
    down_project=$project
    down_device=$(psql_fm -Atc "SELECT min(id) FROM devices WHERE project_id = $project AND id > 1")
  elif [ -z "$up_device" ]; then
    for device in $(psql_fm -Atc "SELECT id FROM devices WHERE project_id = $project AND id > 1 ORDER BY id LIMIT 50"); do
      if [ "$(node_of api_key_digests "sha256(convert_to('$(key_of "$device")', 'UTF8'))")" != "$victim_node" ]; then
        up_project=$project up_device=$device
        break
      fi
    done
  fi
done
[ -n "$down_device" ] && [ -n "$up_device" ] || { echo "no probe devices on and off $victim_node" >&2; exit 1; }
psql_fm -c "\\copy (SELECT id, 'fmd_b' || md5(id::text) FROM devices WHERE id NOT IN (1, $down_device, $up_device) ORDER BY id) TO '$raw/fleet.csv' CSV"
log "probes: device $down_device (project $down_project, on $victim_node) and device $up_device (project $up_project, elsewhere)"

two_phase() { psql_fm -Atc "SELECT count(*) FROM pg_dist_transaction"; }
two_phase_before=$(two_phase)
log "worker outage: $victim stopped for $outage s under load"
load worker-outage "$api_url" 32
sleep 2
bash bench/citus-cluster.sh stop "$citus_dir" "$victim"
sleep 0.5
down_answer=$(post_probe "$api_url" "$down_device" "$(key_of "$down_device")")
up_answer=$(post_probe "$api_url" "$up_device" "$(key_of "$up_device")")
sleep "$outage"
bash bench/citus-cluster.sh start-node "$citus_dir" "$victim"
recovered=$(until_ok "$api_url" "$down_device" "$(key_of "$down_device")")
wait "$load_pid"
two_phase_commits=$(( $(two_phase) - two_phase_before ))
[ "$two_phase_commits" -eq 0 ] || fail "worker-outage: ingest made $two_phase_commits two-phase commits"
[ "$down_answer" = 503 ] || fail "worker-outage: a report needing $victim got $down_answer, not 503"
[ "${up_answer:0:1}" = 2 ] || fail "worker-outage: a report of a project elsewhere got $up_answer, not 2xx"
[ "$recovered" -ge 0 ] && [ "$recovered" -le 5000 ] || fail "worker-outage: no recovery within 5 s ($recovered ms)"
check worker-outage "during the outage: $down_answer for a project on $victim, $up_answer for one elsewhere; recovered $recovered ms after $victim was back; $two_phase_commits two-phase commits"

# The operations run while wrk reports, for as long as they take: wrk ends (SIGINT) 2 s after they do.
end_load() { sleep 2; kill -INT "$load_pid" 2>/dev/null || true; wait "$load_pid" || true; }

log "rebalance: a third worker added and shards moved onto it under load"
load rebalance "$api_url" 32 600
sleep 2
new_worker=$(bash bench/citus-cluster.sh add-worker "$citus_dir")
new_node="127.0.0.1:$(bash bench/citus-cluster.sh port "$citus_dir" "$new_worker")"
t0=$(now_ms)
psql_fm -c "SELECT citus_rebalance_start()" >/dev/null
psql_fm -c "SET statement_timeout = '5min'" -c "SELECT citus_rebalance_wait()" >/dev/null
rebalance_ms=$(( $(now_ms) - t0 ))
moved=$(psql_fm -Atc "SELECT count(*) FROM citus_shards WHERE nodename || ':' || nodeport = '$new_node' AND citus_table_type = 'distributed'")
state=$(psql_fm -Atc "SELECT state FROM citus_rebalance_status()")
end_load
[ "$moved" -gt 0 ] || fail "rebalance: no shard moved to $new_node ($state)"
[ "$state" = finished ] || fail "rebalance: it ended $state"
check rebalance "$moved shards moved to the new worker in $rebalance_ms ms ($state)"

log "isolate: project 1 (a fifth of the fleet) moved to a shard of its own, then to the new worker, under load"
load isolate "$api_url" 32 600
sleep 2
t0=$(now_ms)
# block_writes: the split's logical replication can stall for good under concurrent updates (Citus issue 6790,
# open; seen here: "publisher did not send replica identity column" on project_event_arrivals, again and again).
# Blocking writes to the split shards while it copies them costs their reports a wait instead.
shard=$(psql_fm -Atc "SELECT isolate_tenant_to_new_shard('devices', 1, 'CASCADE', shard_transfer_mode => 'block_writes')")
from_node=$(project_node 1)
if [ "$from_node" != "$new_node" ]; then
  psql_fm -c "SELECT citus_move_shard_placement($shard, '${from_node%:*}', ${from_node#*:}, '${new_node%:*}', ${new_node#*:})" >/dev/null
fi
isolate_ms=$(( $(now_ms) - t0 ))
alone=$(psql_fm -Atc "SELECT shardminvalue = shardmaxvalue FROM pg_dist_shard WHERE shardid = $shard")
end_load
[ "$alone" = t ] || fail "isolate: project 1's shard $shard holds other projects too"
[ "$(project_node 1)" = "$new_node" ] || fail "isolate: project 1 is on $(project_node 1), not $new_node"
check isolate "project 1 alone in shard $shard on the new worker after $isolate_ms ms"
check probe "the probe devices' single reports (curl, one at a time)"

results="$out/citus-ops.md"
{
  results_table
  echo
  echo "wrk, 2 threads, 32 connections, $duration s for the outage, for as long as the operation took for the others, reports from $((devices - 3)) devices in 10 projects with their own keys;"
  echo "Citus $(psql_fm -Atc "SELECT extversion FROM pg_extension WHERE extname = 'citus'") on PostgreSQL $("$pg_bin/postgres" --version | awk '{ print $3 }'), a coordinator and two workers (then three) on loopback, fsync on."
} > "$results"
cat "$results"
exit_on_failures citus-ops
log "done: nothing acknowledged was lost"
