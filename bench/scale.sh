#!/usr/bin/env bash
# One sipfront node holding a population of users in real time (issue 19): every user on its own
# TCP or TLS connection (or UDP), registered, subscribed to its contact list (RFC 4662) of WATCH
# contacts, running the OCS model at time scale 1 for SECONDS after the set-up (the login storm,
# at SETUP_RATE requests per second). Loopback only; bounded in count and time.
#
#   bench/scale.sh USERS [TRANSPORT] [WATCH] [SECONDS] [SETUP_RATE]
#     bench/scale.sh 19000 tcp 50 900 1000
# env: WORK=/tmp/sipfront-scale, LOCAL_IPS=127.0.2.1-127.0.2.40 (about 28,000 connections each).
# Needs release builds (cargo build --release -p sipfront -p sipfront-loadtest), python3, and an
# open-file limit above USERS on both sides (`ulimit -Hn`; the server raises its soft limit).
# Prints: set-up time; the server's CPU over the measured phase (1 core = 100: average, and the
# busiest 10 s); its PSS before the set-up, after it, at the end and at most, and per user; NOTIFYs and
# presentity states per second; failures; p50/p99/p99.9 per transaction type.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
BIN="$HERE/../target/release"
USERS=$1; TRANSPORT=${2:-tcp}; WATCH=${3:-50}; SECS=${4:-900}; SETUP_RATE=${5:-1000}
WORK=${WORK:-/tmp/sipfront-scale}
LOCAL_IPS=${LOCAL_IPS:-127.0.2.1-127.0.2.40}
SIP=127.0.0.1:25400 TLS=127.0.0.1:25401 HTTP=127.0.0.1:29400
TCK=$(getconf CLK_TCK)
rm -rf "$WORK" && mkdir -p "$WORK"
name="$USERS-$TRANSPORT-$WATCH"

"$BIN/sipfront-load" model --users "$USERS" --watch "$WATCH" --resource-lists --provision "$WORK/data" \
  --provision-only --sipfront-bin "$BIN/sipfront" >"$WORK/provision.log"
SIPFRONT_LOG_LEVEL=warn "$BIN/sipfront" --data-dir "$WORK/data" serve --sip-addr $SIP --tls-addr $TLS \
  --http-addr $HTTP >"$WORK/sipfront.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 300); do curl -sf "http://$HTTP/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
target=$SIP; [ "$TRANSPORT" = tls ] && target=$TLS

# The server's CPU ticks and PSS every second, with the time.
( while kill -0 $PID 2>/dev/null; do
    echo "$(date +%s.%N) $(awk '{print $14 + $15}' /proc/$PID/stat) $(awk '/^Pss:/ {print $2}' /proc/$PID/smaps_rollup)"
    sleep 1
  done ) >"$WORK/$name.samples" 2>/dev/null &
SAMPLER=$!
timeout $(( SECS + USERS * 4 / SETUP_RATE + 600 )) "$BIN/sipfront-load" model --target "$target" \
  --transport "$TRANSPORT" --users "$USERS" --watch "$WATCH" --resource-lists --time-scale 1 --duration "$SECS" \
  --setup-rate "$SETUP_RATE" --local-ips "$LOCAL_IPS" --quiet --json "$WORK/$name.json" >"$WORK/$name.txt" 2>&1 || true
kill $SAMPLER 2>/dev/null || true
curl -s "http://$HTTP/metrics" >"$WORK/$name.metrics" || true

python3 - "$WORK/$name.json" "$WORK/$name.samples" "$TCK" "$USERS" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); tck = int(sys.argv[3]); users = int(sys.argv[4])
s = [tuple(map(float, l.split())) for l in open(sys.argv[2]) if len(l.split()) == 3]
lo, hi = j["measured_from_unix_ms"] / 1000, j["measured_until_unix_ms"] / 1000
win = [x for x in s if lo <= x[0] <= hi]
cpu = (win[-1][1] - win[0][1]) / tck / (win[-1][0] - win[0][0]) * 100
peak = max((win[i + 10][1] - win[i][1]) / tck / (win[i + 10][0] - win[i][0]) * 100 for i in range(len(win) - 10)) if len(win) > 10 else cpu
before, after, most, end = s[0][2], win[0][2], max(x[2] for x in s), win[-1][2]
setup = (j["measured_from_unix_ms"] - j["started_unix_ms"]) / 1000
t = j["transactions"]
failed = sum(x["failed"] for k, x in t.items() if "." not in k or k.startswith("setup."))
print(f'users {users} over {j["config"]["transport"]}, {j["config"]["watch"]} contacts each, {j["elapsed_s"]:.0f} s measured')
print(f'set-up (login storm): {setup:.1f} s')
print(f'server CPU: {cpu:.1f}% average, {peak:.1f}% busiest 10 s')
print(f'server PSS: {before / 1024:.0f} MB started, {after / 1024:.0f} MB after set-up, {end / 1024:.0f} MB at the end, '
      f'{most / 1024:.0f} MB at most; per user: {(after - before) * 1024 / users:.0f} bytes after set-up, '
      f'{(end - before) * 1024 / users:.0f} at the end')
print(f'NOTIFY {j["notify_rate"]:.1f}/s carrying {j["state_rate"]:.1f} states/s; failed {failed}; '
      f'timeouts {j["timeouts"]}; transport errors {j["transport_errors"]}; keep-alives {j["keepalives"]}/{j["pongs"]}')
for k in sorted(t):
    if "." in k and not k.startswith("setup."):
        continue
    l = t[k]["latency_ms"]
    print(f'  {k:18} {t[k]["count"]:>8} ok {t[k]["ok"]:>8}  p50 {l["p50"]:7.2f}  p99 {l["p99"]:7.2f}  p99.9 {l["p99_9"]:7.2f} ms')
PY
