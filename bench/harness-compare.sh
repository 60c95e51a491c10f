#!/usr/bin/env bash
# One sipfront-load scenario side by side against sipfront and Kamailio
# (../shared/reference/kamailio), each started fresh with the same users for every point: same
# generator, same machine, same session. Loopback only; every run bounded in count and time.
#
#   bench/harness-compare.sh SCENARIO "RATE..." [SECONDS] [-- sipfront-load options...]
#     bench/harness-compare.sh register "2000 4000" 20 -- --users 10000
#     bench/harness-compare.sh presence "300" 20 -- --users 20000 --watch 50 --setup-rate 3000
#   env: SERVERS="sipfront kamailio", USERS=10100 (accounts in Kamailio's subscriber table;
#        sipfront gets the run's own, by sipfront-load --provision), WORK=/tmp/sipfront-harness,
#        SCRAPE=N (sipfront only: GET /metrics every N seconds during the run, as Prometheus would),
#        LOCAL_IPS=127.0.0.2-127.0.0.9 (the generator's source addresses),
#        FLOOD=RATE (SIPp floods unauthenticated REGISTERs at RATE/s from FLOOD_SRC=127.0.0.99
#        throughout; sipfront then counts loopback sources too (flood.allow empty) and Kamailio
#        loads pike with the same limit: FLOOD_LIMIT=500 requests per 2 s per address)
# Needs release builds (cargo build --release -p sipfront -p sipfront-loadtest), Kamailio with
# its presence and SQLite modules, sqlite3, python3.
# Prints one line per server and rate: the rate asked, the rate achieved, failed transactions
# (timeouts included) of the measured phase / of its set-up and teardown, p99 of the scenario's transaction in ms, NOTIFYs answered per second
# and the presentity states they carried per second (one per PIDF, one per RLMI resource),
# states missing (presence), and the server's CPU over the measured phase (1 core = 100) and
# its largest PSS then (MB, children included).
# Every run's table, JSON report and CPU samples stay in $WORK.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$HERE/.."
REF="$ROOT/../shared/reference/kamailio"
SCEN=$1; RATES=$2; SECS=${3:-20}
shift $(( $# < 3 ? $# : 3 )); [ "${1:-}" = -- ] && shift
RUN_ARGS=("$@")
SERVERS=${SERVERS:-sipfront kamailio}
USERS=${USERS:-10100}
WORK=${WORK:-/tmp/sipfront-harness}
BIN="$ROOT/target/release"
LOCAL_IPS=${LOCAL_IPS:-127.0.0.2-127.0.0.9}
FLOOD_SRC=${FLOOD_SRC:-127.0.0.99}
FLOOD_LIMIT=${FLOOD_LIMIT:-500}
mkdir -p "$WORK"
TCK=$(getconf CLK_TCK)
# kamailio.cfg names /tmp/kam-anchor for its database and control socket, whatever RUN is.
KAM_RUN=/tmp/kam-anchor

pss() { # total PSS in MB of a process and its children
  local pids="$1 $(pgrep -P "$1" | tr '\n' ' ')" kb=0
  for p in $pids; do [ -r /proc/$p/smaps_rollup ] && kb=$(( kb + $(awk '/^Pss:/ {print $2}' /proc/$p/smaps_rollup) )); done
  echo $(( kb / 1024 ))
}

ticks() { # total utime+stime of a process and its children
  local pids="$1 $(pgrep -P "$1" | tr '\n' ' ')" t=0
  for p in $pids; do [ -r /proc/$p/stat ] && t=$(( t + $(awk '{print $14 + $15}' /proc/$p/stat) )); done
  echo $t
}

start() { # SERVER -> prints "PID PORT"
  case $1 in
  sipfront)
    rm -rf "$WORK/data"
    # The run's own users (and, with --resource-lists, their contact lists), as it will use them.
    "$BIN/sipfront-load" "$SCEN" --provision "$WORK/data" --provision-only --sipfront-bin "$BIN/sipfront" \
      "${RUN_ARGS[@]}" >"$WORK/provision.log"
    if [ -n "${FLOOD:-}" ]; then
      export SIPFRONT_FLOOD_ALLOW="" SIPFRONT_FLOOD_MAX_REQUESTS=$FLOOD_LIMIT SIPFRONT_FLOOD_WINDOW_MS=2000
    fi
    SIPFRONT_LOG_LEVEL=warn "$BIN/sipfront" --data-dir "$WORK/data" serve --sip-addr 127.0.0.1:25100 \
      --tls-addr 127.0.0.1:25101 --http-addr 127.0.0.1:29200 >"$WORK/sipfront.log" 2>&1 &
    echo "$! 25100" ;;
  kamailio)
    # A private copy: mkdb.sh writes its SIPp CSV files next to itself.
    rm -rf "$WORK/ref" && cp -r "$REF" "$WORK/ref" && chmod -R u+w "$WORK/ref"
    if [ -n "${FLOOD:-}" ]; then
      # pike: the same limit per source address, its requests dropped unanswered.
      sed -i -e 's/^loadmodule "counters.so"/loadmodule "counters.so"\nloadmodule "pike.so"\nmodparam("pike", "sampling_time_unit", 2)\nmodparam("pike", "reqs_density_per_unit", '"$FLOOD_LIMIT"')\nmodparam("pike", "remove_latency", 60)/' \
        -e 's/^route\[REQINIT\] {/route[REQINIT] {\n\tif (!pike_check_req()) { exit; }/' "$WORK/ref/kamailio.cfg"
    fi
    (cd "$WORK/ref" && RUN=$KAM_RUN ./stop_kamailio.sh >/dev/null 2>&1 || true;
     RUN=$KAM_RUN N=$(( USERS > 100 ? USERS - 100 : USERS )) ./mkdb.sh >/dev/null &&
     RUN=$KAM_RUN ./start_kamailio.sh >/dev/null)
    echo "$(cat $KAM_RUN/kamailio.pid) 5070" ;;
  esac
}

