#!/bin/bash
# Entrypoint of the streaming replica: clone the primary when the data directory
# is empty, then start postgres through the image's own entrypoint (which skips
# initdb because PG_VERSION exists).
set -euo pipefail

PGDATA="${PGDATA:-/var/lib/postgresql/data}"
PRIMARY_HOST="${PRIMARY_HOST:-primary}"
PRIMARY_PORT="${PRIMARY_PORT:-5432}"
: "${REPLICATION_PASSWORD:?set REPLICATION_PASSWORD}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "replica: cloning $PRIMARY_HOST:$PRIMARY_PORT into $PGDATA" >&2
    until pg_isready -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -q; do sleep 1; done
    mkdir -p "$PGDATA"
    if [ "$(id -u)" = 0 ]; then
        chown postgres:postgres "$PGDATA"
        run() { gosu postgres "$@"; }
    else
        run() { "$@"; }
    fi
    chmod 0700 "$PGDATA"
    # -R writes standby.signal and primary_conninfo; -X stream copies the WAL
    # generated during the backup. No replication slot: the primary keeps
    # wal_keep_size of WAL for a replica that falls behind (see advisor.conf).
    run env PGPASSWORD="$REPLICATION_PASSWORD" pg_basebackup \
        -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U replicator \
        -D "$PGDATA" -R -X stream --checkpoint=fast --progress
fi

exec docker-entrypoint.sh "$@"
