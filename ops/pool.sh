#!/usr/bin/env bash
# A pool of sipfront members on one machine, to try a pool and to test one: N members, each in a
# network namespace of its own (sfp1..sfpN, at 10.214.0.11..), one PostgreSQL they share, and
# HAProxy in front of them with ops/haproxy.cfg. Run as root (namespaces). Everything it starts
# is recorded in $RUN, and `down` stops exactly that: by process group and pid file, never by
# name, and deletes only the namespaces and links it made.
#
#   ops/pool.sh up N         bridge, namespaces, PostgreSQL, the domain, members 1..N, HAProxy
#   ops/pool.sh add          one member more (HAProxy takes it in without a restart)
#   ops/pool.sh start I      start member I again (after stop)
#   ops/pool.sh stop I [-9]  SIGTERM: member I drains and leaves; -9: it crashes
#   ops/pool.sh status       sipfront pool status, and what HAProxy thinks of each member
#   ops/pool.sh down         everything above, gone
#
# Settings (environment): SIPFRONT (the binary; default target/release/sipfront, else
# target/debug/sipfront, else the one on PATH), RUN (/tmp/sipfront-pool), DOMAIN (pool.test),
# USERS_CSV (users to import, `aor,password` per line), LB_ADDR (127.0.0.1), LB_SIP_PORT
# (15060), LB_TLS_PORT (15061), PG_PORT (55433), POOL_SECRET (made up once per pool),
# POOL_NAME (sfp: namespaces sfp1.., bridge sfpbr0) and POOL_NET (10.214.0), so that two pools
# can live side by side; LB_MAXCONN (HAProxy's maxconn, 9000 as in ops/haproxy.cfg; its file
# descriptor limit is raised to match, or it is lowered to what the hard limit allows).
# Clients connect to $LB_ADDR:$LB_SIP_PORT (TCP) or :$LB_TLS_PORT (TLS); UDP clients go to a
# member's own address (10.214.0.1I:5060), as DNS SRV would send them.
set -euo pipefail
# Under pipefail a `| grep -q` can fail a match: grep quits at it, the writer gets SIGPIPE and the
# pipeline's status is the writer's. Every grep here reads its input to the end instead.
OPS="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$OPS")"
RUN=${RUN:-/tmp/sipfront-pool}
DOMAIN=${DOMAIN:-pool.test}
LB_ADDR=${LB_ADDR:-127.0.0.1}
LB_SIP_PORT=${LB_SIP_PORT:-15060}
LB_TLS_PORT=${LB_TLS_PORT:-15061}
PG_PORT=${PG_PORT:-55433}
NAME=${POOL_NAME:-sfp}
NET=${POOL_NET:-10.214.0}
BR=${NAME}br0
BR_ADDR=$NET.1
MAX_N=20

