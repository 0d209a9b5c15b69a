#!/usr/bin/env bash
# The events' INSERT of the ingest transaction alone, by rows a statement and by fleet size:
# bench/events-insert.sh [--rows "1 3 10 25"] [--devices "100000 1000000"] [--seconds N]
# For each fleet size, one fresh database (migrated by the API, which is then stopped, so that nothing projects) with
# one project of that many devices, each with its key and one event (bench/provision.sql); then for each row count
# pgbench, one client, N seconds (20), runs the transaction's feed number and FirmwareEvents.StoreEventsSql as the
# source has it, its parameters as pgbench variables (devices picked at random, no timestamp: each event new),
# prepared and on its generic plan as the service runs it. Prints each statement's mean latency (pgbench -r); the
# scripts and pgbench's output are in bench/out/events-insert/. What it found is in docs/performance.md ("Ten
# projects' groups in four statements").
set -euo pipefail
cd "$(dirname "$0")/.."
sizes="1 3 10 25"; fleets="100000 1000000"; seconds=20
while [ $# -gt 0 ]; do
  case $1 in
    --rows) sizes=$2; shift 2 ;;
    --devices) fleets=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    *) echo "usage: bench/events-insert.sh [--rows \"1 3 10 25\"] [--devices \"100000 1000000\"] [--seconds N]" >&2; exit 2 ;;
  esac
done
source bench/lib.sh
raw="$out/events-insert"
mkdir -p "$raw"
rm -rf "${raw:?}"/*
chmod 755 "$raw"
trap cleanup EXIT

python3 - "$raw" $sizes <<'PY'
import re, sys
raw, sizes = sys.argv[1], [int(n) for n in sys.argv[2:]]
source = open('FirmwareManager.Api/Firmware/FirmwareEvents.cs').read()
sql = re.search(r'private const string StoreEventsSql = """\n(.*?)\n\s*""";', source, re.S).group(1)
sql = ' '.join(line.strip() for line in sql.splitlines())
for n in sizes:
    ids = ','.join(f':d{i}' for i in range(n))
    def fill(value, type_):
        return f"array_fill({value}::{type_}, ARRAY[{n}])"
    values = {
        '@ProjectId': '1', '@Reports': str(n),
        '@KeyIds': f'ARRAY[{ids}]::bigint[]', '@DeviceIds': f'ARRAY[{ids}]::bigint[]',
        '@ReportDeviceIds::bigint[]': f'ARRAY[{ids}]::bigint[]', '@ReportKeyIds::bigint[]': f'ARRAY[{ids}]::bigint[]',
        '@Firmwares::text[]': fill("'2.1.1'", 'text'), '@Statuses::text[]': fill("'updated'", 'text'),
        '@OccurredAts::timestamptz[]': fill('NULL', 'timestamptz'), '@FromFirmwares::text[]': fill('NULL', 'text'),
        '@ErrorCodes::text[]': fill('NULL', 'text'), '@Details::text[]': fill('NULL', 'text'),
    }
    statement = sql
    for name in sorted(values, key=len, reverse=True):
        statement = statement.replace(name, values[name])
    assert '@' not in statement, statement
    with open(f'{raw}/store{n}.sql', 'w') as script:
        # Each device's key has the device's id (checked below), so the device ids stand for the key ids too.
        script.writelines(f'\\set d{i} random(1, :devices)\n' for i in range(n))
        script.write('BEGIN;\n')
        script.write(f'INSERT INTO project_event_arrivals AS a (project_id, last_arrival) VALUES (1, {n}) '
                     'ON CONFLICT (project_id) DO UPDATE SET last_arrival = a.last_arrival + EXCLUDED.last_arrival RETURNING a.last_arrival;\n')
        script.write(statement + ';\nCOMMIT;\n')
PY
chmod 644 "$raw"/*.sql

build_api
start_cluster -c shared_buffers=2GB -c max_wal_size=8GB
api_port=$(free_port 18790)
for devices in $fleets; do
  "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -X -qc "DROP DATABASE fm WITH (FORCE)" -c "CREATE DATABASE fm"
  start_api "$api_port" "$raw/api.log"
  kill "$api_pid"; wait "$api_pid" 2>/dev/null || true
  log "provisioning one project of $devices devices"
  psql_fm -v devices="$devices" -v big="$devices" -v events_per_device=1 -f bench/provision.sql > /dev/null
  psql_fm -c "VACUUM ANALYZE"
  [ "$(psql_fm -Atc "SELECT count(*) FROM device_api_keys WHERE id <> device_id")" = 0 ] || { echo "a key's id is not its device's" >&2; exit 1; }
  for n in $sizes; do
    before=$(psql_fm -Atc "SELECT count(*) FROM firmware_events")
    PGOPTIONS="-c plan_cache_mode=force_generic_plan" as_pg "$pg_bin/pgbench" -h 127.0.0.1 -p "$pg_port" -U postgres -n -M prepared \
      -c 1 -T "$seconds" -r -D devices="$devices" -f "$raw/store$n.sql" fm > "$raw/pgbench-$devices-$n.txt" 2>&1
    stored=$(( $(psql_fm -Atc "SELECT count(*) FROM firmware_events") - before ))
    latency=$(awk '/WITH active/ { print $1 }' "$raw/pgbench-$devices-$n.txt")
    printf '%s devices, %s rows a statement: the INSERT %s ms a statement, %s events stored\n' "$devices" "$n" "$latency" "$stored"
  done
done
