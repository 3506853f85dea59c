#!/bin/sh
# Entrypoint of egenmon-db:local (deploy/db.Dockerfile), with the official PostgreSQL
# images' contract for what docker-compose.yml uses: POSTGRES_USER (a superuser),
# POSTGRES_PASSWORD (required on the first start), POSTGRES_DB, PGDATA.
#
# First start with an empty PGDATA: initdb (password auth over TCP, trust only on the
# container's own socket), timescaledb preloaded, the database created with the
# extension, all on a socket-only server, so that a TCP `pg_isready` never sees a
# half-initialised database. Every start: exec postgres as the postgres user.
set -eu

PGDATA=${PGDATA:-/var/lib/postgresql/data}
export PGDATA
say() { echo "egenmon-db: $*" >&2; }

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 0700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups sh "$0" "$@"
fi

if [ "${1:-postgres}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        say "the database is not initialised and POSTGRES_PASSWORD is not set"
        exit 1
    fi
    user=${POSTGRES_USER:-postgres}
    db=${POSTGRES_DB:-$user}
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb --username="$user" --pwfile="$pwfile" --auth-local=trust \
        --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    cat >>"$PGDATA/postgresql.conf" <<CONF
listen_addresses = '*'
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
CONF
    # No TCP, and a socket in a private folder: nothing outside sees this server.
    sock=$(mktemp -d)
    pg_ctl -D "$PGDATA" -w start \
        -o "-c listen_addresses='' -c unix_socket_directories='$sock'" >/dev/null
    if [ "$db" != postgres ]; then
        psql -h "$sock" -v ON_ERROR_STOP=1 -q -U "$user" -d postgres \
            -c "CREATE DATABASE \"$db\"" >/dev/null
    fi
    psql -h "$sock" -v ON_ERROR_STOP=1 -q -U "$user" -d "$db" \
        -c "CREATE EXTENSION IF NOT EXISTS timescaledb" >/dev/null
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    rmdir "$sock"
    say "initialised $PGDATA (database $db, owner $user, timescaledb)"
fi

exec "$@"
