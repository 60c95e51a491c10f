#!/usr/bin/env bash
# Side-by-side SIPp runs against the floor (../shared/reference/floor), sipfront and Kamailio
# (../shared/reference/kamailio), measured by the reference run_sipp.sh in the same session:
# same generator, same scenario, same machine. Loopback only; every run bounded in time.
#
#   bench/sipp-compare.sh SCENARIO.xml "RATE..." [SECONDS]     e.g. reg_auth.xml "4000 8000" 15
#   env: TRANSPORT=u1|t1 (SIPp), SERVERS="floor sipfront kamailio", WORK=/tmp/sipfront-bench
#
# Needs: sip-tester (sipp), kamailio kamailio-presence-modules kamailio-sqlite-modules sqlite3,
# and a release build (cargo build --release -p sipfront). Results: $WORK/*/results.tsv.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$HERE/.."
REF="$ROOT/../shared/reference"
SCEN=$1; RATES=$2; SECS=${3:-15}
SERVERS=${SERVERS:-floor sipfront kamailio}
WORK=${WORK:-/tmp/sipfront-bench}
BIN="$ROOT/target/release/sipfront"
mkdir -p "$WORK"

# The reference scripts write their CSV files next to themselves: use a private copy.
rm -rf "$WORK/ref" && cp -r "$REF/kamailio" "$WORK/ref" && chmod -R u+w "$WORK/ref"
export RUN="$WORK/kamailio"
(cd "$WORK/ref" && ./mkdb.sh >/dev/null)
# kamailio.cfg names /tmp/kam-anchor for its database and control socket, whatever RUN is.
(cd "$WORK/ref" && RUN=/tmp/kam-anchor ./mkdb.sh >/dev/null)

pids=()
cleanup() { for p in "${pids[@]}"; do pkill -P "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done; (cd "$WORK/ref" && ./stop_kamailio.sh >/dev/null 2>&1 || true); }
trap cleanup EXIT

# run_sipp.sh measures the process named in RUN/kamailio.pid and its children: single-process
# servers run under a waiting shell so that the same accounting applies to them.
start_wrapped() { # NAME CMD...
  local name=$1; shift
  mkdir -p "$WORK/$name"
  bash -c "$* & wait" >"$WORK/$name/server.log" 2>&1 &
  echo $! >"$WORK/$name/kamailio.pid"; pids+=($!)
}

for s in $SERVERS; do
  case $s in
  floor)
    rustc -O -o "$WORK/floor-bin" "$REF/floor/floor.rs"
    start_wrapped floor "$WORK/floor-bin" 127.0.0.1:25070 auth ;;
  sipfront)
    rm -rf "$WORK/sipfront-data"
    # The same users as Kamailio's subscriber table: user0..user10099@example.test, pw<N>.
    python3 -c "
import sys
with open(sys.argv[1], 'w') as f:
    for i in range(10100): f.write(f'user{i}@example.test,pw{i}\n')" "$WORK/users.csv"
    "$BIN" --data-dir "$WORK/sipfront-data" user import "$WORK/users.csv" >/dev/null
    SIPFRONT_LOG_LEVEL=warn start_wrapped sipfront "$BIN" --data-dir "$WORK/sipfront-data" serve \
      --sip-addr 127.0.0.1:25080 --tls-addr 127.0.0.1:25081 --http-addr 127.0.0.1:29190 ;;
  kamailio)
    (cd "$WORK/ref" && ./start_kamailio.sh >/dev/null) ;;
  esac
done
sleep 2

port() { case $1 in floor) echo 25070;; sipfront) echo 25080;; kamailio) echo 5070;; esac; }

# MESSAGE relay: the reference SIPp UAS (127.0.0.1:5090) answers every MESSAGE; users
# user10000..user10099 register it as their contact on each server, and the senders of
# msg_pairs.csv write to them.
if [ "$SCEN" = msg_uac.xml ]; then
  mkdir -p "$WORK/uas"
  total=0; for r in $RATES; do total=$(( total + SECS + 40 )); done
  (cd "$WORK/ref" && RUN="$WORK/uas" UAS_MAX_S=$(( total * $(echo $SERVERS | wc -w) + 60 )) ./uas.sh start >/dev/null)
  pids+=($(cat "$WORK/uas/uas.pid"))
  for s in $SERVERS; do
    [ "$s" = floor ] && continue
    timeout 60 sipp 127.0.0.1:"$(port "$s")" -sf "$WORK/ref/scenarios/reg_contact.xml" -inf "$WORK/ref/msg_targets.csv" \
      -i 127.0.0.1 -m 100 -r 100 -nostdin >"$WORK/$s-reg-contact.log" 2>&1 || { echo "registering the UAS on $s failed"; exit 1; }
  done
  export INF="$WORK/ref/msg_pairs.csv"
fi
for r in $RATES; do
  for s in $SERVERS; do
    run=$WORK/$s; [ "$s" = kamailio ] && run=$RUN
    RUN=$run "$WORK/ref/run_sipp.sh" "$s" "$SCEN" "$(port "$s")" "$r" "$SECS" | tail -1
  done
done
