#!/usr/bin/env bash
# Runs everything CI checks, in the order a failure is cheapest to find: formatting,
# lints, then the whole test suite against the recorded Stellar data in testdata/ (or
# the copy STELLAR_FIXTURES names).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d "${STELLAR_FIXTURES:-testdata}/ledgers" ]; then
  echo "recorded data not found in ${STELLAR_FIXTURES:-testdata}/: is this a full clone?" >&2
  exit 1
fi
if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install a Rust toolchain (https://rustup.rs)" >&2
  exit 1
fi

# The debug build and the test databases take about 6 GB; say so up front rather than
# let the linker fail half-way with "No space left on device".
free_kb="$(df -Pk . | awk 'NR == 2 { print $4 }')"
if [ "${free_kb:-0}" -lt $((8 * 1024 * 1024)) ]; then
  echo "warning: only $((free_kb / 1024)) MiB free here; the build and tests need about 6 GB" >&2
fi

# PostgreSQL and Redis for the integration tests (installed only if missing).
bash scripts/install-deps.sh
# schemathesis, which fuzzes the reader through its /openapi.json (reader/tests/schema.rs).
SCHEMATHESIS="$(bash scripts/install-schemathesis.sh)"
export SCHEMATHESIS

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The fuzz target lives outside the workspace; make sure it still builds.
cargo check --manifest-path fuzz/Cargo.toml --quiet
# docker-compose.yml and the Kubernetes manifests against their schemas (no engine needed).
bash scripts/validate-deploy.sh

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log" || status=$?
# cargo prints one result line per test binary, the last often a doc-test run of zero:
# close with the totals so the outcome is read from one line.
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
