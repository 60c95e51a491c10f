#!/usr/bin/env bash
# A throwaway PostgreSQL (for the tests, and for a pool tried on one machine): its own cluster
# in $PGTEST_DIR, listening on a Unix socket there and on 127.0.0.1:$PGTEST_PORT, plus
# $PGTEST_LISTEN (more addresses, comma-separated) with trust for $PGTEST_NET (a CIDR).
# Prints the URL to use. fsync is off (tests) unless PGTEST_FSYNC=on (benchmarks).
#   ops/postgres.sh start   -> prints postgres://sipfront@127.0.0.1:PORT/sipfront
#   ops/postgres.sh stop
set -euo pipefail
DIR=${PGTEST_DIR:-/tmp/sipfront-pgtest}
PORT=${PGTEST_PORT:-55432}
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$BIN" ] || { echo "postgresql is not installed (apt-get install postgresql)" >&2; exit 1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case "${1:-}" in
start)
  if [ -f "$DIR/data/postmaster.pid" ] && as_pg "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
    echo "postgres://sipfront@127.0.0.1:$PORT/sipfront"; exit 0
  fi
  rm -rf "$DIR"; mkdir -p "$DIR"
  [ "$(id -u)" = 0 ] && chown postgres "$DIR"
  as_pg "$BIN/initdb" -D "$DIR/data" -U postgres -A trust >"$DIR/initdb.log" 2>&1
  if [ -n "${PGTEST_NET:-}" ]; then
    echo "host all all $PGTEST_NET trust" | as_pg tee -a "$DIR/data/pg_hba.conf" >/dev/null
  fi
  as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 30 \
    -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1${PGTEST_LISTEN:+,$PGTEST_LISTEN} -c fsync=${PGTEST_FSYNC:-off} -c max_connections=200" start >/dev/null
  as_pg "$BIN/psql" -h "$DIR" -p "$PORT" -U postgres -qc "CREATE ROLE sipfront LOGIN SUPERUSER" >/dev/null
  as_pg "$BIN/psql" -h "$DIR" -p "$PORT" -U postgres -qc "CREATE DATABASE sipfront OWNER sipfront" >/dev/null
  echo "postgres://sipfront@127.0.0.1:$PORT/sipfront"
  ;;
stop)
  [ -d "$DIR/data" ] && as_pg "$BIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$DIR"
  ;;
*) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
