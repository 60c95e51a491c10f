#!/usr/bin/env bash
# MESSAGE relay on one node against a pool of three behind HAProxy (ops/pool.sh), same users,
# same generator (sipfront-load over TCP, one connection per user), same PostgreSQL kind, same
# machine, one session. Through HAProxy a sender and its receiver land on members by least
# connections, so most messages cross members: sender's edge -> receiver's home -> receiver's
# edge. Run as root (namespaces); loopback and the pool's own namespaces only; bounded runs.
#
#   bench/pool-compare.sh "RATE..." [SECONDS] [-- sipfront-load message options...]
#     bench/pool-compare.sh "1000 2000" 20
#   env: USERS=2000 (half send, half receive), WORK=/tmp/sipfront-pool-bench, SETUPS="single pool",
#        SCENARIO=message (or presence: PUBLISH at the rate, NOTIFYs counted; pass its options
#        after --, e.g. -- --presentities 1000 --watch 10; or model: the OCS user model, which
#        ignores the rate, e.g. -- --watch 10 --time-scale 10 --setup-rate 2000)
# Prints per setup and rate: achieved rate, failures, p99 (ms), the CPU of sipfront (all members
# summed; 1 core = 100) and of HAProxy over the measured phase.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$HERE/.."
RATES=$1; SECS=${2:-20}
shift $(( $# < 2 ? $# : 2 )); [ "${1:-}" = -- ] && shift
RUN_ARGS=("$@")
SETUPS=${SETUPS:-single pool}
USERS=${USERS:-2000}
SCENARIO=${SCENARIO:-message}
WORK=${WORK:-/tmp/sipfront-pool-bench}
BIN="$ROOT/target/release"
TCK=$(getconf CLK_TCK)
PG_PORT=55477
mkdir -p "$WORK"
USERS_CSV="$WORK/users.csv"
"$BIN/sipfront-load" users --users "$USERS" >"$USERS_CSV"

ticks() { # utime+stime of the processes given
  local t=0 p
  for p in "$@"; do [ -r "/proc/$p/stat" ] && t=$(( t + $(awk '{print $14 + $15}' "/proc/$p/stat") )); done
  echo $t
}

start_single() { # -> "TARGET PIDS"
  rm -rf "$WORK/single" && mkdir -p "$WORK/single"
  local url
  url=$(PGTEST_DIR="$WORK/single/pg" PGTEST_PORT=$PG_PORT PGTEST_FSYNC=on "$ROOT/ops/postgres.sh" start)
  SIPFRONT_DATABASE_URL=$url "$BIN/sipfront" --data-dir "$WORK/single" domain add example.test >/dev/null
  SIPFRONT_DATABASE_URL=$url "$BIN/sipfront" --data-dir "$WORK/single" user import "$USERS_CSV" >/dev/null
  SIPFRONT_DATABASE_URL=$url SIPFRONT_LOG_LEVEL=warn "$BIN/sipfront" --data-dir "$WORK/single" serve \
    --sip-addr 127.0.0.1:25300 --tls-addr 127.0.0.1:25301 --http-addr 127.0.0.1:29300 >"$WORK/single.log" 2>&1 &
  echo "127.0.0.1:25300 $!"
}

stop_single() {
  kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true
  PGTEST_DIR="$WORK/single/pg" PGTEST_PORT=$PG_PORT "$ROOT/ops/postgres.sh" stop
}

pool_env=(RUN="$WORK/pool" SIPFRONT="$BIN/sipfront" DOMAIN=example.test USERS_CSV="$USERS_CSV"
  LB_SIP_PORT=25400 LB_TLS_PORT=25401 PG_PORT=$PG_PORT POOL_NAME=sfb POOL_NET=10.216.0 LOG_LEVEL=warn
  LB_MAXCONN=$(( USERS + 500 )))

start_pool() { # -> "TARGET PIDS" (members, then HAProxy last)
  env "${pool_env[@]}" "$ROOT/ops/pool.sh" up 3 >"$WORK/pool-up.log"
  for _ in $(seq 1 50); do
    [ "$(env "${pool_env[@]}" "$ROOT/ops/pool.sh" haproxy-status | grep -c ' UP$')" = 3 ] && break
    sleep 0.2
  done
  echo "127.0.0.1:25400 $(cat "$WORK"/pool/member*.pid | tr '\n' ' ')$(cat "$WORK/pool/haproxy.pid")"
}

stop_pool() { env "${pool_env[@]}" "$ROOT/ops/pool.sh" down >/dev/null; }

printf 'setup\tscenario\trate\tachieved/s\tfailed\tp99_ms\tnotify/s\tsipfront_cpu%%\thaproxy_cpu%%\n'
for r in $RATES; do
  for s in $SETUPS; do
    read -r target pids < <("start_$s")
    sleep 2
    read -r -a all <<<"$pids"
    if [ "$s" = pool ]; then members=("${all[@]:0:3}"); lb=("${all[3]}"); else members=("${all[@]}"); lb=(); fi
    name="$s-$SCENARIO-r$r"; json="$WORK/$name.json"
    ( while true; do echo "$(date +%s.%N) $(ticks "${members[@]}") $(ticks "${lb[@]}")"; sleep 0.5; done ) >"$WORK/$name.cpu" &
    sampler=$!
    rm -f "$json"
    timeout $(( SECS + 600 )) "$BIN/sipfront-load" "$SCENARIO" --target "$target" --transport tcp --rate "$r" \
      --duration "$SECS" --users "$USERS" --local-ips 127.0.0.2-127.0.0.9 --quiet --json "$json" ${RUN_ARGS[@]+"${RUN_ARGS[@]}"} \
      >"$WORK/$name.txt" 2>&1 || true
    kill "$sampler" 2>/dev/null || true
    "stop_$s" "${all[0]}"
    [ -s "$json" ] || { printf '%s\t%s\tno report: see %s\n' "$s" "$r" "$WORK/$name.txt"; continue; }
    python3 - "$json" "$WORK/$name.cpu" "$TCK" "$s" "$r" "$SCENARIO" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); tck = int(sys.argv[3]); setup, rate, scen = sys.argv[4:7]
samples = [tuple(map(float, l.split())) for l in open(sys.argv[2]) if len(l.split()) == 3]
lo, hi = j["measured_from_unix_ms"] / 1000.0, j["measured_until_unix_ms"] / 1000.0
win = [s for s in samples if lo <= s[0] <= hi]
def cpu(i):
    return (win[-1][i] - win[0][i]) / tck / (win[-1][0] - win[0][0]) * 100 if len(win) >= 2 else float("nan")
main = {"message": "message", "presence": "publish", "model": "message"}.get(scen, scen)
p99 = j["transactions"][main]["latency_ms"]["p99"] if main in j["transactions"] else float("nan")
notify = f'{j["notify_rate"]:.0f}' if "notify_rate" in j else "-"
print(f'{setup}\t{scen}\t{rate}\t{j["achieved_rate"]:.0f}\t{j["failed"]}\t{p99:.1f}\t{notify}\t{cpu(1):.0f}\t{cpu(2):.0f}')
PY
  done
done