die() { echo "pool.sh: $*" >&2; exit 1; }
member_addr() { echo "$NET.$((10 + $1))"; }
check_i() {
  case "${1:-}" in '' | *[!0-9]*) die "not a member number: '${1:-}'" ;; esac
  [ "$1" -ge 1 ] && [ "$1" -le "$MAX_N" ] || die "member $1 is outside 1..$MAX_N"
}
binary() {
  if [ -n "${SIPFRONT:-}" ]; then echo "$SIPFRONT"
  elif [ -x "$ROOT/target/release/sipfront" ]; then echo "$ROOT/target/release/sipfront"
  elif [ -x "$ROOT/target/debug/sipfront" ]; then echo "$ROOT/target/debug/sipfront"
  else command -v sipfront || die "no sipfront binary: cargo build --release -p sipfront, or set SIPFRONT"
  fi
}
# Whether a live (not zombie) process is in process group $1.
group_alive() {
  local g=$1 f s
  for f in /proc/[0-9]*/stat; do
    { read -r s <"$f"; } 2>/dev/null || continue
    s=${s##*) }
    set -- $s
    [ "${3:-}" = "$g" ] && [ "$1" != Z ] && return 0
  done
  return 1
}
# Whether process $1 lives (not a zombie). Right after `setsid ... &` its group may not be
# its own yet, so a start is watched by pid.
proc_alive() {
  local s
  { read -r s <"/proc/$1/stat"; } 2>/dev/null || return 1
  s=${s##*) }
  [ "${s%% *}" != Z ]
}
# Stops the process group in pid file $1: SIG$2 (TERM: then KILL after $3 seconds).
stop_group() {
  local f=$1 sig=${2:-TERM} wait=${3:-15} p
  [ -f "$f" ] || return 0
  p=$(cat "$f")
  case "$p" in '' | *[!0-9]*) rm -f "$f"; return 0 ;; esac
  kill -"$sig" -- "-$p" 2>/dev/null || true
  if [ "$sig" = TERM ]; then
    for _ in $(seq 1 $((wait * 10))); do group_alive "$p" || break; sleep 0.1; done
    kill -KILL -- "-$p" 2>/dev/null || true
  fi
  for _ in $(seq 1 30); do group_alive "$p" || break; sleep 0.1; done
  rm -f "$f"
}
pg_url() { echo "postgres://sipfront@$BR_ADDR:$PG_PORT/sipfront"; }
secret() {
  [ -f "$RUN/secret" ] || { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$RUN/secret"; chmod 600 "$RUN/secret"; }
  echo "${POOL_SECRET:-$(cat "$RUN/secret")}"
}

net_up() {
  local n=$1 i ns host peer addr
  if ! ip link show "$BR" >/dev/null 2>&1; then
    ip link add "$BR" type bridge
    echo "$BR" >>"$RUN/links"
  fi
  ip addr show dev "$BR" | grep "inet $BR_ADDR/24" >/dev/null || ip addr add "$BR_ADDR/24" dev "$BR"
  ip link set "$BR" up
  for i in $(seq 1 "$n"); do
    ns=$NAME$i host=$NAME${i}h peer=$NAME${i}n addr=$(member_addr "$i")
    if ! ip netns list | grep -w "^$ns" >/dev/null; then
      ip netns add "$ns"
      echo "$ns" >>"$RUN/namespaces"
    fi
    if ! ip link show "$host" >/dev/null 2>&1; then
      ip link add "$host" type veth peer name "$peer" netns "$ns"
      echo "$host" >>"$RUN/links"
    fi
    ip link set "$host" master "$BR" up
    ip -n "$ns" link set lo up
    ip -n "$ns" link set "$peer" up
    ip -n "$ns" addr show dev "$peer" | grep "inet $addr/24" >/dev/null || ip -n "$ns" addr add "$addr/24" dev "$peer"
    ip -n "$ns" route replace default via "$BR_ADDR"
  done
}

pg_up() {
  [ -f "$RUN/pg.url" ] && return 0
  PGTEST_DIR="$RUN/pg" PGTEST_PORT=$PG_PORT PGTEST_LISTEN=$BR_ADDR PGTEST_NET="$NET.0/24" \
    "$OPS/postgres.sh" start >/dev/null
  pg_url >"$RUN/pg.url"
  local sf
  sf=$(binary)
  SIPFRONT_DATABASE_URL=$(pg_url) "$sf" --data-dir "$RUN/admin" domain add "$DOMAIN" >/dev/null
  if [ -n "${USERS_CSV:-}" ]; then
    SIPFRONT_DATABASE_URL=$(pg_url) "$sf" --data-dir "$RUN/admin" user import "$USERS_CSV" >/dev/null
  fi
}

member_start() {
  local i=$1 ns addr sf pidf log
  ns=$NAME$i addr=$(member_addr "$i") pidf="$RUN/member$i.pid" log="$RUN/member$i.log"
  ip netns list | grep -w "^$ns" >/dev/null || die "no namespace $ns: run '$0 up N' first"
  if [ -f "$pidf" ] && group_alive "$(cat "$pidf")"; then echo "member $i runs already"; return 0; fi
  sf=$(binary)
  mkdir -p "$RUN/member$i"
  # setsid: the member leads a process group of its own, which stop and down signal.
  # HAProxy reaches the members from the bridge's address, and names each client there.
  SIPFRONT_DATABASE_URL=$(pg_url) SIPFRONT_POOL_SECRET=$(secret) SIPFRONT_POOL_MEMBER_ID=fe$i \
    SIPFRONT_TRANSPORT_PROXY_PROTOCOL_FROM=$BR_ADDR \
    SIPFRONT_SERVER_DRAIN_TIMEOUT_SECS=${DRAIN_SECS:-5} SIPFRONT_LOG_LEVEL=${LOG_LEVEL:-info} \
    setsid ip netns exec "$ns" "$sf" --data-dir "$RUN/member$i" serve \
    --sip-addr "$addr:5060" --tls-addr "$addr:5061" --http-addr "$addr:9090" >>"$log" 2>&1 </dev/null &
  echo $! >"$pidf"
  for _ in $(seq 1 150); do
    proc_alive "$(cat "$pidf")" || { tail -20 "$log" >&2; rm -f "$pidf"; die "member $i exited while starting"; }
    ip netns exec "$ns" ss -Hltn "sport = :5060" 2>/dev/null | grep "$addr:5060" >/dev/null && {
      echo "member $i: $addr (SIP 5060, TLS 5061, HTTP 9090), log $log"
      return 0
    }
    sleep 0.1
  done
  die "member $i does not listen on $addr:5060 after 15 s (log $log)"
}

haproxy_up() {
  local n=$1 servers_tcp="" servers_tls="" i cfg="$RUN/haproxy.cfg"
  [ -f "$RUN/haproxy.pid" ] && group_alive "$(cat "$RUN/haproxy.pid")" && return 0
  # Every member the pool may grow to is declared; those not started yet are disabled, and
  # `add` enables them through the stats socket, without a restart of HAProxy.
  for i in $(seq 1 "$MAX_N"); do
    local off=""
    [ "$i" -le "$n" ] || off=" disabled"
    servers_tcp+="    server fe$i $(member_addr "$i"):5060 check send-proxy-v2$off"$'\n'
    servers_tls+="    server fe$i $(member_addr "$i"):5061 check send-proxy-v2$off"$'\n'
  done
  # Two descriptors a connection and some to spare: within the hard limit, or a lower maxconn
  # (HAProxy refuses to start with a maxconn its descriptor limit cannot hold).
  local maxconn=${LB_MAXCONN:-} hard
  if [ -n "$maxconn" ]; then
    hard=$(ulimit -Hn)
    if [ "$hard" != unlimited ] && [ $(( maxconn * 2 + 200 )) -gt "$hard" ]; then
      maxconn=$(( (hard - 200) / 2 ))
      echo "pool.sh: HAProxy's maxconn lowered to $maxconn, for the file descriptor limit ($hard)" >&2
    fi
    ulimit -n $(( maxconn * 2 + 200 ))
  fi
  # ops/haproxy.cfg as it is, but for the bind addresses, the stats socket and the members.
  awk -v tcp="$servers_tcp" -v tls="$servers_tls" -v sip=":$LB_SIP_PORT" -v tlsb=":$LB_TLS_PORT" \
    -v lb="$LB_ADDR" -v sock="$RUN/haproxy.sock" -v maxconn="$maxconn" '
    /^backend sipfront_tls/ { backend = "tls" }
    /^backend sipfront_tcp/ { backend = "tcp" }
    /^    bind :5060$/ { print "    bind " lb sip; next }
    /^    bind :5061$/ { print "    bind " lb tlsb; next }
    /stats socket/ { print "    stats socket " sock " mode 600 level admin"; next }
    /^    maxconn / && maxconn != "" { print "    maxconn " maxconn; next }
    /^    # members$/ { print; printf "%s", (backend == "tls" ? tls : tcp); skip = 1; next }
    /^    # end of members$/ { skip = 0 }
    !skip { print }' "$OPS/haproxy.cfg" >"$cfg"
  haproxy -c -q -f "$cfg" || die "HAProxy refuses $cfg"
  rm -f "$RUN/haproxy.sock"
  setsid haproxy -db -f "$cfg" >>"$RUN/haproxy.log" 2>&1 </dev/null &
  echo $! >"$RUN/haproxy.pid"
  for _ in $(seq 1 50); do
    [ -S "$RUN/haproxy.sock" ] && { echo "HAProxy: $LB_ADDR:$LB_SIP_PORT (TCP), $LB_ADDR:$LB_TLS_PORT (TLS)"; return 0; }
    proc_alive "$(cat "$RUN/haproxy.pid")" || { tail -20 "$RUN/haproxy.log" >&2; die "HAProxy exited"; }
    sleep 0.1
  done
  die "HAProxy's stats socket did not appear"
}

# Sends one command to HAProxy's stats socket and prints the answer.
haproxy_cmd() {
  python3 - "$RUN/haproxy.sock" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
sys.stdout.write(data.decode())
PY
}

# HAProxy's view: one line per member, `fe1 UP` (from its stats socket).
haproxy_status() {
  [ -S "$RUN/haproxy.sock" ] || return 0
  python3 - "$RUN/haproxy.sock" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"show stat\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
for line in data.decode().splitlines():
    f = line.split(",")
    if len(f) > 17 and f[0] == "sipfront_tcp" and f[1] not in ("FRONTEND", "BACKEND"):
        print(f[1], f[17])
PY
}

cmd=${1:-}
case "$cmd" in
up)
  n=${2:-3}
  check_i "$n"
  [ "$(id -u)" = 0 ] || die "run as root (network namespaces)"
  command -v haproxy >/dev/null || die "HAProxy is not installed (apt-get install haproxy)"
  mkdir -p "$RUN"
  echo "$n" >"$RUN/n"
  net_up "$n"
  pg_up
  for i in $(seq 1 "$n"); do member_start "$i"; done
  haproxy_up "$n"
  echo "pool of $n up; PostgreSQL $(pg_url); '$0 status' to watch it, '$0 down' to end it"
  ;;
add)
  n=$(( $(cat "$RUN/n") + 1 ))
  check_i "$n"
  net_up "$n"
  member_start "$n"
  echo "$n" >"$RUN/n"
  for b in sipfront_tcp sipfront_tls; do
    haproxy_cmd "enable server $b/fe$n" >/dev/null
    haproxy_cmd "enable health $b/fe$n" >/dev/null
  done
  echo "member $n added"
  ;;
