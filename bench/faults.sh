#!/usr/bin/env bash
# Faults under load (issue 18): what a registration storm, a `kill -9` and a store outage do to
# users' service, and whether anything acknowledged is lost. Loopback only; every run bounded
# in count and time. Needs release builds (cargo build --release -p sipfront -p
# sipfront-loadtest), sqlite3, python3; `outage` needs PostgreSQL (ops/postgres.sh).
#
#   bench/faults.sh storm [USERS] [RATE]
#       USERS (20000) register at once (RATE/s, default 40000: as fast as the generator sends)
#       on a server just started, with overload control (defaults) and without it (bounds set
#       out of reach); the generator honours Retry-After, as clients should.
#       Prints per run: time until the last user was registered, users registered, failed,
#       503s answered and tried again, retransmissions, p50/p99/max of a registration, CPU.
#   bench/faults.sh kill [SECONDS]
#       The OCS model (2,000 users, time x10, archiving on) for SECONDS (60); halfway, the
#       server is killed with SIGKILL and started again on the same data. Once in each archive
#       mode (normal, critical). Prints per mode: MESSAGEs answered 2xx, deliveries, archive
#       rows, and acknowledged MESSAGEs missing from the archive (the loss).
#   bench/faults.sh outage [SECONDS] [OUTAGE]
#       The same model on PostgreSQL; at a third of the run PostgreSQL is stopped for OUTAGE
#       seconds (10) and started again. Once in each archive mode. Prints per mode: MESSAGEs
#       answered 2xx and 503, other failures, acknowledged MESSAGEs missing from the archive,
#       and how long after PostgreSQL came back the server was ready again (/readyz).
# env: WORK=/tmp/sipfront-faults, LOCAL_IPS=127.0.1.1-127.0.1.100. Every run's report stays in
# $WORK.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$HERE/.."
BIN="$ROOT/target/release"
WORK=${WORK:-/tmp/sipfront-faults}
LOCAL_IPS=${LOCAL_IPS:-127.0.1.1-127.0.1.100}
TCK=$(getconf CLK_TCK)
SIP=127.0.0.1:25300 TLS=127.0.0.1:25301 HTTP=127.0.0.1:29300
mkdir -p "$WORK"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

halt() { # PID [SIGNAL]: stops a server started by `serve` (not this shell's child) and waits
  kill -"${2:-TERM}" "$1" 2>/dev/null || true
  while kill -0 "$1" 2>/dev/null; do sleep 0.1; done
}

serve() { # DATA_DIR LOG [ENV=VALUE...] -> prints the PID; waits until it answers /readyz
  local data=$1 log=$2; shift 2
  env SIPFRONT_LOG_LEVEL=warn "$@" "$BIN/sipfront" --data-dir "$data" serve --sip-addr $SIP \
    --tls-addr $TLS --http-addr $HTTP >>"$log" 2>&1 &
  local pid=$!
  for _ in $(seq 300); do
    curl -sf "http://$HTTP/readyz" >/dev/null 2>&1 && break
    kill -0 $pid 2>/dev/null || { echo "sipfront did not start: see $log" >&2; exit 1; }
    sleep 0.1
  done
  echo $pid
}

# Starts a server on DATA with overload control MODE (on: the defaults; off: neither bound can
# be reached), runs COMMAND against it (output in NAME.txt, the server's log in NAME.log), stops
# the server and prints its CPU over the command (1 core = 100).
overload_run() { # MODE DATA NAME COMMAND...
  local mode=$1 data=$2 name=$3; shift 3
  local extra=()
  [ "$mode" = off ] && extra=(SIPFRONT_SERVER_MAX_PENDING_REQUESTS=100000000 SIPFRONT_SERVER_MAX_LAG_MS=3600000)
  : >"$name.log"
  local pid; pid=$(serve "$data" "$name.log" "${extra[@]}")
  local t0 c0; t0=$(date +%s.%N); c0=$(ticks "$pid")
  "$@" >"$name.txt" 2>&1 || true
  local t1 c1; t1=$(date +%s.%N); c1=$(ticks "$pid")
  halt "$pid"
  python3 -c "print(f'{($c1 - $c0) / $TCK / ($t1 - $t0) * 100:.0f}')"
}

# What a run's JSON says, as one line (storm).
storm_line() { # JSON CPU_PERCENT LABEL
  python3 - "$@" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); cpu = sys.argv[2]; label = sys.argv[3]
t = j["transactions"].get("register", {})
lat = t.get("latency_ms", {})
s503 = sum(n for k, n in j["transactions"].get("register.initial", {}).get("statuses", {}).items() if k == "503") \
     + sum(n for k, n in j["transactions"].get("register.auth", {}).get("statuses", {}).items() if k == "503")