stop() { # SERVER PID
  case $1 in
  sipfront) kill "$2"; wait "$2" 2>/dev/null || true ;;
  kamailio) (cd "$WORK/ref" && RUN=$KAM_RUN ./stop_kamailio.sh >/dev/null 2>&1 || true) ;;
  esac
}

printf 'server\tscenario\trate\tachieved/s\tfailed/around\tp99_ms\tnotify/s/states/s\tstates_missing\tcpu%%\tpss_mb\n'
for r in $RATES; do
  for s in $SERVERS; do
    read -r pid port < <(start "$s"); sleep 2
    name="$s-$SCEN-r$r"; json="$WORK/$name.json"
    # Sample the server's CPU every 0.5 s; the report says when the measured phase ran.
    ( while kill -0 "$pid" 2>/dev/null; do echo "$(date +%s.%N) $(ticks "$pid") $(pss "$pid")"; sleep 0.5; done ) >"$WORK/$name.cpu" &
    sampler=$!
    scraper=
    if [ -n "${SCRAPE:-}" ] && [ "$s" = sipfront ]; then
      ( while kill -0 "$pid" 2>/dev/null; do curl -s -o /dev/null http://127.0.0.1:29200/metrics; sleep "$SCRAPE"; done ) &
      scraper=$!
    fi
    rm -f "$json"
    flooder=
    if [ -n "${FLOOD:-}" ]; then
      # Bounded: at most FLOOD/s for the run and its set-up.
      timeout $(( SECS + 120 )) sipp 127.0.0.1:"$port" -sf "$HERE/scenarios/flood_register.xml" -r "$FLOOD" \
        -m $(( FLOOD * (SECS + 120) )) -l 100000 -i "$FLOOD_SRC" -nostdin >"$WORK/$name.flood" 2>&1 &
      flooder=$!
    fi
    timeout $(( SECS + 600 )) "$BIN/sipfront-load" "$SCEN" --target 127.0.0.1:"$port" --rate "$r" \
      --duration "$SECS" --local-ips "$LOCAL_IPS" --quiet --json "$json" "$@" >"$WORK/$name.txt" 2>&1 || true
    [ -z "$flooder" ] || { kill "$flooder" 2>/dev/null; pkill -f "flood_register.xml" 2>/dev/null; wait "$flooder" 2>/dev/null; } || true
    kill "$sampler" 2>/dev/null || true
    [ -z "$scraper" ] || kill "$scraper" 2>/dev/null || true
    stop "$s" "$pid"
    [ -s "$json" ] || { printf '%s\t%s\t%s\tno report: see %s\n' "$s" "$SCEN" "$r" "$WORK/$name.txt"; continue; }
    python3 - "$json" "$WORK/$name.cpu" "$TCK" "$s" "$SCEN" "$r" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); tck = int(sys.argv[3]); server, scen, rate = sys.argv[4:7]
samples = [tuple(map(float, l.split())) for l in open(sys.argv[2]) if len(l.split()) == 3]
# The measured phase, as the report gives it (the set-up before it, settle and teardown after).
lo, hi = j["measured_from_unix_ms"] / 1000.0, j["measured_until_unix_ms"] / 1000.0
win = [s for s in samples if lo <= s[0] <= hi]
cpu = (win[-1][1] - win[0][1]) / tck / (win[-1][0] - win[0][0]) * 100 if len(win) >= 2 else float("nan")
pss = max((s[2] for s in win), default=float("nan"))
main = {"register": "register", "message": "message", "presence": "publish"}.get(scen)
txs = j["transactions"]
p99 = txs[main]["latency_ms"]["p99"] if main in txs else max(
    (t["latency_ms"]["p99"] for k, t in txs.items() if not k.startswith("setup.") and "." not in k), default=float("nan"))
notify, missing = "-", "-"
if scen == "presence":
    c = j["config"]; users = c["users"]; p = c.get("presentities") or users // 2
    # Each watcher watches `watch` presentities, singly or through its resource list: a
    # PUBLISH changes one presentity and reaches its watchers.
    per_publish = (users - p) * c["watch"] / p
    # A list NOTIFY coalesces its members' changes (RFC 6446): count the states carried.
    notify = f'{j["notify_rate"]:.0f}/{j["state_rate"]:.0f}'
    missing = str(max(round(j["started"] * per_publish) - j["measured_states"], 0))
# Failures of the measured phase, and apart those of the set-up and teardown (subscriptions
# made and ended) which the measured figures do not include.
whole = sum(t["failed"] for k, t in txs.items() if "." not in k or k.startswith("setup."))
around = whole - (txs[main]["failed"] if main in txs else j["failed"])
print(f'{server}\t{scen}\t{rate}\t{j["achieved_rate"]:.0f}\t{j["failed"]}/{max(around, 0)}\t{p99:.1f}\t{notify}\t{missing}\t{cpu:.0f}\t{pss:.0f}')
PY
  done
done
