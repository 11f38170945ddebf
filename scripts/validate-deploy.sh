#!/usr/bin/env bash
# Validates the deployment files without a Docker engine or a Kubernetes cluster:
#   - docker-compose.yml against the Compose specification's schema (check-jsonschema's
#     vendored copy), and the compose edge's nginx config (with the shared edge files
#     and the live colour its script writes) with `nginx -t`;
#   - every kustomization under deploy/k8s (the platform and each colour's overlay) built
#     with `kubectl kustomize`, each built object validated against the Kubernetes
#     schemas (kubernetes-validate, strict), custom resources against their CRD schemas
#     where a package registry ships them (else printed as "unvalidated: <kind>"), and
#     this project's own rules (scripts/validate-k8s.py);
#   - the copies of the reader policies in deploy/k8s/base match deploy/;
#   - the Redis start scripts and deploy/k8s/switch.sh parse, and the Redis scripts fail
#     over for real (scripts/check-redis-failover.sh: real redis-server processes on
#     loopback addresses; needs root for its namespaces, else printed as unvalidated).
# Installs what it needs when missing: kubectl (Debian package `kubectl`, else
# `kubernetes-client`), Python's venv, and into a cache directory check-jsonschema and
# kubernetes-validate (PyPI) and @kubernetes-models/prometheus-operator (npm). Exits
# non-zero on any failure. Called by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VERSION="${KUBERNETES_VERSION:-1.34.0}"
cache="${DEPLOY_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stellar-payments/deploy-tools}"
pip_packages=(check-jsonschema==0.39.0 kubernetes-validate==1.37.0)
npm_packages=(@kubernetes-models/prometheus-operator@6.0.0)

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
apt_updated=""
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "$apt_updated" ]; then "${sudo[@]}" apt-get update -q; apt_updated=1; fi
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "$@"
}
has_candidate() {
  [ -z "$apt_updated" ] && { "${sudo[@]}" apt-get update -q; apt_updated=1; }
  apt-cache policy "$1" | grep -q 'Candidate: [^(]'
}

# --- tools --------------------------------------------------------------------------
if ! command -v kubectl >/dev/null; then
  if has_candidate kubectl; then apt_install kubectl; else apt_install kubernetes-client; fi
fi
minor="$(kubectl version --client -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["minor"].rstrip("+"))')"
if [ "$minor" -lt 22 ]; then
  echo "validate-deploy: kubectl 1.$minor embeds a kustomize too old for these files (needs 1.22+)" >&2
  exit 1
fi
if [ ! -x "$cache/venv/bin/kubernetes-validate" ] || [ ! -x "$cache/venv/bin/check-jsonschema" ]; then
  python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' 2>/dev/null || apt_install python3-venv
  mkdir -p "$cache"
  rm -rf "$cache/venv"
  python3 -m venv "$cache/venv"
  "$cache/venv/bin/pip" install -q "${pip_packages[@]}"
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then apt_install nodejs npm; fi
if [ ! -f "$cache/npm/node_modules/@kubernetes-models/prometheus-operator/package.json" ]; then
  mkdir -p "$cache/npm"
  [ -f "$cache/npm/package.json" ] || echo '{"private": true}' > "$cache/npm/package.json"
  (cd "$cache/npm" && npm install --no-audit --no-fund --silent "${npm_packages[@]}")
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=0
fail() { echo "validate-deploy: FAILED: $*" >&2; failed=1; }

# --- docker compose -----------------------------------------------------------------
if "$cache/venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml; then
  :
else
  fail "docker-compose.yml does not follow the Compose specification"
