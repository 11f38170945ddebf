#!/usr/bin/env bash
# Replica start: clone the primary once with pg_basebackup (-R writes the standby
# settings), then run as a hot standby.
set -euo pipefail
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until pg_basebackup -h primary -U postgres -D "$PGDATA" -R -X stream; do sleep 2; done
  chown -R postgres:postgres "$PGDATA"
  chmod 700 "$PGDATA"
fi
exec gosu postgres postgres -c hot_standby=on
