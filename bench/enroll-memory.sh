#!/usr/bin/env bash
# bench/enroll-memory.sh DIR PORT: the service from the checkout DIR with demo data (./run.sh), 1,000,000 devices through
# the bulk API (bench/enroll-1m.sh), then one 100,000-device CSV call; prints the API's peak RSS (VmHWM) after each.
dir=$1; port=$2
cd "$dir"
ASPNETCORE_URLS=http://127.0.0.1:$port FM_PG_PORT=$((port - 1000)) ./run.sh > /tmp/measure-$port.log 2>&1 &
svc=$!
for _ in $(seq 1 180); do curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 1; done
pid=$(pgrep -f "^dotnet FirmwareManager.Api.dll" | head -1)
grep VmHWM /proc/$pid/status
bash bench/enroll-1m.sh "http://127.0.0.1:$port" super_secret_member_key_1
grep VmHWM /proc/$pid/status
start=$(date +%s.%N)
curl -fsS -X POST "http://127.0.0.1:$port/devices/bulk" -H 'api_key: super_secret_member_key_1' -H 'Content-Type: application/json' -H 'Accept: text/csv' -d '{"count": 100000}' -o /tmp/csv-$port.csv
end=$(date +%s.%N)
echo "csv: $(wc -l < /tmp/csv-$port.csv) lines in $(echo "$end - $start" | bc) s"; head -2 /tmp/csv-$port.csv
grep VmHWM /proc/$pid/status
kill -TERM $svc; wait $svc