fi
# The compose edge's nginx config, loaded by `nginx -t` the way the nginx image loads
# it: the shared edge files mounted beside it, the live colour written by the image's
# entrypoint step (compose-live-colour.sh), and the compose service names (resolved by
# Docker's DNS at run time) mapped to loopback.
if command -v nginx >/dev/null; then
  n="$work/nginx"
  mkdir -p "$n/live" "$n/cache" "$n/tmp" "$n/edge"
  cp deploy/nginx/edge-http.conf deploy/nginx/edge-locations.conf "$n/edge/"
  sed -e "s#/etc/nginx/live#$n/live#g" deploy/nginx/compose-live-colour.sh > "$n/live-colour.sh"
  LIVE_COLOUR=green READERS_PER_COLOUR=3 sh "$n/live-colour.sh"
  grep -q 'server reader-green-3:8000' "$n/live/live.conf" ||
    fail "compose-live-colour.sh did not write the green upstream"
  sh "$n/live-colour.sh" blue
  grep -q 'server reader-blue-1:8000' "$n/live/live.conf" ||
    fail "compose-live-colour.sh did not switch to blue"
  sed -i -E 's/server reader-(blue|green)-[0-9]+:/server 127.0.0.1:/' "$n/live/live.conf"
  sed -E -e "s#/etc/nginx/live#$n/live#g" -e "s#/etc/nginx/edge#$n/edge#g" \
    -e "s#/var/cache/nginx#$n/cache#g" \
    deploy/nginx/compose-edge.conf > "$n/edge.conf"
  cat > "$n/nginx.conf" <<CONF
pid $n/nginx.pid;
error_log stderr;
events {}
http {
  client_body_temp_path $n/tmp;
  proxy_temp_path $n/tmp;
  include $n/edge.conf;
}
CONF
  if nginx -t -q -c "$n/nginx.conf" -p "$n"; then
    echo "deploy/nginx/compose-edge.conf: nginx -t ok"
  else
    fail "deploy/nginx/compose-edge.conf does not load in nginx"
  fi
else
  echo "unvalidated: deploy/nginx/compose-edge.conf (nginx not installed)"
fi

# --- kubernetes ---------------------------------------------------------------------
for copy in cache-control.toml rate-limits.toml; do
  cmp -s "deploy/$copy" "deploy/k8s/base/$copy" ||
    fail "deploy/k8s/base/$copy differs from deploy/$copy (copy it over)"
done
built=()
for dir in deploy/k8s/platform deploy/k8s/overlays/*/; do
  dir="${dir%/}"
  out="$work/$(echo "$dir" | tr / _).yaml"
  if kubectl kustomize "$dir" > "$out"; then
    built+=("$out")
    echo "$dir: built $(grep -c '^kind:' "$out") objects"
  else
    fail "kubectl kustomize $dir"
  fi
done
if [ "${#built[@]}" -gt 0 ]; then
  "$cache/venv/bin/python" scripts/validate-k8s.py --kubernetes-version "$KUBERNETES_VERSION" \
    --custom-out "$work/custom.json" "${built[@]}" || fail "Kubernetes objects"
  node scripts/validate-crs.mjs "$cache/npm/node_modules" "$work/custom.json" ||
    fail "custom resources"
  # The Redis start scripts live in a ConfigMap: check they parse as shell.
  "$cache/venv/bin/python" - "$work" "$work"/deploy_k8s_platform.yaml <<'PY' || fail "Redis scripts"
import sys, yaml, subprocess
work, path = sys.argv[1], sys.argv[2]
n = 0
for d in yaml.safe_load_all(open(path)):
    if d and d["kind"] == "ConfigMap" and d["metadata"]["name"] == "redis-scripts":
        for name, text in d["data"].items():
            f = f"{work}/{name}"
            open(f, "w").write(text)
            subprocess.run(["sh", "-n", f], check=True)
            n += 1
if n == 0:
    sys.exit("no redis-scripts ConfigMap found")
print(f"redis scripts: {n} parse")
PY
fi
bash -n deploy/k8s/switch.sh || fail "deploy/k8s/switch.sh does not parse"
# Sentinel failover with the Redis start scripts and real redis-server processes.
if [ -f "$work/deploy_k8s_platform.yaml" ]; then
  if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null && command -v nsenter >/dev/null &&
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
    PYTHON="$cache/venv/bin/python" bash scripts/check-redis-failover.sh "$work/deploy_k8s_platform.yaml" ||
      fail "Redis Sentinel failover"
  else
    echo "unvalidated: Redis failover (needs root, unshare, nsenter, redis-server and redis-cli)"
  fi
fi

if [ "$failed" -ne 0 ]; then
  echo "validate-deploy: FAILED" >&2
  exit 1
fi
echo "validate-deploy: ok"
