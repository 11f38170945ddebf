#!/usr/bin/env bash
# Starts the whole system locally from processes: PostgreSQL primary + streaming replica,
# Redis, the Stellar RPC simulator replaying the recorded ledgers in testdata/ (or a real
# RPC when STELLAR_RPC_URL is set), a blue/green pair of writers and two readers.
# Postgres and Redis keep their data in a data directory (--data-dir, or
# STELLAR_PAYMENTS_DATA) and a restart resumes where the last run stopped; --fresh starts
# over. Ctrl-C stops everything. Other options: target/release/loadtest stack --help.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --locked -p writer -p reader -p loadtest
exec target/release/loadtest stack "$@"
