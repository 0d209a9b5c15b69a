# Shared by bench/run.sh, bench/faults.sh and bench/soak.sh (sourced, not run): installs wrk and the PostgreSQL
# binaries when missing, builds the API in Release, starts a throwaway cluster and API processes on loopback,
# and removes everything again on exit.
root=$(pwd)
out="$root/bench/out"
log() { printf '[%s %s] %s\n' "$(basename "$0" .sh)" "$(date +%H:%M:%S)" "$*" >&2; }

sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
command -v wrk >/dev/null || { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
ls /usr/lib/postgresql/*/bin/pgbench >/dev/null 2>&1 ||
  { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
# Paths given to it are absolute: the postgres user may not enter the checkout (under /root, say).
as_pg() { if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }
free_port() { local p=$1; while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done; echo "$p"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

build_api() {
  log "building the API (Release)"
  dotnet build "$root/FirmwareManager.Api" -c Release -v quiet -nologo >/dev/null
}

# start_cluster [postgres -c options...]: a fresh cluster (fsync and synchronous commit on, as in production)
# on a free port; sets cluster, pg_port, postmaster; creates the database fm.
cluster=""
api_pids=()
start_cluster() {
  cluster=$(mktemp -d /var/tmp/fm-bench-XXXXXX)
  [ "$(id -u)" -eq 0 ] && chown postgres: "$cluster"
  pg_port=$(free_port 57432)
  log "starting PostgreSQL on 127.0.0.1:$pg_port"
  as_pg "$pg_bin/initdb" -D "$cluster/data" -U postgres --auth=trust -E UTF8 --no-instructions >/dev/null
  pg_options="-p $pg_port -k $cluster -c listen_addresses=127.0.0.1 -c max_connections=300 $*"
  pg_ctl_start
  "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -X -qc "CREATE DATABASE fm"
}
# start_citus [postgres -c options...]: a throwaway Citus cluster instead (bench/citus-cluster.sh: a coordinator and
# two workers on loopback, the database fm with the extension on each); sets citus_dir, and pg_port and postmaster
# to the coordinator's, so that psql_fm and start_api use it.
citus_dir=""
start_citus() {
  citus_dir=$(mktemp -d /var/tmp/fm-citus-XXXXXX)
  log "starting a Citus cluster (a coordinator and two workers) in $citus_dir"
  pg_port=$(FM_CITUS_PG_OPTIONS="$*" bash "$root/bench/citus-cluster.sh" start "$citus_dir")
  postmaster=$(head -n 1 "$citus_dir/coordinator/data/postmaster.pid")
}
pg_ctl_start() {
  as_pg "$pg_bin/pg_ctl" start -w -D "$cluster/data" -l "$cluster/postgres.log" -o "$pg_options" >/dev/null
  postmaster=$(head -n 1 "$cluster/data/postmaster.pid")
}
pg_ctl_do() { as_pg "$pg_bin/pg_ctl" "$@" -w -D "$cluster/data" -l "$cluster/postgres.log" >/dev/null; }
psql_fm() { "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d fm -X -q "$@"; }

# start_api PORT LOGFILE [VAR=value...]: the API on 127.0.0.1:PORT, waits until /health answers 200; sets api_pid.
start_api() {
  local port=$1 logfile=$2; shift 2
  (
    cd "$root/FirmwareManager.Api/bin/Release/net10.0"
    exec env ConnectionStrings__FirmwareManager="Host=127.0.0.1;Port=$pg_port;Username=postgres;Database=fm;Maximum Pool Size=${FM_BENCH_POOL:-128}" \
      ASPNETCORE_URLS="http://127.0.0.1:$port" "$@" dotnet FirmwareManager.Api.dll > "$logfile" 2>&1
  ) &
  api_pid=$!
  api_pids+=("$api_pid")
  until curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; do
    kill -0 "$api_pid" 2>/dev/null || { cat "$logfile"; echo "the API exited" >&2; exit 1; }
    sleep 0.05
  done
}

cleanup() {
  for pid in "${api_pids[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
  if [ -n "$citus_dir" ]; then
    bash "$root/bench/citus-cluster.sh" stop "$citus_dir" || true
    rm -rf "$citus_dir"
  fi
  if [ -n "$cluster" ]; then
    as_pg "$pg_bin/pg_ctl" stop -D "$cluster/data" -m fast >/dev/null 2>&1 || true
    rm -rf "$cluster"
  fi
}
trap cleanup EXIT

# CPU seconds (user+system) of processes, from /proc, in clock ticks.
cpu_of() { local total=0 t; for p in "$@"; do t=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0); total=$((total + t)); done; echo "$total"; }
pg_pids() { echo "$postmaster" $(pgrep -P "$postmaster" || true); }
clk=$(getconf CLK_TCK)
