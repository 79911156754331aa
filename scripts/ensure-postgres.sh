#!/usr/bin/env bash
# Makes sure a PostgreSQL cluster dedicated to Mayfly's tests answers on 127.0.0.1:55432, with role
# `mayfly` (password `mayfly`) owning database `mayfly_test`, and prints its URL as the last line
# on stdout (progress goes to stderr). Installs Debian's `postgresql` when missing, creates the
# cluster `mayflytest` with pg_createcluster once, and starts it, clearing a stale pid file that a
# killed server left behind. Idempotent; a run when everything is already up only opens one
# connection. Must run as root (it uses apt-get and the postgres system user).
set -euo pipefail

PORT=55432
CLUSTER=mayflytest
ROLE=mayfly
PASSWORD=mayfly
DATABASE=mayfly_test
URL="postgres://${ROLE}:${PASSWORD}@127.0.0.1:${PORT}/${DATABASE}"
SOCKET_DIR=/var/run/postgresql

log() { echo "[mayfly] $*" >&2; }

can_connect() {
  command -v psql >/dev/null 2>&1 && PGCONNECT_TIMEOUT=3 psql "$URL" -XtAqc 'select 1' >/dev/null 2>&1
}

if can_connect; then
  echo "$URL"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  log "PostgreSQL is not answering on 127.0.0.1:${PORT} and setting it up needs root"
  exit 1
fi

if ! command -v pg_createcluster >/dev/null 2>&1 || ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
  log "installing PostgreSQL (postgresql)…"
  # Only our cluster is wanted: keep the package from creating (and starting) the default `main`
  # cluster on 5432. The drop-in is removed again after the install.
  mkdir -p /etc/postgresql-common/createcluster.d
  dropin=/etc/postgresql-common/createcluster.d/mayfly-no-main.conf
  echo 'create_main_cluster = false' >"$dropin"
  cleanup_dropin() {
    rm -f "$dropin"
    rmdir --ignore-fail-on-non-empty /etc/postgresql-common/createcluster.d
  }
  trap cleanup_dropin EXIT
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  cleanup_dropin
  trap - EXIT
fi

# Columns of `pg_lsclusters -h`: version cluster port status owner data-directory log-file.
cluster_line() { pg_lsclusters -h 2>/dev/null | awk -v c="$CLUSTER" '$2 == c' | head -1; }

line="$(cluster_line)"
if [ -n "$line" ]; then
  version="$(awk '{print $1}' <<<"$line")"
  datadir="$(awk '{print $6}' <<<"$line")"
  # A pg_createcluster that was interrupted leaves a config without a usable data directory.
  if [ ! -f "$datadir/PG_VERSION" ]; then
    log "removing the incomplete cluster ${version}/${CLUSTER}…"
    pg_dropcluster --stop "$version" "$CLUSTER" >&2 || rm -rf "/etc/postgresql/${version}/${CLUSTER}" "$datadir"
    line=""
  fi
fi

if [ -z "$line" ]; then
  version="$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/postgres' | awk -F/ '{print $5}' | sort -V | tail -1)"
  if [ -z "$version" ]; then
    log "no PostgreSQL server binaries found under /usr/lib/postgresql"
    exit 1
  fi
  log "creating PostgreSQL ${version} cluster ${CLUSTER} on 127.0.0.1:${PORT}…"
  # An explicit locale: a bare container has no LANG, which would give a SQL_ASCII cluster.
  if ! out="$(pg_createcluster "$version" "$CLUSTER" -p "$PORT" --locale C.UTF-8 --encoding UTF8 2>&1)"; then
    echo "$out" >&2
    exit 1
  fi
  # Throw-away test data: loopback only, no TLS, durability off for speed. (conf.d rather than
  # pg_createcluster -o, whose quoting of string values differs between versions.)
  cat >"/etc/postgresql/${version}/${CLUSTER}/conf.d/mayfly.conf" <<'CONF'
listen_addresses = '127.0.0.1'
ssl = off
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
CONF
  line="$(cluster_line)"
fi

version="$(awk '{print $1}' <<<"$line")"
status="$(awk '{print $4}' <<<"$line")"
datadir="$(awk '{print $6}' <<<"$line")"

# True when the pid names a running (not zombie) postgres process.
live_postgres() {
  local pid="$1" stat
  [ -n "$pid" ] && stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
  # /proc/PID/stat is "pid (comm) state …"
  [[ "$stat" == *"(postgres) "[!Z]* ]]
}

# After a kill -9, postmaster.pid and the socket's lock file stay behind; postgres refuses to start
# while the pid they name looks alive (a zombie not yet reaped, or a reused pid), so remove them
# unless they name a running postgres.
remove_if_stale() {
  local file="$1"
  if [ -f "$file" ] && ! live_postgres "$(head -1 "$file" 2>/dev/null)"; then
    log "removing stale ${file}"
    rm -f "$file"
  fi
}

if [ "$status" != online ]; then
  remove_if_stale "$datadir/postmaster.pid"
  remove_if_stale "$SOCKET_DIR/.s.PGSQL.${PORT}.lock"
  # /run is a tmpfs: after a reboot (or in a fresh container) the socket directory is gone.
  install -d -o postgres -g postgres -m 2775 "$SOCKET_DIR"
  log "starting PostgreSQL cluster ${version}/${CLUSTER}…"
  # On failure pg_ctlcluster prints the server's log itself.
  pg_ctlcluster "$version" "$CLUSTER" start >&2
fi

# pg_ctlcluster waits for startup; this covers a server that another run is still starting.
for _ in $(seq 1 60); do
  if pg_isready -q -h "$SOCKET_DIR" -p "$PORT"; then break; fi
  sleep 0.5
done
if ! pg_isready -q -h "$SOCKET_DIR" -p "$PORT"; then
  log "PostgreSQL cluster ${version}/${CLUSTER} did not come up; last lines of its log:"
  tail -20 "/var/log/postgresql/postgresql-${version}-${CLUSTER}.log" >&2 || true
  exit 1
fi

# Role and database, created or repaired (password, owner) as the postgres superuser.
(
  cd /
  runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -h "$SOCKET_DIR" -p "$PORT" -d postgres >/dev/null <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${ROLE}') THEN
    CREATE ROLE ${ROLE} LOGIN PASSWORD '${PASSWORD}';
  ELSE
    ALTER ROLE ${ROLE} LOGIN PASSWORD '${PASSWORD}';
  END IF;
END
\$\$;
SELECT 'CREATE DATABASE ${DATABASE} OWNER ${ROLE}'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '${DATABASE}')\gexec
ALTER DATABASE ${DATABASE} OWNER TO ${ROLE};
SQL
)

if ! can_connect; then
  log "PostgreSQL is up but ${ROLE}@127.0.0.1:${PORT}/${DATABASE} cannot connect"
  exit 1
fi
echo "$URL"
