#!/usr/bin/env bash
# Installs schemathesis (the OpenAPI fuzzer reader/tests/schema.rs runs over the reader's
# /openapi.json) into a virtualenv, pinned, from PyPI. Idempotent: does nothing when the
# pinned version is already there. Prints the path of the schemathesis executable.
# Called by scripts/test.sh, and by the test itself when the executable is missing.
# Override the location with SCHEMATHESIS_VENV.
set -euo pipefail
cd "$(dirname "$0")/.."

version="4.32.5"
venv="${SCHEMATHESIS_VENV:-$PWD/target/schemathesis-venv}"
exe="$venv/bin/schemathesis"

if [ -x "$exe" ] && "$venv/bin/python" -m pip show schemathesis 2>/dev/null | grep -qx "Version: $version"; then
  echo "$exe"
  exit 0
fi
python="$(command -v python3 || true)"
if [ -z "$python" ]; then
  echo "install-schemathesis: python3 is missing (install python3 and python3-venv)" >&2
  exit 1
fi
mkdir -p "$(dirname "$venv")"
# A half-made venv from an interrupted run is replaced, not patched; anything else in
# the way is left alone.
if [ -e "$venv/pyvenv.cfg" ]; then
  rm -rf "$venv"
elif [ -e "$venv" ]; then
  echo "install-schemathesis: $venv exists and is not a virtualenv" >&2
  exit 1
fi
"$python" -m venv "$venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$version" >&2
echo "$exe"
