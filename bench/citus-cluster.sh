#!/usr/bin/env bash
# A Citus cluster on loopback, from this machine's PostgreSQL binaries: a coordinator and workers, each a
# PostgreSQL cluster of its own in DIR/NODE (data, log, socket), owned by the postgres user when run as root.
# Used by ./run.sh --citus (DIR kept between runs) and by the bench scripts (a throwaway DIR).
#
#   bench/citus-cluster.sh start DIR [WORKERS]   initdb what is missing (default 2 workers), start every node, make
#                                               the database (FM_CITUS_DB, default fm) with the extension on each,
#                                               register the workers; prints the coordinator's port
#   bench/citus-cluster.sh add-worker DIR        one more worker, started and registered; prints its name
#   bench/citus-cluster.sh stop DIR [NODE]       stops every node (or one: coordinator, worker1, ...)
#   bench/citus-cluster.sh start-node DIR NODE   starts one stopped node again, on its port
#   bench/citus-cluster.sh port DIR NODE         a node's port
#
# Each node keeps its port (DIR/NODE/port): the coordinator's metadata names the workers by port. Settings:
# FM_CITUS_DB (database), FM_CITUS_PORT (first port tried, default 25432), FM_CITUS_PG_OPTIONS (more postgres -c
# options for every node, e.g. "-c shared_buffers=2GB"; given to start, kept in DIR/pg-options for later nodes). Citus itself: ../shared/scripts/install-citus.sh, or
# `apt-get install postgresql-15-citus` from Citus' own repository (docs/scale-out.md).
set -euo pipefail

command=${1:?usage: citus-cluster.sh start|add-worker|stop|start-node|port DIR [...]}
dir=${2:?usage: citus-cluster.sh $command DIR}
db=${FM_CITUS_DB:-fm}
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
[ -x "$pg_bin/initdb" ] || { echo "citus-cluster: no PostgreSQL server binaries under /usr/lib/postgresql" >&2; exit 1; }
# The postgres user may not enter the caller's folder: commands run from /.
as_pg() { if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else (cd / && "$@"); fi; }
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
psql_node() { local port=$1; shift; PGOPTIONS="-c client_min_messages=warning" "$pg_bin/psql" -h 127.0.0.1 -p "$port" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"; }
say() { echo "citus-cluster: $*" >&2; }

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
# A shard split (isolate_tenant_to_new_shard) decodes changes with Citus' own output plugin; PostgreSQL builds with
# output_plugin_libraries (Debian's 15.20 has it) allow only the plugins it lists.
plugins=""
if "$pg_bin/postgres" --describe-config 2>/dev/null | grep -q '^output_plugin_libraries'; then
  plugins="-c output_plugin_libraries=pgoutput,test_decoding,citus"
fi
[ "$(id -u)" -eq 0 ] && chown postgres: "$dir"

# next_port: the first free port above every port this cluster already holds.
next_port() {
  local port=${FM_CITUS_PORT:-25432} held
  for held in $(cat "$dir"/*/port 2>/dev/null); do [ "$held" -ge "$port" ] && port=$((held + 1)); done
  until port_free "$port"; do port=$((port + 1)); done
  echo "$port"
}

start_node() {
  local node=$1 port
  port=$(cat "$dir/$node/port")
  if as_pg "$pg_bin/pg_ctl" status -D "$dir/$node/data" >/dev/null 2>&1; then return; fi
  port_free "$port" || { say "port $port of $node is taken; free it, or remove $dir to start over"; exit 1; }
  as_pg "$pg_bin/pg_ctl" start -w -t 60 -D "$dir/$node/data" -l "$dir/$node/postgres.log" \
    -o "-p $port -k $dir/$node -c listen_addresses=127.0.0.1 -c shared_preload_libraries=citus -c wal_level=logical \
        -c max_connections=300 -c max_prepared_transactions=300 $plugins $(cat "$dir/pg-options" 2>/dev/null)" >/dev/null ||
    { tail -n 20 "$dir/$node/postgres.log" >&2; exit 1; }
}

# new_node NODE: initdb, a port of its own, started, the database with the extension.
new_node() {
  local node=$1
  if [ ! -f "$dir/$node/data/PG_VERSION" ]; then
    mkdir -p "$dir/$node"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir/$node"
    as_pg "$pg_bin/initdb" -D "$dir/$node/data" -U postgres --auth=trust -E UTF8 --no-instructions >/dev/null
    next_port > "$dir/$node/port"
  fi
  start_node "$node"
  local port
  port=$(cat "$dir/$node/port")
  [ "$(psql_node "$port" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" = 1 ] ||
    psql_node "$port" -d postgres -c "CREATE DATABASE $db"
  psql_node "$port" -d "$db" -c "CREATE EXTENSION IF NOT EXISTS citus"
}

register_worker() {
  local coordinator port=$(cat "$dir/$1/port")
  coordinator=$(cat "$dir/coordinator/port")
  psql_node "$coordinator" -d "$db" -tAc "SELECT citus_add_node('127.0.0.1', $port)" >/dev/null
}

workers() { (cd "$dir" && ls -d worker* 2>/dev/null | sort -V) || true; }

case "$command" in
  start)
    # The options hold for every node started later too (start-node, add-worker).
    [ -n "${FM_CITUS_PG_OPTIONS:-}" ] && printf '%s' "$FM_CITUS_PG_OPTIONS" > "$dir/pg-options"
    want=${3:-2}
    # Every node this cluster already has first: the coordinator's calls below reach its workers.
    for node in coordinator $(workers); do [ -f "$dir/$node/port" ] && start_node "$node"; done
    new_node coordinator
    psql_node "$(cat "$dir/coordinator/port")" -d "$db" -tAc \
      "SELECT citus_set_coordinator_host('127.0.0.1', $(cat "$dir/coordinator/port"))" >/dev/null
    for i in $(seq 1 "$want"); do new_node "worker$i"; done
    for node in $(workers); do start_node "$node"; register_worker "$node"; done
    say "coordinator on 127.0.0.1:$(cat "$dir/coordinator/port"), workers on $(for n in $(workers); do printf '%s ' "$(cat "$dir/$n/port")"; done)(database $db)"
    cat "$dir/coordinator/port"
    ;;
  add-worker)
    n=$(( $(workers | wc -l) + 1 ))
    new_node "worker$n"
    register_worker "worker$n"
    say "worker$n on 127.0.0.1:$(cat "$dir/worker$n/port") added"
    echo "worker$n"
    ;;
  stop)
    for node in ${3:-coordinator $(workers)}; do
      [ -f "$dir/$node/data/PG_VERSION" ] && as_pg "$pg_bin/pg_ctl" stop -D "$dir/$node/data" -m fast -w >/dev/null 2>&1 || true
    done
    ;;
  start-node)
    start_node "${3:?usage: citus-cluster.sh start-node DIR NODE}"
    ;;
  port)
    cat "$dir/${3:?usage: citus-cluster.sh port DIR NODE}/port"
    ;;
  *)
    echo "citus-cluster: unknown command $command" >&2
    exit 2
    ;;
esac
