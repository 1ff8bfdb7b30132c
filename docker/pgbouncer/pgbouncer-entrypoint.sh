#!/bin/bash
# Writes PgBouncer's configuration and auth_file (mode 0600, passwords in plain text:
# PgBouncer then logs in to a SCRAM server with them) from the environment, then runs it.
set -euo pipefail

: "${PGBOUNCER_TARGET_HOST:?set PGBOUNCER_TARGET_HOST}"
: "${ADVISOR_DB_PASSWORD:?set ADVISOR_DB_PASSWORD}"
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
dir=${PGBOUNCER_RUN_DIR:-/etc/pgbouncer/run}
umask 077

quote() { printf '"%s"' "${1//\"/\"\"}"; }
{
    printf '%s %s\n' "$(quote advisor)" "$(quote "$ADVISOR_DB_PASSWORD")"
    printf '%s %s\n' "$(quote postgres)" "$(quote "$POSTGRES_PASSWORD")"
} > "$dir/userlist.txt"

cat > "$dir/pgbouncer.ini" <<INI
[databases]
* = host=${PGBOUNCER_TARGET_HOST} port=${PGBOUNCER_TARGET_PORT:-5432}

[pgbouncer]
listen_addr = 0.0.0.0
listen_port = ${PGBOUNCER_LISTEN_PORT:-6432}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $dir/userlist.txt
pool_mode = ${PGBOUNCER_POOL_MODE:-transaction}
default_pool_size = ${PGBOUNCER_POOL_SIZE:-20}
max_client_conn = ${PGBOUNCER_MAX_CLIENT_CONN:-500}
; libpq clients that send startup options (the advisor's direct sessions do) are accepted; the options are dropped
ignore_startup_parameters = extra_float_digits,options
admin_users = postgres
logfile =
pidfile =
INI

exec pgbouncer "$dir/pgbouncer.ini"
