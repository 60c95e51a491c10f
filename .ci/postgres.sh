#!/usr/bin/env bash
# The tests' PostgreSQL: ops/postgres.sh, in its default place (see there).
exec "$(dirname "$0")/../ops/postgres.sh" "$@"
