#!/usr/bin/env bash
# GET /rollouts?limit=1000 on a project of 200,000 devices with 1,000 rollouts (bench/rollouts-page.sh [--quick]):
# the page's figures (audience and silent devices) come from one statement, whatever the page's size. Baseline in
# the same run, on the same database: the per-rollout counts the page ran before (two statements per rollout, the
# statements of commit c57c356), timed in psql. Writes bench/out/results-rollouts.md.
set -euo pipefail
cd "$(dirname "$0")/.."
devices=200000; rollouts=1000; tries=10
[ "${1:-}" = --quick ] && { devices=20000; rollouts=200; tries=3; }
source bench/lib.sh
mkdir -p "$out"
build_api
start_cluster -c shared_buffers=1GB
api_port=$(free_port 18480)
start_api "$api_port" "$out/rollouts-api.log" FirmwareManager__RateLimits__Member__PermitsPerSecond=0
log "provisioning $devices devices and $rollouts rollouts in project 1"
psql_fm -v devices="$devices" -v rollouts="$rollouts" <<'SQL' >/dev/null
\set ON_ERROR_STOP on
INSERT INTO projects (id, name) VALUES (1, 'bench_rollouts');
INSERT INTO project_memberships (id, project_id, email, role) VALUES (1, 1, 'admin@bench.example', 'admin');
INSERT INTO membership_api_keys (project_id, membership_id, key_prefix, key_hash)
VALUES (1, 1, 'fmm_bench_1', sha256(convert_to('fmm_bench_admin_1', 'UTF8')));
INSERT INTO api_key_digests (key_hash, project_id) SELECT key_hash, project_id FROM membership_api_keys;
INSERT INTO devices (id, project_id, name, current_firmware, current_firmware_at, last_reported_at, last_event_status, last_event_at, hardware, tags)
SELECT g, 1, 'device ' || g, '1.' || (g % 12) || '.0', now() - interval '3 days', now() - (g % 96) * interval '1 hour',
       CASE WHEN g % 7 = 0 THEN 'failed' ELSE 'updated' END, now() - interval '3 days',
       'rev-' || chr(65 + g % 4), ARRAY['wave-' || (g % 10), CASE WHEN g % 3 = 0 THEN 'eu' ELSE 'us' END]
FROM generate_series(1, :devices) AS g;
-- Rollouts of every kind of audience: all devices, a hardware, a tag, a version they come from; 100 still open.
INSERT INTO rollouts (project_id, firmware, from_firmware, hardware, tags, max_failure_rate, min_devices, created_at, ended_at)
SELECT 1, '2.' || (g % 50) || '.0',
       CASE WHEN g % 4 = 1 THEN '1.' || (g % 12) || '.0' END,
       CASE WHEN g % 4 = 2 THEN 'rev-' || chr(65 + g % 4) END,
       CASE WHEN g % 4 = 3 THEN ARRAY['wave-' || (g % 10)] ELSE '{}' END,
       0.1, 10, now() - interval '2 days', CASE WHEN g > 100 THEN now() - interval '1 day' END
FROM generate_series(1, :rollouts) AS g;
-- Each rollout's devices that reported on it: 50 each.
INSERT INTO rollout_devices (project_id, rollout_id, device_id, status, reported_at)
SELECT 1, r.id, 1 + (r.id * 50 + k) % :devices, CASE WHEN k % 5 = 0 THEN 'failed' ELSE 'updated' END, now() - interval '1 day'
FROM rollouts AS r CROSS JOIN generate_series(1, 50) AS k;
VACUUM ANALYZE;
SQL

url="http://127.0.0.1:$api_port/rollouts?limit=1000"
curl -fsS -H "api_key: fmm_bench_admin_1" "$url" -o "$out/rollouts-page.json"
count=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))))" "$out/rollouts-page.json")
log "the page holds $count rollouts"
page_ms=()
for _ in $(seq 1 "$tries"); do
  page_ms+=("$(curl -fsS -o /dev/null -w '%{time_total}' -H "api_key: fmm_bench_admin_1" "$url" | awk '{ printf "%.0f", $1 * 1000 }')")
done

# The baseline: what the page ran before, two counts per rollout one after another, on the same database.
baseline_ms=$(psql_fm -At 2>&1 <<'SQL' | sed -n 's/^NOTICE: *//p'
\set ON_ERROR_STOP on
DO $$
DECLARE
    r record;
    started timestamptz := clock_timestamp();
    eligible bigint;
    silent bigint;
BEGIN
    FOR r IN SELECT * FROM rollouts WHERE project_id = 1 ORDER BY id DESC LIMIT 1000 LOOP
        SELECT (SELECT count(*) FROM devices AS d
                WHERE d.project_id = 1 AND d.decommissioned_at IS NULL
                  AND (r.hardware IS NULL OR d.hardware = r.hardware) AND d.tags @> r.tags
                  AND (r.from_firmware IS NULL OR d.current_firmware = r.from_firmware))
             + (SELECT count(*) FROM rollout_devices AS rd JOIN devices AS d ON d.project_id = rd.project_id AND d.id = rd.device_id
                WHERE rd.project_id = 1 AND d.project_id = 1 AND rd.rollout_id = r.id AND r.from_firmware IS NOT NULL
                  AND d.current_firmware IS DISTINCT FROM r.from_firmware)
        INTO eligible;
        SELECT count(*) FROM rollout_devices AS rd JOIN devices AS d ON d.project_id = rd.project_id AND d.id = rd.device_id
        WHERE rd.project_id = 1 AND d.project_id = 1 AND rd.rollout_id = r.id AND rd.status IN ('installed', 'updated')
          AND d.current_firmware = r.firmware AND d.last_event_status IN ('installed', 'updated')
          AND d.last_reported_at < now() - interval '24 hours'
        INTO silent;
    END LOOP;
    RAISE NOTICE '%', round(extract(epoch FROM clock_timestamp() - started) * 1000);
END
$$;
SQL
)
sorted=$(printf '%s\n' "${page_ms[@]}" | sort -n)
median=$(echo "$sorted" | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
{
  echo "| what | ms |"
  echo "|---|---|"
  echo "| GET /rollouts?limit=1000, $count rollouts, $devices devices: median of $tries | $median |"
  echo "| the same page's $((count * 2)) per-rollout counts before (psql, no HTTP) | $baseline_ms |"
} > "$out/results-rollouts.md"
cat "$out/results-rollouts.md"
