#!/usr/bin/env bash
# The dashboard on a big project: bench/dashboard.sh [--quick]   (docs/dashboard.md reports the figures)
# Starts a fresh PostgreSQL cluster and the API (Release) on loopback, provisions the benchmark fleet's big project
# (bench/provision.sql: 200,000 devices in project 1, 10 events each, 12 versions), then drives headless Chromium
# (DashboardOnBenchmarkFleetTests) through each view: the time from the start of navigation to the view's data on
# screen (the mark the dashboard sets), over six reloads of each view after signing in: the first, and the median
# of the other five (each reload fetches the page again and revalidates its files). Results in
# bench/out/results-dashboard.md. --quick: 4,000 devices, to check that the script runs; its times mean little.
set -euo pipefail
cd "$(dirname "$0")/.."

devices=200000
events_per_device=10
case "${1:-}" in
  --quick) devices=4000; events_per_device=5 ;;
  "") ;;
  *) echo "usage: bench/dashboard.sh [--quick]" >&2; exit 2 ;;
esac
source bench/lib.sh
mkdir -p "$out"
[ -n "${FIRMWAREMANAGER_CHROMIUM:-}" ] || command -v chromedriver >/dev/null 2>&1 ||
  { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

build_api
log "building the tests"
dotnet build "$root/FirmwareManager.Tests" -v quiet -nologo >/dev/null
start_cluster -c shared_buffers=1GB
api_port=$(free_port 18480)
start_api "$api_port" "$out/dashboard-api.log" "Serilog__MinimumLevel__Override__Serilog.AspNetCore.RequestLoggingMiddleware=Warning"
log "provisioning $devices devices in one project and $((devices * events_per_device)) events"
psql_fm -v devices="$devices" -v big="$devices" -v events_per_device="$events_per_device" -f bench/provision.sql > /dev/null
psql_fm -c "VACUUM ANALYZE"
psql_fm -c "CHECKPOINT"

log "timing each view in headless Chromium"
results="$out/results-dashboard.md"
rm -f "$results"
FIRMWAREMANAGER_DASHBOARD_URL="http://127.0.0.1:$api_port" FIRMWAREMANAGER_DASHBOARD_KEY=fmm_bench_admin_1 \
  FIRMWAREMANAGER_DASHBOARD_RESULTS="$results" \
  dotnet test "$root/FirmwareManager.Tests" --no-build --filter "FullyQualifiedName~DashboardOnBenchmarkFleetTests" -v quiet -nologo
[ -s "$results" ] || { echo "the browser test wrote no results" >&2; exit 1; }
{
  echo
  echo "$devices devices in the project, $((devices * events_per_device)) events; $(nproc) cores; $(date -u +%Y-%m-%d)"
} >> "$results"
cat "$results"
