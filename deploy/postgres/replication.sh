#!/usr/bin/env bash
# Primary init: allow streaming replication from the replica container.
set -euo pipefail
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