print(f'{label}\t{j["elapsed_s"]:.1f}\t{j["succeeded"]}\t{j["failed"]}\t{s503}/{j["retries_after_503"]}\t'
      f'{j["retransmissions"]}\t{lat.get("p50", 0):.0f}/{lat.get("p99", 0):.0f}/{lat.get("max", 0):.0f}\t{cpu}')
PY
}

storm() {
  local users=${1:-20000} rate=${2:-40000}
  rm -rf "$WORK/storm-data"
  "$BIN/sipfront-load" register --users "$users" --provision "$WORK/storm-data" --provision-only \
    --sipfront-bin "$BIN/sipfront" >"$WORK/storm-provision.log"
  printf 'overload control\tall registered after s\tregistered\tfailed\t503 given up/tried again\tretransmissions\tp50/p99/max ms\tcpu%%\n'
  for mode in on off; do
    local cpu; cpu=$(overload_run $mode "$WORK/storm-data" "$WORK/storm-$mode" \
      timeout 300 "$BIN/sipfront-load" register --target $SIP --users "$users" --count "$users" --rate "$rate" \
      --local-ips "$LOCAL_IPS" --retry-after --quiet --json "$WORK/storm-$mode.json")
    storm_line "$WORK/storm-$mode.json" "$cpu" "$mode"
  done
}

# A login storm: every user registers and subscribes to its contact list (RFC 4662) at RATE/s.
login() {
  local users=${1:-20000} rate=${2:-20000} watch=${3:-20}
  rm -rf "$WORK/login-data"
  "$BIN/sipfront-load" model --users "$users" --watch "$watch" --resource-lists --provision "$WORK/login-data" \
    --provision-only --sipfront-bin "$BIN/sipfront" >"$WORK/login-provision.log"
  printf 'overload control\tlogged in after s\tregistered\tsubscribed\tfailed\t503 given up/tried again\tretransmissions\tp99 REGISTER/SUBSCRIBE ms\tcpu%%\n'
  for mode in on off; do
    # Then a minute of the model in one second (a run must send something): the figures are
    # the set-up's.
    local cpu; cpu=$(overload_run $mode "$WORK/login-data" "$WORK/login-$mode" \
      timeout 600 "$BIN/sipfront-load" model --target $SIP --users "$users" --watch "$watch" --resource-lists \
      --setup-rate "$rate" --duration 1 --time-scale 60 --local-ips "$LOCAL_IPS" --retry-after --quiet --json "$WORK/login-$mode.json")
    python3 - "$WORK/login-$mode.json" "$cpu" "$mode" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); cpu, mode = sys.argv[2:4]; t = j["transactions"]
reg, sub = t.get("setup.register", {}), t.get("subscribe", {})
s503 = sum(x.get("statuses", {}).get("503", 0) for x in (reg, sub))
took = (j["measured_from_unix_ms"] - j["started_unix_ms"]) / 1000
print(f'{mode}\t{took:.1f}\t{reg.get("ok", 0)}\t{sub.get("ok", 0)}\t{reg.get("failed", 0) + sub.get("failed", 0)}\t'
      f'{s503}/{j["retries_after_503"]}\t{j["retransmissions"]}\t'
      f'{reg.get("latency_ms", {}).get("p99", 0):.0f}/{sub.get("latency_ms", {}).get("p99", 0):.0f}\t{cpu}')
PY
  done
}

# Acknowledged MESSAGEs missing from the archive, and the archive's size.
archive_check() { # ACKED_FILE ARCHIVE_CALL_IDS_FILE -> "rows missing"
  python3 - "$1" "$2" <<'PY'
import sys
acked = set(l.strip() for l in open(sys.argv[1]) if l.strip())
rows = set(l.strip() for l in open(sys.argv[2]) if l.strip())
print(len(rows), len(acked - rows))
PY
}

model_args() { # SECONDS
  echo --users 2000 --watch 20 --time-scale 10 --setup-rate 2000 --duration "$1" --local-ips "$LOCAL_IPS" --quiet
}

