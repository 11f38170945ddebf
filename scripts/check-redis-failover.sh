#!/usr/bin/env bash
# Runs the Kubernetes Redis start scripts (ConfigMap redis-scripts in a built
# deploy/k8s/platform) with real redis-server processes and checks Sentinel failover:
# three Redis "pods" and three Sentinel "pods", each with its own hostname (a UTS
# namespace) and its own loopback address, named through a private /etc/hosts (a mount
# namespace), as in-cluster DNS would name them. Checks that redis-0 starts as master and
# the others replicate it, that killing the master makes the Sentinels promote a replica
# with the data kept, and that a restarted redis-0 joins the new master as a replica
# (never a second master). Only two edits adapt the scripts to one host: each process
# binds its own loopback address and keeps its files in its own folder.
#
# Usage: check-redis-failover.sh PLATFORM.yaml   (needs root, unshare, redis-server)
# Bounded: every wait has a deadline; every process started is stopped on exit.
set -euo pipefail

platform="$1"
work="$(mktemp -d)"
ns_pid=""
cleanup() {
  for f in "$work"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  [ -n "$ns_pid" ] && kill "$ns_pid" 2>/dev/null || true
  sleep 0.5
  rm -rf "$work"
}
trap cleanup EXIT

"${PYTHON:-python3}" - "$platform" "$work" <<'PY'
import sys, yaml
platform, work = sys.argv[1], sys.argv[2]
for d in yaml.safe_load_all(open(platform)):
    if d and d["kind"] == "ConfigMap" and d["metadata"]["name"] == "redis-scripts":
        for name, text in d["data"].items():
            open(f"{work}/{name}", "w").write(text)
        break
else:
    sys.exit("no redis-scripts ConfigMap")
PY
sed -i 's/--replica-announce-ip "$self"/--replica-announce-ip "$self" --bind "$MYIP" --dir "$DATA"/' "$work/redis.sh"
sed -i 's#/data/sentinel.conf#$DATA/sentinel.conf#g; s/^port 26379$/port 26379\nbind $MYIP/' "$work/sentinel.sh"
grep -q -- '--bind "$MYIP"' "$work/redis.sh" && grep -q '^bind \$MYIP' "$work/sentinel.sh" ||
  { echo "redis failover: the scripts changed shape; update this check" >&2; exit 1; }

# Loopback addresses unlikely to be used by anything else on the machine.
base="127.0.$((200 + RANDOM % 50))"
ip_of() {
  case "$1" in redis-sentinel-*) echo "$base.2${1##*-}" ;; redis-*) echo "$base.1${1##*-}" ;; esac; }
cp /etc/hosts "$work/hosts"
for i in 0 1 2; do
  echo "$(ip_of redis-$i) redis-$i.redis-headless.test.svc.cluster.local" >> "$work/hosts"
  echo "$(ip_of redis-sentinel-$i) redis-sentinel-$i.redis-sentinel-headless.test.svc.cluster.local" >> "$work/hosts"
done

# A mount namespace holding the private /etc/hosts, kept alive by a sleeping shell.
unshare --mount --propagation private sh -c "mount --bind $work/hosts /etc/hosts && exec sleep 600" &
ns_pid=$!
sleep 0.3
pod() { # name script
  local name="$1" script="$2"
  rm -rf "$work/data/$name"; mkdir -p "$work/data/$name"
  nsenter --mount="/proc/$ns_pid/ns/mnt" unshare --uts sh -c \
    "hostname $name; export MYIP=$(ip_of "$name") DATA=$work/data/$name POD_NAMESPACE=test; cd \$DATA; exec sh $work/$script" \
    > "$work/$name.log" 2>&1 &
  echo $! > "$work/$name.pid"
}
cli() { redis-cli -h "$(ip_of "$1")" -p "$2" "${@:3}" 2>/dev/null | tr -d '\r'; }
role() { cli "$1" 6379 info replication | sed -n 's/^role://p'; }
master_of() { cli "$1" 6379 info replication | sed -n 's/^master_host:\([^.]*\).*/\1/p'; }
link_of() { cli "$1" 6379 info replication | sed -n 's/^master_link_status://p'; }
elected() { cli redis-sentinel-0 26379 sentinel get-master-addr-by-name payments | head -n 1 | cut -d. -f1; }
wait_for() { # seconds description command...
  local deadline=$((SECONDS + $1)) what="$2"; shift 2
  until "$@"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "redis failover: FAILED waiting for $what" >&2
      tail -n 5 "$work"/*.log >&2
      return 1
    fi
    sleep 0.5
  done
}

for i in 0 1 2; do pod "redis-$i" redis.sh; done
start_ok() { [ "$(role redis-0)" = master ] && [ "$(master_of redis-1)" = redis-0 ] &&
  [ "$(master_of redis-2)" = redis-0 ] && [ "$(link_of redis-1)" = up ] && [ "$(link_of redis-2)" = up ]; }
wait_for 15 "redis-0 master, redis-1 and -2 replicating it" start_ok
for i in 0 1 2; do pod "redis-sentinel-$i" sentinel.sh; done
sentinels_ok() { [ "$(elected)" = redis-0 ] &&
  cli redis-sentinel-0 26379 sentinel master payments | grep -A1 -x num-other-sentinels | tail -n 1 | grep -qx 2; }
wait_for 20 "three Sentinels agreeing on redis-0" sentinels_ok
echo "redis failover: redis-0 master, two replicas, three Sentinels"

cli redis-0 6379 set stellar-payments:rl:check kept > /dev/null
replicated() { [ "$(cli redis-1 6379 get stellar-payments:rl:check)" = kept ]; }
wait_for 5 "the write to reach the replicas" replicated
kill "$(cat "$work/redis-0.pid")"
promoted() { local m; m="$(elected)"; [ "$m" = redis-1 ] || [ "$m" = redis-2 ]; }
wait_for 30 "the Sentinels to promote a replica" promoted
new="$(elected)"
new_master_ok() { [ "$(role "$new")" = master ] && [ "$(cli "$new" 6379 get stellar-payments:rl:check)" = kept ]; }
wait_for 10 "$new to serve as master with the data" new_master_ok
echo "redis failover: redis-0 killed, $new promoted, data kept"

pod redis-0 redis.sh
rejoined() { [ "$(role redis-0)" = slave ] && [ "$(master_of redis-0)" = "$new" ] && [ "$(link_of redis-0)" = up ]; }
wait_for 20 "redis-0 to rejoin as a replica of $new" rejoined
echo "redis failover: redis-0 restarted as a replica of $new"
