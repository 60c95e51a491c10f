#!/usr/bin/env bash
# Memory of sipfront with N registered users (default 100,000): PSS before and after every user
# registered once with digest auth (SIPp reg_auth.xml, UDP), measured after Timer J (32 s) has
# let go of the REGISTER transactions. Loopback only; bounded in time.
#   bench/registered-memory.sh [N] [RATE]
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
N=${1:-100000}; RATE=${2:-5000}
WORK=${WORK:-/tmp/sipfront-memory}
BIN="$HERE/../target/release/sipfront"
SCEN="$HERE/../../shared/reference/kamailio/scenarios/reg_auth.xml"
rm -rf "$WORK" && mkdir -p "$WORK"
python3 - "$N" "$WORK" <<'PY'
import sys
n, work = int(sys.argv[1]), sys.argv[2]
with open(f"{work}/import.csv", "w") as f:
    for i in range(n): f.write(f"user{i}@example.test,pw{i}\n")
with open(f"{work}/sipp.csv", "w") as f:
    f.write("SEQUENTIAL\n")
    for i in range(n): f.write(f"user{i};pw{i}\n")
PY
"$BIN" --data-dir "$WORK/data" user import "$WORK/import.csv"
SIPFRONT_LOG_LEVEL=warn "$BIN" --data-dir "$WORK/data" serve --sip-addr 127.0.0.1:26080 \
  --tls-addr 127.0.0.1:26081 --http-addr 127.0.0.1:29290 >"$WORK/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
sleep 2
pss() { awk '/^Pss:/{print $2}' "/proc/$PID/smaps_rollup"; }
before=$(pss)
timeout $(( N / RATE + 60 )) sipp 127.0.0.1:26080 -sf "$SCEN" -inf "$WORK/sipp.csv" -i 127.0.0.1 \
  -m "$N" -r "$RATE" -l $(( RATE * 5 )) -nostdin -buff_size 4194304 -trace_stat -stf "$WORK/stat.csv" >"$WORK/sipp.log" 2>&1 || true
sleep 35
after=$(pss)
metrics=$(curl -s 127.0.0.1:29290/metrics)
bindings=$(echo "$metrics" | awk '/^sipfront_bindings /{print $2}')
ok=$(echo "$metrics" | awk '/^sipfront_registrations_total\{result="ok"\}/{print $2}')
echo "users=$N registered_ok=${ok:-0} bindings=${bindings:-0} pss_before_kB=$before pss_after_kB=$after per_user_bytes=$(( (after - before) * 1024 / N ))"
