#!/usr/bin/env bash
# Enrolls 1,000,000 devices through POST /devices/bulk (10 calls of 100,000) and reports the wall time.
#   bench/enroll-1m.sh [base-url] [admin-key]
# Without a key it bootstraps a project of its own with the create-project command, which needs
# ConnectionStrings__FirmwareManager (./run.sh prints the local cluster's port). The device ids and keys go to
# bench/out/enrolled.ndjson, for load tools.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-http://localhost:8880}
key=${2:-}
calls=${CALLS:-10}
per_call=${PER_CALL:-100000}
mkdir -p bench/out
if [ -z "$key" ]; then
  dotnet build FirmwareManager.Api -c Release -v quiet -nologo >/dev/null
  key=$(cd FirmwareManager.Api/bin/Release/net10.0 && dotnet FirmwareManager.Api.dll create-project "enroll-$(date +%s)" --admin bench@example.com | tail -n 1)
fi
out=bench/out/enrolled.ndjson
: > "$out"
start=$(date +%s.%N)
for i in $(seq 1 "$calls"); do
  curl -fsS -X POST "$base/devices/bulk" -H "api_key: $key" -H 'Content-Type: application/json' \
    -d "{\"count\": $per_call}" >> "$out"
done
end=$(date +%s.%N)
lines=$(wc -l < "$out")
awk -v n="$lines" -v c="$calls" -v s="$start" -v e="$end" 'BEGIN { printf "enrolled %d devices in %d calls in %.1f s (%.0f devices/s)\n", n, c, e - s, n / (e - s) }'
