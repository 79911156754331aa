#!/bin/sh
# Entrypoint of the shop database image.
#   postgres [ARGS]  run the server in the foreground as user postgres; on the first start
#                    (empty data directory) copy the cluster made at build time into it, make
#                    the superuser POSTGRES_USER with POSTGRES_PASSWORD, and rename the
#                    "postgres" database to POSTGRES_DB (default: the user name).
#   migrate          apply the SQL migrations to the server at $PGHOST (see migrate.sh).
#   anything else    run it.
set -eu

case "${1:-}" in
  postgres) ;;
  migrate) shift; exec /bin/sh /usr/local/lib/shop-db/migrate.sh "$@" ;;
  *) exec "$@" ;;
esac

if [ "$(id -u)" = 0 ]; then
  # A fresh volume or a bind mount may be owned by root.
  mkdir -p "$PGDATA" /var/run/postgresql
  chown postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 0700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups /bin/sh "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
  user="${POSTGRES_USER:-postgres}"
  db="${POSTGRES_DB:-$user}"
  # A half-made data directory is cleared, so the next start tries again.
  trap 'echo "db: first-start setup failed, clearing $PGDATA" >&2
        rm -f /tmp/setup.sql; find "$PGDATA" -mindepth 1 -delete' EXIT

  cp -a /usr/local/share/shop-db/cluster/. "$PGDATA/"

  ident() { printf '"%s"' "$(printf '%s' "$1" | sed 's/"/""/g')"; }
  literal() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/''/g")"; }
  {
    if [ "$user" = postgres ]; then
      printf 'ALTER ROLE postgres PASSWORD %s;\n\n' "$(literal "$POSTGRES_PASSWORD")"
    else
      printf 'CREATE ROLE %s SUPERUSER LOGIN PASSWORD %s;\n\n' "$(ident "$user")" "$(literal "$POSTGRES_PASSWORD")"
    fi
    # The cluster's "postgres" database becomes $POSTGRES_DB: renaming is instant, where
    # CREATE DATABASE would copy another few hundred files.
    if [ "$db" != postgres ]; then
      printf 'ALTER DATABASE postgres RENAME TO %s;\n\n' "$(ident "$db")"
      printf 'ALTER DATABASE %s OWNER TO %s;\n\n' "$(ident "$db")" "$(ident "$user")"
    fi
  } > /tmp/setup.sql
  # Single-user mode: no listener, so nothing (pg_isready included) sees a half-set-up server.
  if ! postgres --single -j -D "$PGDATA" template1 < /tmp/setup.sql > /tmp/setup.log 2>&1 \
     || grep -qE '(ERROR|FATAL|PANIC):' /tmp/setup.log; then
    cat /tmp/setup.log >&2
    exit 1
  fi
  rm -f /tmp/setup.sql /tmp/setup.log
  trap - EXIT
  echo "db: new cluster in $PGDATA, role \"$user\", database \"$db\"" >&2
fi

exec "$@"
