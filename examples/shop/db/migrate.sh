#!/bin/sh
# Applies /usr/local/share/shop-db/migrations/*.sql, in name order, each once, to the server
# named by the usual libpq variables (PGHOST, PGUSER, PGPASSWORD, PGDATABASE; the POSTGRES_*
# variables of the db service are accepted too). Applied files are recorded in the table
# schema_migrations; the files are also written so that running them twice is harmless.
set -eu
export PGHOST="${PGHOST:-db}"
export PGUSER="${PGUSER:-${POSTGRES_USER:-postgres}}"
export PGPASSWORD="${PGPASSWORD:-${POSTGRES_PASSWORD:-}}"
export PGDATABASE="${PGDATABASE:-${POSTGRES_DB:-$PGUSER}}"
export PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-5}"
dir="${MIGRATIONS_DIR:-/usr/local/share/shop-db/migrations}"

# The orchestrator starts this job once the db is healthy; wait (up to 60 s) anyway.
tries=0
until pg_isready -q; do
  tries=$((tries + 1))
  if [ "$tries" -ge 600 ]; then echo "migrate: $PGHOST:5432 is not accepting connections" >&2; exit 1; fi
  sleep 0.1
done

for file in "$dir"/*.sql; do
  case "$(basename "$file")" in
    *"'"* | *'\'*) echo "migrate: unsupported file name: $file" >&2; exit 1 ;;
  esac
done

# One psql session runs everything: each pending file in its own transaction, recorded in
# that transaction (so the files hold no BEGIN/COMMIT of their own). An advisory lock keeps
# two concurrent runs from interleaving.
{
  printf '%s\n' "SET client_min_messages = warning;"
  printf '%s\n' "SELECT pg_advisory_lock(4242);"
  printf '%s\n' "CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());"
  for file in "$dir"/*.sql; do
    [ -e "$file" ] || continue
    version="$(basename "$file")"
    printf '%s\n' "SELECT NOT EXISTS (SELECT 1 FROM schema_migrations WHERE version = '$version') AS pending \\gset"
    printf '%s\n' "\\if :pending"
    printf '%s\n' "  \\echo 'migrate: applying $version'"
    printf '%s\n' "  BEGIN;"
    printf '%s\n' "  \\i '$file'"
    printf '%s\n' "  INSERT INTO schema_migrations (version) VALUES ('$version');"
    printf '%s\n' "  COMMIT;"
    printf '%s\n' "\\else"
    printf '%s\n' "  \\echo 'migrate: $version already applied'"
    printf '%s\n' "\\endif"
  done
  printf '%s\n' "SELECT pg_advisory_unlock(4242);"
} | psql -X -q -t -v ON_ERROR_STOP=1 -o /dev/null
echo "migrate: done"
