#!/usr/bin/env bash
# Runs FirmwareManager with the demo data on http://localhost:8880 (README "Quick start").
# ./run.sh --citus: the same on a Citus cluster (a coordinator and two workers, docs/scale-out.md).
#
# Database, in order of preference:
#   1. ConnectionStrings__FirmwareManager, when set: that database is used as it is.
#   2. Docker Compose, when a Docker engine answers: `docker compose up --build` (API and PostgreSQL 16).
#   3. Otherwise a local PostgreSQL cluster in .data/pg (kept between runs), started from the machine's
#      PostgreSQL binaries on a free loopback port and stopped again when the service stops. Missing binaries
#      are installed with apt-get when running as root.
# With --citus: 2. is `docker compose --profile citus up --build api-citus` (on http://localhost:8881), and 3. is
# three local clusters in .data/citus (bench/citus-cluster.sh; ports from FM_CITUS_PORT, default 15532), with
# Citus installed by ../shared/scripts/install-citus.sh when it is missing and that script is there.
#
# Settings: FirmwareManager__DemoData (default true here), ASPNETCORE_URLS (default http://localhost:8880),
# FM_PG_PORT (first port tried for the local cluster, default 15432: below Linux's ephemeral range, 32768-60999,
# where a port held by an outgoing connection looks free to a probe but cannot be bound).
set -euo pipefail
cd "$(dirname "$0")"
root=$(pwd)
export FirmwareManager__DemoData="${FirmwareManager__DemoData:-true}"
citus=false
if [ "${1:-}" = "--citus" ]; then citus=true; shift; fi

run_api() {
  dotnet build "$root/FirmwareManager.Api" -c Release -v quiet -nologo
  # From its output folder, so that its appsettings.json is the configuration it reads.
  cd "$root/FirmwareManager.Api/bin/Release/net10.0"
  dotnet FirmwareManager.Api.dll "$@" &
  api=$!
  trap 'kill -TERM $api 2>/dev/null || true; wait $api 2>/dev/null || true; stop_db' EXIT INT TERM
  wait $api
}
stop_db() { :; }

if [ -n "${ConnectionStrings__FirmwareManager:-}" ]; then
  run_api "$@"
  exit
fi

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  if $citus; then exec docker compose --profile citus up --build api-citus; fi
  exec docker compose up --build
fi

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "run.sh: installing PostgreSQL with apt-get" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  else
    echo "run.sh: no PostgreSQL server binaries under /usr/lib/postgresql; install them (apt-get install postgresql)" \
         "or set ConnectionStrings__FirmwareManager" >&2
    exit 1
  fi
fi

if $citus; then
  if [ ! -f "$pg_bin/../lib/citus.so" ]; then
    installer="$root/../shared/scripts/install-citus.sh"
    if [ "$(id -u)" -eq 0 ] && [ -f "$installer" ]; then
      echo "run.sh: installing Citus with $installer" >&2
      bash "$installer" >&2
    else
      echo "run.sh: Citus is not installed for $pg_bin (docs/scale-out.md says how)" >&2
      exit 1
    fi
  fi
  citus_dir="$root/.data/citus"
  mkdir -p "$root/.data"
  if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$root/.data"; then
    citus_dir="/var/tmp/firmware-manager-$(printf '%s' "$root" | md5sum | cut -c1-12)/citus"
  fi
  mkdir -p "$(dirname "$citus_dir")"
  stop_db() { bash "$root/bench/citus-cluster.sh" stop "$citus_dir" || true; }
  trap stop_db EXIT
  port=$(FM_CITUS_DB=firmware_manager FM_CITUS_PORT="${FM_CITUS_PORT:-15532}" bash "$root/bench/citus-cluster.sh" start "$citus_dir")
  export ConnectionStrings__FirmwareManager="Host=127.0.0.1;Port=$port;Username=postgres;Database=firmware_manager"
  echo "run.sh: Citus coordinator on 127.0.0.1:$port (nodes in $citus_dir); starting the API" >&2
  run_api "$@"
  exit
fi

# PostgreSQL refuses to run as root: as root, the cluster belongs to the postgres user.
as_owner() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
mkdir -p "$root/.data"
data="$root/.data/pg"
if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$root/.data"; then
  # The checkout is in a folder the postgres user cannot enter (under /root, say): keep the cluster in /var/tmp.
  data="/var/tmp/firmware-manager-$(printf '%s' "$root" | md5sum | cut -c1-12)/pg"
fi
if [ ! -f "$data/PG_VERSION" ]; then
  mkdir -p "$data"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$data" "$(dirname "$data")"
  as_owner "$pg_bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-instructions >/dev/null
fi

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if as_owner "$pg_bin/pg_ctl" status -D "$data" >/dev/null 2>&1; then
  port=$(cat "$root/.data/port")
  echo "run.sh: using the local PostgreSQL already running on port $port" >&2
else
  port=${FM_PG_PORT:-15432}
  pg_log="$(dirname "$data")/postgres.log"
  # The probe cannot see a port that is bound but not listening: when PostgreSQL cannot bind, the next port.
  for attempt in $(seq 1 20); do
    until port_free "$port"; do port=$((port + 1)); done
    : > "$pg_log" 2>/dev/null || true
    [ "$(id -u)" -eq 0 ] && chown postgres: "$pg_log"
    if as_owner "$pg_bin/pg_ctl" start -w -D "$data" -l "$pg_log" \
         -o "-p $port -k $data -c listen_addresses=127.0.0.1" >/dev/null 2>&1; then
      break
    fi
    if grep -q -E 'could not bind|Address already in use|could not create any TCP/IP sockets' "$pg_log" && [ "$attempt" -lt 20 ]; then
      echo "run.sh: port $port is taken; trying $((port + 1))" >&2
      port=$((port + 1))
      continue
    fi
    echo "run.sh: PostgreSQL could not start on port $port; its log ($pg_log) says:" >&2
    tail -n 20 "$pg_log" >&2
    exit 1
  done
  echo "$port" > "$root/.data/port"
  stop_db() { as_owner "$pg_bin/pg_ctl" stop -D "$data" -m fast >/dev/null 2>&1 || true; }
  trap stop_db EXIT
fi
exists=$("$pg_bin/psql" -h 127.0.0.1 -p "$port" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'firmware_manager'")
[ "$exists" = 1 ] || "$pg_bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qc "CREATE DATABASE firmware_manager"

export ConnectionStrings__FirmwareManager="Host=127.0.0.1;Port=$port;Username=postgres;Database=firmware_manager"
echo "run.sh: PostgreSQL on 127.0.0.1:$port (data in $data); starting the API" >&2
run_api "$@"
