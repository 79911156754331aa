#!/bin/sh
# Runs PostgreSQL as user postgres. On the first start (no cluster in $PGDATA) makes one: the
# superuser "postgres" with $POSTGRES_PASSWORD (required), the database $POSTGRES_DB (default
# "mayfly"), password authentication (scram-sha-256) for every TCP connection.
set -eu
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 0700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups /bin/sh "$0" "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
  pwfile="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  initdb -D "$PGDATA" -U postgres -E UTF8 --locale=C.UTF-8 --auth-local=peer --auth-host=scram-sha-256 \
    --pwfile="$pwfile" >/dev/null
  rm -f "$pwfile"
  echo 'host all all all scram-sha-256' >> "$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
  db="${POSTGRES_DB:-mayfly}"
  printf 'CREATE DATABASE "%s";\n' "$(printf '%s' "$db" | sed 's/"/""/g')" \
    | postgres --single -j -D "$PGDATA" postgres >/dev/null
  echo "postgres: new cluster in $PGDATA, database \"$db\"" >&2
fi
exec postgres -D "$PGDATA" "$@"
