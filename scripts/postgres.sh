#!/usr/bin/env bash
# Start or stop a private PostgreSQL cluster on 127.0.0.1 for tests and benchmarks.
#   scripts/postgres.sh start   -> prints the SQLAlchemy URL on stdout
#   scripts/postgres.sh stop
# Uses Debian's server binaries (apt-get install -y postgresql). State lives in $PGHOME
# (default .cache/postgres); as root the server runs as the 'postgres' user.
set -euo pipefail
cmd=${1:-start}
here=$(cd "$(dirname "$0")/.." && pwd)
PGHOME=${PGHOME:-/tmp/ordertrail-pg-${PGPORT:-55432}}
PGPORT=${PGPORT:-55432}
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [[ -z "$bindir" || ! -x "$bindir/initdb" ]]; then
  echo "postgres.sh: PostgreSQL server binaries not found (apt-get install -y postgresql)" >&2
  exit 1
fi
as_pg() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}
url="postgresql+psycopg://postgres@127.0.0.1:${PGPORT}/postgres"
case "$cmd" in
  start)
    mkdir -p "$PGHOME"
    if [[ $(id -u) -eq 0 ]]; then chown postgres:postgres "$PGHOME"; chmod 700 "$PGHOME"; fi
    if [[ ! -f "$PGHOME/data/PG_VERSION" ]]; then
      as_pg "$bindir/initdb" -D "$PGHOME/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$PGHOME/initdb.log" 2>&1 \
        || { cat "$PGHOME/initdb.log" >&2; exit 1; }
    fi
    if ! as_pg "$bindir/pg_ctl" -D "$PGHOME/data" status >/dev/null 2>&1; then
      as_pg "$bindir/pg_ctl" -D "$PGHOME/data" -l "$PGHOME/server.log" -w -t 60 \
        -o "-p $PGPORT -k $PGHOME -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >/dev/null || { cat "$PGHOME/server.log" >&2; exit 1; }
    fi
    echo "$url"
    ;;
  stop)
    if [[ -f "$PGHOME/data/PG_VERSION" ]]; then
      as_pg "$bindir/pg_ctl" -D "$PGHOME/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    ;;
  url) echo "$url" ;;
  *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac
