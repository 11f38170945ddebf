#!/usr/bin/env bash
# Fuzzes the extraction entry point with libFuzzer for a bounded time (default 60 s),
# seeded with the recorded ledgers. Needs `cargo install cargo-fuzz`; the toolchain here
# is stable, so nightly-only flags are enabled with RUSTC_BOOTSTRAP.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
fixtures="${STELLAR_FIXTURES:-$(pwd)/testdata}"
corpus=fuzz/corpus/extract_ledger
mkdir -p "$corpus"
if [ -z "$(ls -A "$corpus")" ]; then
  # Seed with the real ledgers as raw XDR.
  for f in "$fixtures"/ledgers/pubnet/*.xdr.gz; do
    gunzip -c "$f" > "$corpus/$(basename "$f" .gz)"
  done
fi
RUSTC_BOOTSTRAP=1 cargo fuzz run extract_ledger "$corpus" -- -max_total_time="$seconds" -rss_limit_mb=4096