kill9() {
  local secs=${1:-60}
  printf 'archive mode\tMESSAGE 2xx\tdeliveries\tarchive rows\tacknowledged but not archived\tfailed (all kinds)\n'
  for mode in normal critical; do
    local data="$WORK/kill-$mode" log="$WORK/kill-$mode.log"; rm -rf "$data"; : >"$log"
    "$BIN/sipfront-load" model --users 2000 --watch 20 --provision "$data" --provision-only \
      --sipfront-bin "$BIN/sipfront" >"$WORK/kill-provision.log"
    local env=(SIPFRONT_ARCHIVE_ENABLED=true SIPFRONT_ARCHIVE_CRITICAL=$([ $mode = critical ] && echo true || echo false))
    local pid; pid=$(serve "$data" "$log" "${env[@]}")
    timeout $(( secs + 300 )) "$BIN/sipfront-load" model --target $SIP $(model_args "$secs") \
      --acked-messages "$WORK/kill-$mode.acked" --json "$WORK/kill-$mode.json" >"$WORK/kill-$mode.txt" 2>&1 &
    local gen=$!
    # Halfway through the measured phase (the set-up takes a few seconds).
    sleep $(( secs / 2 + 3 ))
    halt $pid KILL
    pid=$(serve "$data" "$log" "${env[@]}")
    wait $gen || true
    halt $pid
    sqlite3 "$data/sipfront.db" "SELECT call_id FROM im_archive" >"$WORK/kill-$mode.archived"
    read -r rows missing < <(archive_check "$WORK/kill-$mode.acked" "$WORK/kill-$mode.archived")
    python3 - "$WORK/kill-$mode.json" "$mode" "$rows" "$missing" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); mode, rows, missing = sys.argv[2:5]
m = j["transactions"].get("message", {})
failed = sum(t["failed"] for k, t in j["transactions"].items() if "." not in k or k.startswith("setup."))
print(f'{mode}\t{m.get("ok", 0)}\t{j["deliveries"]}\t{rows}\t{missing}\t{failed}')
PY
  done
}

outage() {
  local secs=${1:-60} down=${2:-10}
  local pgdir="$WORK/pg" pgport=55499
  local url; url=$(PGTEST_DIR=$pgdir PGTEST_PORT=$pgport PGTEST_FSYNC=on "$ROOT/ops/postgres.sh" start)
  local pgbin; pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
  printf 'archive mode\tMESSAGE 2xx\tMESSAGE 503\tother failures\tacknowledged but not archived\tready again after s\n'
  for mode in normal critical; do
    local data="$WORK/outage-$mode" log="$WORK/outage-$mode.log"; rm -rf "$data"; : >"$log"
    as_pg "$pgbin/psql" -h "$pgdir" -p $pgport -U postgres -qc "DROP DATABASE IF EXISTS sipfront" \
      -c "CREATE DATABASE sipfront OWNER sipfront" >/dev/null
    local env=(SIPFRONT_DATABASE_URL="$url" SIPFRONT_ARCHIVE_ENABLED=true
      SIPFRONT_ARCHIVE_CRITICAL=$([ $mode = critical ] && echo true || echo false))
    env "${env[@]}" "$BIN/sipfront-load" model --users 2000 --watch 20 --provision "$data" --provision-only \
      --sipfront-bin "$BIN/sipfront" >"$WORK/outage-provision.log"
    local pid; pid=$(serve "$data" "$log" "${env[@]}")
    timeout $(( secs + 300 )) "$BIN/sipfront-load" model --target $SIP $(model_args "$secs") \
      --acked-messages "$WORK/outage-$mode.acked" --json "$WORK/outage-$mode.json" >"$WORK/outage-$mode.txt" 2>&1 &
    local gen=$!
    sleep $(( secs / 3 + 3 ))
    as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -m fast -w stop >/dev/null
    sleep "$down"
    as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/server.log" -w -t 30 \
      -o "-p $pgport -k $pgdir -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200" start >/dev/null
    local back; back=$(date +%s.%N)
    until curl -sf "http://$HTTP/readyz" >/dev/null 2>&1; do sleep 0.05; done
    local ready; ready=$(python3 -c "print(f'{$(date +%s.%N) - $back:.2f}')")
    wait $gen || true
    halt $pid
    as_pg "$pgbin/psql" -h "$pgdir" -p $pgport -U postgres -d sipfront -Atc "SELECT call_id FROM im_archive" \
      >"$WORK/outage-$mode.archived"
    read -r _rows missing < <(archive_check "$WORK/outage-$mode.acked" "$WORK/outage-$mode.archived")
    python3 - "$WORK/outage-$mode.json" "$mode" "$missing" "$ready" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); mode, missing, ready = sys.argv[2:5]
m = j["transactions"].get("message", {})
s503 = m.get("statuses", {}).get("503", 0)
failed = sum(t["failed"] for k, t in j["transactions"].items() if "." not in k or k.startswith("setup."))
print(f'{mode}\t{m.get("ok", 0)}\t{s503}\t{failed - s503}\t{missing}\t{ready}')
PY
  done
  PGTEST_DIR=$pgdir PGTEST_PORT=$pgport "$ROOT/ops/postgres.sh" stop
}

case "${1:-}" in
storm) shift; storm "$@" ;;
login) shift; login "$@" ;;
kill) shift; kill9 "$@" ;;
outage) shift; outage "$@" ;;
*) sed -n '2,26p' "$0" >&2; exit 2 ;;
esac
