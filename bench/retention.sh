#!/usr/bin/env bash
# Retention by partition against row by row: bench/retention.sh [--quick]   (docs/performance.md, "Retention")
# A fresh cluster and the API's schema; one month of events (full: 2,000,000, from 200,000 devices; quick: 100,000)
# in that month's partition of firmware_events, and the same rows in a table of the shape firmware_events had before
# migration 0023 (unpartitioned, its old indexes). Then the month goes: the partition dropped (what retention does
# now), and the copy deleted 5,000 rows a transaction in id order (what retention did before), then vacuumed.
# Writes bench/out/retention.md.
set -euo pipefail
cd "$(dirname "$0")/.."

devices=200000
[ "${1:-}" = --quick ] && devices=10000
source bench/lib.sh

build_api
start_cluster -c shared_buffers=1GB -c max_wal_size=8GB
api_port=$(free_port 18090)
start_api "$api_port" "$out/retention-api.log"
kill "$api_pid"; wait "$api_pid" 2>/dev/null || true

month=$(psql_fm -Atc "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
  WHERE i.inhparent = 'firmware_events'::regclass AND c.relname ~ '^firmware_events_y' ORDER BY c.relname DESC LIMIT 1")
start=$(psql_fm -Atc "SELECT (regexp_match(pg_get_expr(relpartbound, oid), '''([^'']+)'''))[1] FROM pg_class WHERE relname = '$month'")
log "filling $month (from $start) with $((devices * 10)) events"
psql_fm <<SQL
INSERT INTO projects (id, name) VALUES (1, 'retention');
INSERT INTO devices (id, project_id, name) SELECT g, 1, 'device ' || g FROM generate_series(1, $devices) AS g;
INSERT INTO firmware_events (device_id, project_id, firmware, status, occurred_at, received_at, arrival)
SELECT d, 1, '1.' || e || '.0', 'installed', timestamptz '$start' + (d * 10 + e) * interval '1 s', now(), d * 10 + e
FROM generate_series(1, $devices) AS d CROSS JOIN generate_series(1, 10) AS e;
-- The shape of firmware_events before 0023: no partitions, the primary key on id, the history key, the feed index.
CREATE TABLE events_before (LIKE firmware_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
INSERT INTO events_before SELECT * FROM firmware_events;
ALTER TABLE events_before ADD PRIMARY KEY (id);
CREATE UNIQUE INDEX ON events_before (device_id, project_id, occurred_at, firmware, status);
CREATE INDEX ON events_before (project_id, arrival, id);
-- The retention statement before 0023, a transaction per batch of 5,000 ids.
CREATE PROCEDURE delete_in_batches(cutoff timestamptz) LANGUAGE plpgsql AS \$\$
DECLARE
    after_id bigint := 0;
    last_id bigint;
BEGIN
    LOOP
        WITH window_rows AS (SELECT id FROM events_before WHERE id > after_id ORDER BY id LIMIT 5000),
             deleted AS (DELETE FROM events_before AS e USING window_rows AS w WHERE e.id = w.id AND e.occurred_at < cutoff)
        SELECT max(id) INTO last_id FROM window_rows;
        EXIT WHEN last_id IS NULL;
        after_id := last_id;
        COMMIT;
    END LOOP;
END
\$\$;
VACUUM ANALYZE;
CHECKPOINT;
SQL
size=$(psql_fm -Atc "SELECT pg_size_pretty(pg_total_relation_size('$month'))")
rows=$(psql_fm -Atc "SELECT count(*) FROM $month")

# The history page across partitions (docs/schema.md, "EXPLAIN"): device 42 also reported now (the partition
# before the boundary) and with a clock in 2099 (the default partition); its first page of 20, and a page after a
# cursor in the middle, as the service prepares them (generic plan: parameters, not constants).
psql_fm <<SQL >/dev/null
INSERT INTO firmware_events (device_id, project_id, firmware, status, occurred_at, arrival)
VALUES (42, 1, '2.0.0', 'installed', now(), 0), (42, 1, '2.0.1', 'installed', '2099-01-01', 0);
ANALYZE firmware_events;
SQL
psql_fm > "$out/history-explain.txt" <<'SQL'
SET plan_cache_mode = force_generic_plan;
PREPARE history(bigint, bigint, timestamptz, int) AS
SELECT e.id, e.device_id, e.project_id, e.firmware, e.status, e.occurred_at, e.received_at
FROM firmware_events AS e
WHERE e.device_id = $1 AND e.project_id = $2
  AND e.occurred_at >= '-infinity' AND e.occurred_at < 'infinity'
  AND (e.occurred_at, e.firmware, e.status) < ($3, '', '')
ORDER BY e.occurred_at DESC, e.firmware DESC, e.status DESC
LIMIT $4;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE history(42, 1, 'infinity', 20);
SELECT occurred_at AS cursor_at FROM firmware_events WHERE device_id = 42 AND firmware = '1.5.0' \gset
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE history(42, 1, :'cursor_at', 3);
SQL
cat "$out/history-explain.txt"

timed() { local t0; t0=$(now_ms); psql_fm -c "$1" >/dev/null; echo $(( $(now_ms) - t0 )); }
log "dropping the partition"
drop_ms=$(timed "DROP TABLE $month")
log "deleting the copy row by row"
delete_ms=$(timed "CALL delete_in_batches(timestamptz '$start' + interval '1 month')")
vacuum_ms=$(timed "VACUUM events_before")
left=$(psql_fm -Atc "SELECT count(*) FROM events_before")

{
  echo "| one month of events: $rows rows, $size with indexes | time |"
  echo "|---|---|"
  echo "| \`DROP TABLE $month\` (retention since migration 0023) | $drop_ms ms |"
  echo "| \`DELETE\` 5,000 rows a transaction in id order (retention before 0023), the same rows unpartitioned | $delete_ms ms |"
  echo "| then \`VACUUM\` of that table, to make the space reusable | $vacuum_ms ms |"
  echo
  echo "Rows left in the unpartitioned copy: $left. Produced by \`bench/retention.sh${1:+ $1}\` on $(date -u +%Y-%m-%d)."
} | tee "$out/retention.md"
[ "$left" -eq 0 ] || { echo "bench: the row-by-row delete left rows" >&2; exit 1; }
log "done"
