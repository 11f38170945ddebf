#!/usr/bin/env bash
# Starts the whole system locally from processes: PostgreSQL primary + streaming replica,
# Redis, the Stellar RPC simulator replaying the recorded ledgers (or a real RPC when
# STELLAR_RPC_URL is set), and a blue/green pair of writers. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --locked -p writer -p reader -p loadtest
exec target/release/loadtest stack "$@"