start) check_i "${2:-}"; member_start "$2" ;;
stop)
  check_i "${2:-}"
  if [ "${3:-}" = -9 ]; then stop_group "$RUN/member$2.pid" KILL; echo "member $2 killed"
  else stop_group "$RUN/member$2.pid" TERM 30; echo "member $2 stopped"; fi
  ;;
status)
  SIPFRONT_DATABASE_URL=$(pg_url) "$(binary)" --data-dir "$RUN/admin" pool status
  haproxy_status
  ;;
haproxy-status) haproxy_status ;;
down)
  stop_group "$RUN/haproxy.pid" TERM 5
  for f in "$RUN"/member*.pid; do [ -e "$f" ] && stop_group "$f" TERM 15; done
  if [ -d "$RUN/pg" ]; then PGTEST_DIR="$RUN/pg" PGTEST_PORT=$PG_PORT "$OPS/postgres.sh" stop; fi
  rm -f "$RUN/pg.url"
  for ns in $(cat "$RUN/namespaces" 2>/dev/null); do
    ip netns list | grep -w "^$ns" >/dev/null || continue
    left=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
    [ -z "${left// /}" ] || kill -KILL $left 2>/dev/null || true
    ip netns del "$ns"
  done
  for l in $(tac "$RUN/links" 2>/dev/null); do ip link show "$l" >/dev/null 2>&1 && ip link del "$l"; done
  rm -f "$RUN/namespaces" "$RUN/links" "$RUN/n" "$RUN/haproxy.sock"
  echo "pool down"
  ;;
*) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
