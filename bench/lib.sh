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
# next_offset: 1, 2, 3... one more at each call in this run, for the offset bench/ingest.lua takes (each moves the
# devices' clocks 27.8 hours on: bench/common.lua). Kept in a file: loads run in command substitutions, whose variables
# do not come back to the script.
mkdir -p "$out"; offset_file="$out/.run-offset"; echo 0 > "$offset_file"
next_offset() { local n; n=$(( $(cat "$offset_file") + 1 )); echo "$n" > "$offset_file"; echo "$n"; }

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
  as_pg "$pg_bin/initdb" -D "$cluster/data" -U postgres --auth=trust -E UTF8 --no-instructions >/dev/null
  # Below Linux's ephemeral range (32768-60999): there a port held by an outgoing connection (the tests', a
  # browser's) looks free to the probe but cannot be bound. A port PostgreSQL still cannot bind: the next one.
  pg_port=$(free_port 27432)
  local attempt
  for attempt in 1 2 3 4 5; do
    log "starting PostgreSQL on 127.0.0.1:$pg_port"
    pg_options="-p $pg_port -k $cluster -c listen_addresses=127.0.0.1 -c max_connections=300 $*"
    if as_pg "$pg_bin/pg_ctl" start -w -D "$cluster/data" -l "$cluster/postgres.log" -o "$pg_options" >/dev/null; then
      break
    fi
    tail -n 5 "$cluster/postgres.log" >&2 || true
    [ "$attempt" -lt 5 ] || { echo "PostgreSQL did not start" >&2; exit 1; }
    pg_port=$(free_port $((pg_port + 1)))
  done
  postmaster=$(head -n 1 "$cluster/data/postmaster.pid")
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
# start_standby: a hot standby of the cluster (pg_basebackup -R, streaming) in $cluster/standby, with the cluster's
# options, on a free port; sets standby_port and standby_postmaster, and returns once it has replayed all there is.
start_standby() {
  standby_port=$(free_port $((pg_port + 1)))
  log "starting a hot standby on 127.0.0.1:$standby_port (pg_basebackup)"
  as_pg "$pg_bin/pg_basebackup" -D "$cluster/standby" -R -X stream -c fast -h 127.0.0.1 -p "$pg_port" -U postgres
  as_pg "$pg_bin/pg_ctl" start -w -D "$cluster/standby" -l "$cluster/standby.log" \
    -o "${pg_options/-p $pg_port/-p $standby_port}" >/dev/null
  standby_postmaster=$(head -n 1 "$cluster/standby/postmaster.pid")
  local target; target=$(psql_fm -Atc "SELECT pg_current_wal_insert_lsn()")
  until [ "$("$pg_bin/psql" -h 127.0.0.1 -p "$standby_port" -U postgres -d fm -XAtc "SELECT pg_last_wal_replay_lsn() >= '$target'")" = t ]; do
    sleep 0.2
  done
}
pg_ctl_start() {
  as_pg "$pg_bin/pg_ctl" start -w -D "$cluster/data" -l "$cluster/postgres.log" -o "$pg_options" >/dev/null
  postmaster=$(head -n 1 "$cluster/data/postmaster.pid")
}
pg_ctl_do() { as_pg "$pg_bin/pg_ctl" "$@" -w -D "$cluster/data" -l "$cluster/postgres.log" >/dev/null; }
psql_fm() { "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d fm -X -q "$@"; }

# start_api PORT LOGFILE [VAR=value...]: the API on 127.0.0.1:PORT, waits until /health answers 200; sets api_pid.
# The build in FM_API_DIR when set (bench/history-baselines.sh --against: another commit's), else the checkout's.
start_api() {
  local port=$1 logfile=$2; shift 2
  (
    cd "${FM_API_DIR:-$root/FirmwareManager.Api/bin/Release/net10.0}"
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

# The baseline endpoints of issue 28 (bench/naive: outside the product): build_naive builds them in Release;
# start_naive PORT LOGFILE [CONNECTION-STRING-OPTIONS] starts them on the cluster and waits until they answer.
build_naive() {
  log "building bench/naive (Release)"
  dotnet build "$root/bench/naive" -c Release -v quiet -nologo >/dev/null
}
start_naive() {
  local port=$1 logfile=$2 options=${3:-}
  (
    cd "$root/bench/naive/bin/Release/net10.0"
    exec env ConnectionString="Host=127.0.0.1;Port=$pg_port;Username=postgres;Database=fm;Maximum Pool Size=128$options" \
      ASPNETCORE_URLS="http://127.0.0.1:$port" dotnet Naive.dll > "$logfile" 2>&1
  ) &
  api_pids+=("$!")
  until curl -s -o /dev/null "http://127.0.0.1:$port/"; do sleep 0.1; done
}

# alternate TABLE ROUNDS SECONDS WARMUP TARGET...: warms each target for WARMUP seconds, then measures them in ROUNDS
# alternating rounds, each round's order one target on from the last (the caller's `measure TARGET SECONDS` prints
# a wrk RESULT line), so that a shared machine's drift falls on every target alike; writes TABLE: each target's mean
# requests/s, worst p99, and the first target as a fraction of each. Every round's line goes to $raw/rounds.txt; a non-2xx answer fails the run.
alternate() {
  local table=$1 rounds=$2 seconds=$3 warmup=$4 target round line first; shift 4
  first=$1
  local -A rps_sum=() p99_max=()
  for target in "$@"; do
    log "warming $target for ${warmup} s"
    measure "$target" "$warmup" > /dev/null
  done
  pick() { echo "$1" | sed -nE "s/.* $2=([^ ]*).*/\1/p"; }
  local targets=("$@") i
  for round in $(seq 1 "$rounds"); do
    # Each round starts one target later than the one before, so that no target always follows the same one.
    for i in "${!targets[@]}"; do
      target=${targets[$(( (i + round - 1) % ${#targets[@]} ))]}
      line=$(measure "$target" "$seconds")
      log "round $round, $target: $line"
      echo "$round $target $line" >> "$raw/rounds.txt"
      [ "$(pick "$line" non2xx)" = 0 ] || { echo "$target answered non-2xx: $line" >&2; exit 1; }
      rps_sum[$target]=$(awk -v a="${rps_sum[$target]:-0}" -v b="$(pick "$line" rps)" 'BEGIN { print a + b }')
      p99_max[$target]=$(awk -v a="${p99_max[$target]:-0}" -v b="$(pick "$line" p99_ms)" 'BEGIN { print (b > a ? b : a) }')
    done
  done
  mean() { awk -v s="${rps_sum[$1]}" -v n="$rounds" 'BEGIN { printf "%.0f", s / n }'; }
  {
    echo "| target | requests/s (mean of $rounds rounds of ${seconds} s) | p99 ms (worst round) | $first as a fraction of it |"
    echo "|---|---|---|---|"
    for target in "$@"; do
      echo "| $target | $(mean "$target") | ${p99_max[$target]} | $(awk -v a="$(mean "$first")" -v b="$(mean "$target")" 'BEGIN { printf "%.2fx", a / b }') |"
    done
  } > "$table"
  cat "$table"
}

cleanup() {
  # A load still running when a step failed.
  [ -n "${load_pid:-}" ] && kill "$load_pid" 2>/dev/null || true
  for pid in "${api_pids[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
  if [ -n "$citus_dir" ]; then
    bash "$root/bench/citus-cluster.sh" stop "$citus_dir" || true
    rm -rf "$citus_dir"
  fi
  if [ -n "$cluster" ]; then
    [ -d "$cluster/standby" ] && { as_pg "$pg_bin/pg_ctl" stop -D "$cluster/standby" -m fast >/dev/null 2>&1 || true; }
    as_pg "$pg_bin/pg_ctl" stop -D "$cluster/data" -m fast >/dev/null 2>&1 || true
    rm -rf "$cluster"
  fi
}
trap cleanup EXIT

# CPU seconds (user+system) of processes, from /proc, in clock ticks.
cpu_of() { local total=0 t; for p in "$@"; do t=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0); total=$((total + t)); done; echo "$total"; }
pg_pids() { echo "$postmaster" $(pgrep -P "$postmaster" || true); }
# pg_cpu_mark FILE, then pg_cpu_since FILE (every script that reports PostgreSQL's CPU for a phase or round):
# PostgreSQL's CPU ticks in between, counted per process: a backend that
# exits in between (a pool's idle connection closed, a psql's) takes only its own share with it, where a difference
# of two sums (cpu_of) lost its whole life's CPU and could go negative. A process started in between counts whole.
pg_cpu_mark() { local p; for p in $(pg_pids); do echo "$p $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)"; done > "$1"; }
pg_cpu_since() {
  local p now total=0
  declare -A then=()
  while read -r p now; do then[$p]=$now; done < "$1"
  for p in $(pg_pids); do
    now=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null) || continue
    total=$((total + now - ${then[$p]:-0}))
  done
  echo "$total"
}

# sample_waits FILE: what each busy PostgreSQL backend is doing (running, or the event it waits for), five times a
# second, one line per backend and sample, until killed.
sample_waits() {
  while sleep 0.2; do
    psql_fm -Atc "SELECT COALESCE(wait_event_type || ':' || wait_event, 'running') FROM pg_stat_activity
                  WHERE datname = 'fm' AND state = 'active' AND pid <> pg_backend_pid()" || true
  done > "$1"
}
clk=$(getconf CLK_TCK)
# track_statements none|top: pg_stat_statements (loaded, with track_planning) off or on for every session, from its
# next statement. The baseline scripts count rounds with it off for every target, and turn it on for one round more.
track_statements() {
  psql_fm -Atc "ALTER SYSTEM SET pg_stat_statements.track = '$1'" -c "SELECT pg_reload_conf()" > /dev/null
}

# Load and its check, for bench/faults.sh and bench/citus-ops.sh. They need raw (the run's folder, with fleet.csv:
# the devices wrk reports from), duration (seconds of load), probe_key (device 1's key: the probe device, kept out
# of fleet.csv), psql_fm, and a table acked (id bigint) in the database.
failures=()
fail() { failures+=("$*"); log "FAILED: $*"; }

# load NAME URL CONNECTIONS [SECONDS]: wrk posting events for the phase's duration (or SECONDS: SIGINT ends it
# sooner, with its summary), in the background; sets load_pid.
load() {
  local name=$1 url=$2 conns=$3 seconds=${4:-$duration}
  mkdir -p "$raw/$name.acks"
  wrk -t2 -c"$conns" -d"${seconds}s" --timeout 10s --latency -s bench/ingest.lua "$url" -- \
    "$raw/fleet.csv" "$raw/$name.acks" "$(next_offset)" > "$raw/$name.wrk.txt" 2>&1 &
  load_pid=$!
}
field() { sed -nE "s/^RESULT.* $2=([^ ]*).*/\1/p" "$raw/$1.wrk.txt" 2>/dev/null || true; }

# status URL: the HTTP status of a GET (000 when no answer within 10 s).
status() { curl -s -o /dev/null -m 10 -w '%{http_code}' "$1" || true; }
# post_probe URL [DEVICE KEY]: one report from the probe device (device 1 unless given; unique timestamp); prints
# the status, records a 2xx's event id.
post_probe() {
  local us body code device=${2:-1} key=${3:-$probe_key}
  us=$(date +%s%6N)
  body=$(curl -s -m 10 -w '\n%{http_code}' -X POST "$1/firmware/$device" -H "api_key: $key" -H 'Content-Type: application/json' \
    -d "{\"firmware\":\"9.9.9\",\"status\":\"downloading\",\"timestamp\":\"$(date -u -d "@${us:0:10}" +%Y-%m-%dT%H:%M:%S).${us:10:6}Z\"}" || true)
  code=${body##*$'\n'}
  mkdir -p "$raw/probe.acks"
  [ "${code:0:1}" = 2 ] && printf '%s\n' "$body" | sed -nE 's/.*"id":([0-9]+).*/\1/p' >> "$raw/probe.acks/acks-probe.txt"
  echo "${code:-000}"
}
# until_ok URL [DEVICE KEY]: ms until a probe report is acknowledged (gives up after 30 s and prints -1).
until_ok() {
  local start; start=$(now_ms)
  while [ $(( $(now_ms) - start )) -lt 30000 ]; do
    [ "$(post_probe "$@" | cut -c1)" = 2 ] && { echo $(( $(now_ms) - start )); return; }
    sleep 0.05
  done
  echo -1
}
# until_status URL CODE: ms until GET URL answers CODE (gives up after 30 s and prints -1).
until_status() {
  local start; start=$(now_ms)
  while [ $(( $(now_ms) - start )) -lt 30000 ]; do
    [ "$(status "$1")" = "$2" ] && { echo $(( $(now_ms) - start )); return; }
    sleep 0.05
  done
  echo -1
}

# check NAME: every acknowledged id of the phase is in the table; nothing stored twice; no 500. Adds a row.
rows=()
check() {
  local name=$1 recovery=${2:-} acked stored missing dupes statuses
  cat "$raw/$name".acks/*.txt 2>/dev/null | grep -E '^[0-9]+$' > "$raw/$name.acked" || true
  acked=$(wc -l < "$raw/$name.acked")
  psql_fm -c "TRUNCATE acked" -c "\\copy acked FROM '$raw/$name.acked'"
  # EXCEPT, not a join: on Citus acked is a table of the coordinator alone, which Citus does not join to a distributed one.
  missing=$(psql_fm -tAc "SELECT count(*) FROM (SELECT id FROM acked EXCEPT SELECT id FROM firmware_events) AS m")
  dupes=$(psql_fm -tAc "SELECT count(*) FROM (SELECT FROM firmware_events GROUP BY project_id, device_id, firmware, status, occurred_at HAVING count(*) > 1) AS d")
  statuses=$(field "$name" errors)
  [ "$missing" -eq 0 ] || fail "$name: $missing acknowledged events are not in the table"
  [ "$dupes" -eq 0 ] || fail "$name: $dupes events stored twice"
  case " $statuses " in *" 500:"*) fail "$name: the API answered 500 ($statuses)";; esac
  rows+=("| $name | $(field "$name" requests) | $acked | $missing | ${statuses:-none} | $(field "$name" socket_errors) | $(field "$name" max_ms) | $recovery |")
  log "$name: $acked acknowledged, $missing missing, $dupes duplicates; other answers: ${statuses:-none}; $recovery"
}


# verify_projections PHASE: waits until every project's projection has reached its feed (at most 10 s), then recounts
# every projected figure from the events (the API's verify-projections command, on the owner's connection); a
# difference, or a projection that does not catch up, fails the run. The provisioned fleet's derived state is made by
# bench/provision.sql as the projection would have made it, so the recount starts clean.
verify_projections() {
  local phase=$1 deadline=$(( $(now_ms) + 10000 )) behind
  while behind=$(psql_fm -tAc "SELECT count(*) FROM project_event_arrivals AS a LEFT JOIN project_projections AS p ON p.project_id = a.project_id WHERE a.last_arrival > COALESCE(p.position, 0)"); [ "$behind" != 0 ]; do
    [ "$(now_ms)" -lt "$deadline" ] || { fail "$phase: the projection did not reach the feed within 10 s ($behind projects behind)"; return 0; }
    sleep 0.1
  done
  if (cd "$root/FirmwareManager.Api/bin/Release/net10.0" &&
      ConnectionStrings__FirmwareManager="Host=127.0.0.1;Port=$pg_port;Username=postgres;Database=fm" \
        dotnet FirmwareManager.Api.dll verify-projections) > "$raw/verify-$phase.txt" 2>&1; then
    log "$phase: $(tail -n 1 "$raw/verify-$phase.txt")"
  else
    fail "$phase: verify-projections: $(head -n 5 "$raw/verify-$phase.txt" | tr '\n' ' ')"
  fi
}

# results_table: the phases' rows under their header.
results_table() {
  echo "| phase | requests | acknowledged (2xx) | acknowledged but not stored | other answers | connection errors | slowest answer ms | notes |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
}
# exit_on_failures NAME: when a check failed, prints the errors the API logged (a 500's exception among them: CI
# keeps only what is printed) and the failures, and exits 1.
exit_on_failures() {
  [ ${#failures[@]} -eq 0 ] && return
  for f in "$raw"/api*.log; do
    echo "--- errors in $f"
    grep -A 30 -E '^\[[0-9:]+ (ERR|FTL)\]' "$f" | grep -v -E 'responded (503|429)|^\[[0-9:]+ (INF|WRN)\]' | head -n 120 || true
  done >&2
  printf '%s: %s\n' "$1" "${failures[@]}" >&2
  exit 1
}
