#!/usr/bin/env bash
# Installs the servers the integration tests start through shared::testkit: the
# PostgreSQL 15 server (initdb, postgres, pg_ctl, pg_basebackup, pg_isready, psql),
# redis-server (with redis-cli) and nginx (the edge proxy in front of the readers). Idempotent: it installs only what is missing, runs
# `apt-get update` only then, and never starts, stops or reconfigures a running service.
# Called by scripts/test.sh and the dev-up script; safe to run by hand.
set -euo pipefail

pg_tools=(initdb postgres pg_ctl pg_basebackup pg_isready psql)

# A PostgreSQL bin directory holding every tool the test kit runs, if any.
postgres_bindir() {
  local dir tool
  for dir in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
    [ -d "$dir" ] || continue
    for tool in "${pg_tools[@]}"; do
      [ -x "$dir/$tool" ] || continue 2
    done
    echo "$dir"
    return 0
  done
  return 1
}

packages=()
if dir="$(postgres_bindir)"; then
  echo "install-deps: PostgreSQL server found in $dir"
else
  echo "install-deps: PostgreSQL server binaries (${pg_tools[*]}) missing: will install postgresql-15"
  packages+=(postgresql-15)
fi
if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
  echo "install-deps: redis-server found at $(command -v redis-server)"
else
  echo "install-deps: redis-server or redis-cli missing: will install redis-server"
  packages+=(redis-server)
fi
if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then
  echo "install-deps: nginx found"
else
  echo "install-deps: nginx missing: will install nginx"
  packages+=(nginx)
fi

if [ "${#packages[@]}" -eq 0 ]; then
  echo "install-deps: nothing to install"
  exit 0
fi

if ! command -v apt-get >/dev/null; then
  echo "install-deps: apt-get not found; install ${packages[*]} with this system's package manager" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then
    sudo=(sudo)
  else
    echo "install-deps: not root and no sudo; run as root: apt-get install -y ${packages[*]}" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-deps: apt-get update"
"${sudo[@]}" apt-get update -q
# postgresql-15 is Debian 12's; elsewhere take the distribution's default version.
if [[ " ${packages[*]} " == *" postgresql-15 "* ]] && ! apt-cache show postgresql-15 >/dev/null 2>&1; then
  echo "install-deps: postgresql-15 is not packaged here; installing postgresql instead"
  packages=("${packages[@]/postgresql-15/postgresql}")
fi
echo "install-deps: apt-get install -y --no-install-recommends ${packages[*]}"
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${packages[@]}"

if ! dir="$(postgres_bindir)" && [[ " ${packages[*]} " == *" postgresql"* ]]; then
  echo "install-deps: PostgreSQL was installed but ${pg_tools[*]} are still not in /usr/lib/postgresql/*/bin" >&2
  exit 1
fi
echo "install-deps: done"
