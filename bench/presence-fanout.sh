#!/usr/bin/env bash
# Presence fan-out side by side (issue 6): USERS users each watch WATCH others (single
# SUBSCRIBEs), then PUBLISH at each RATE for SECS seconds; every change goes to WATCH watchers,
# so the NOTIFY rate asked is RATE x WATCH. Measured with sipfront-load (UDP, from 127.0.0.2-9)
# against sipfront and Kamailio (../shared/reference/kamailio) started fresh for each point.
#
#   bench/presence-fanout.sh "200 300 400" [USERS=2000] [WATCH=50] [SECS=20]
#   env: SERVERS="sipfront kamailio", WORK=/tmp/sipfront-fanout
# Needs release builds (cargo build --release -p sipfront -p sipfront-loadtest) and Kamailio.
# Prints: server rate asked NOTIFY/s-asked delivered lost failed server-CPU% (1 core = 100).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$HERE/.."
REF="$ROOT/../shared/reference/kamailio"
RATES=$1; USERS=${2:-2000}; WATCH=${3:-50}; SECS=${4:-20}
SERVERS=${SERVERS:-sipfront kamailio}
WORK=${WORK:-/tmp/sipfront-fanout}
BIN="$ROOT/target/release"
mkdir -p "$WORK"
TCK=$(getconf CLK_TCK)

ticks() { # total utime+stime of a process and its children
  local pids="$1 $(pgrep -P "$1" | tr '\n' ' ')" t=0
  for p in $pids; do [ -r /proc/$p/stat ] && t=$(( t + $(awk '{print $14 + $15}' /proc/$p/stat) )); done
  echo $t
}

start() { # SERVER -> prints "PID PORT"
  case $1 in
  sipfront)
    rm -rf "$WORK/data"
    python3 -c "
import sys
with open(sys.argv[1], 'w') as f:
    for i in range(10100): f.write(f'user{i}@example.test,pw{i}\n')" "$WORK/users.csv"
    "$BIN/sipfront" --data-dir "$WORK/data" user import "$WORK/users.csv" >/dev/null
    SIPFRONT_LOG_LEVEL=warn "$BIN/sipfront" --data-dir "$WORK/data" serve --sip-addr 127.0.0.1:25100 \
      --tls-addr 127.0.0.1:25101 --http-addr 127.0.0.1:29200 >"$WORK/sipfront.log" 2>&1 &
    echo "$! 25100" ;;
  kamailio)
    rm -rf "$WORK/ref" && cp -r "$REF" "$WORK/ref"
    # kamailio.cfg names /tmp/kam-anchor for its database and control socket.
    (cd "$WORK/ref" && RUN=/tmp/kam-anchor ./stop_kamailio.sh >/dev/null 2>&1 || true;
     RUN=/tmp/kam-anchor ./mkdb.sh >/dev/null && RUN=/tmp/kam-anchor ./start_kamailio.sh >/dev/null)
    echo "$(cat /tmp/kam-anchor/kamailio.pid) 5070" ;;
  esac
}

stop() { # SERVER PID
  case $1 in
  sipfront) kill "$2"; wait "$2" 2>/dev/null || true ;;
  kamailio) (cd "$WORK/ref" && RUN=/tmp/kam-anchor ./stop_kamailio.sh >/dev/null 2>&1 || true) ;;
  esac
}

printf 'server\trate\tnotify_asked/s\tdelivered/s\tlost\tfailed\tcpu%%\n'
for r in $RATES; do
  for s in $SERVERS; do
    read -r pid port < <(start "$s"); sleep 2
    json="$WORK/$s-r$r.json"
    # Sample the server's CPU every 0.5 s; the measured phase is the last SECS s before the run's
    # 1.5 s settle.
    ( while kill -0 "$pid" 2>/dev/null; do echo "$(date +%s.%N) $(ticks "$pid")"; sleep 0.5; done ) >"$WORK/$s-r$r.cpu" &
    sampler=$!
    timeout $(( SECS + 300 )) "$BIN/sipfront-load" presence --target 127.0.0.1:"$port" --users "$USERS" --watch "$WATCH" \
      --setup-rate 4000 --rate "$r" --duration "$SECS" --local-ips 127.0.0.2-127.0.0.9 --quiet --json "$json" >"$WORK/$s-r$r.txt" || true
    end=$(date +%s.%N)
    kill "$sampler" 2>/dev/null || true
    stop "$s" "$pid"
    python3 - "$json" "$WORK/$s-r$r.cpu" "$end" "$SECS" "$TCK" "$s" "$r" "$WATCH" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); end, secs, tck = float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
samples = [tuple(map(float, l.split())) for l in open(sys.argv[2]) if len(l.split()) == 2]
hi, lo = end - 2.0, end - 2.0 - secs
win = [s for s in samples if lo <= s[0] <= hi]
cpu = (win[-1][1] - win[0][1]) / tck / (win[-1][0] - win[0][0]) * 100 if len(win) >= 2 else float("nan")
asked = float(sys.argv[7]) * int(sys.argv[8])
expected = j["started"] * int(sys.argv[8])
print(f'{sys.argv[6]}\t{sys.argv[7]}\t{asked:.0f}\t{j["notify_rate"]:.0f}\t{max(expected - j["measured_notifies"], 0)}\t{j["failed"] + j["timeouts"]}\t{cpu:.0f}')
PY
  done
done
