#!/usr/bin/env bash
# Blue/green on Kubernetes, for the objects of deploy/k8s (platform + overlays).
#
#   deploy/k8s/switch.sh <blue|green>          move reader traffic to that colour
#   deploy/k8s/switch.sh writer <blue|green>   hand ingestion over to that colour's writer
#
# Readers: scale the target colour up to its HPA minimum if it has fewer, wait until its
# Deployment has rolled out and every pod is ready, patch the live Service `reader`'s
# selector to the colour, wait until the Service's endpoints are that colour's pods
# only, wait DRAIN_SECONDS for the ingress controller to stop sending to the old pods,
# then scale the old colour to zero (its pods fail readiness on SIGTERM, drain, finish
# in-flight requests and end their event streams). Rolling back is the same command with
# the old colour. Scaling a Deployment to zero also pauses its HPA; scaling up resumes it.
#
# Writer: scale the target colour's writer to one, wait until /health says "standby" (or
# "active" when no other writer holds the lock), note the active writer's last ledger,
# scale the old colour's writer to zero (SIGTERM releases the advisory lock at once),
# wait until the new one reports "active" and has committed past that ledger, then run
# `writer gaps` over the handover window: it must report no gap.
#
# Environment: NAMESPACE (default: kubectl's current), DRAIN_SECONDS (30),
# TIMEOUT_SECONDS (300) for each wait.
set -euo pipefail

usage() { echo "usage: $0 <blue|green> | $0 writer <blue|green>" >&2; exit 2; }
ns=()
[ -n "${NAMESPACE:-}" ] && ns=(-n "$NAMESPACE")
drain="${DRAIN_SECONDS:-30}"
timeout="${TIMEOUT_SECONDS:-300}"
k() { kubectl "${ns[@]}" "$@"; }
say() { echo "switch: $*"; }
die() { echo "switch: $*" >&2; exit 1; }
other() { [ "$1" = blue ] && echo green || echo blue; }
valid_colour() { [ "$1" = blue ] || [ "$1" = green ] || usage; }

# Waits until the command succeeds, up to TIMEOUT_SECONDS.
wait_for() {
  local what="$1"; shift
  local deadline=$((SECONDS + timeout))
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || die "timed out waiting for $what"
    sleep 2
  done
}

# The writer's /health JSON, asked inside its pod (the image has curl).
writer_health() { k exec "deploy/writer-$1" -c writer -- curl -sS "http://127.0.0.1:9100/health"; }
json_field() { sed -n "s/.*\"$1\":\"\{0,1\}\([a-z_0-9]*\)\"\{0,1\}[,}].*/\1/p"; }
writer_role() { writer_health "$1" 2>/dev/null | json_field role; }
writer_last_ledger() { writer_health "$1" 2>/dev/null | json_field last_ledger | grep -E "^[0-9]+$" || true; }

switch_readers() {
  local to="$1" from; from="$(other "$1")"
  # Take traffic with at least the HPA's minimum: a colour at zero (scaled down by an
  # earlier switch) or just created (one pod until the HPA acts) is scaled up first.
  local replicas min
  replicas="$(k get "deploy/reader-$to" -o jsonpath='{.spec.replicas}')"
  min="$(k get "hpa/reader-$to" -o jsonpath='{.spec.minReplicas}' 2>/dev/null || true)"
  if [ "${replicas:-0}" -lt "${min:=2}" ]; then
    say "scaling reader-$to up to $min"
    k scale "deploy/reader-$to" --replicas="$min"
  fi
  say "waiting for reader-$to to roll out and be ready"
  k rollout status "deploy/reader-$to" --timeout="${timeout}s"
  all_ready() {
    local want ready
    want="$(k get "deploy/reader-$to" -o jsonpath='{.spec.replicas}')"
    ready="$(k get "deploy/reader-$to" -o jsonpath='{.status.readyReplicas}')"
    [ "${ready:-0}" -ge "$want" ] && [ "$want" -gt 0 ]
  }
  wait_for "every reader-$to pod to be ready" all_ready

  local live; live="$(k get svc/reader -o jsonpath='{.spec.selector.colour}')"
  if [ "$live" = "$to" ]; then
    say "reader traffic already goes to $to"
  else
    say "moving reader traffic from ${live:-?} to $to"
    k patch svc/reader --type merge -p "{\"spec\":{\"selector\":{\"app\":\"reader\",\"colour\":\"$to\"}}}"
  fi
  only_target() {
    local pods; pods="$(k get endpointslices -l kubernetes.io/service-name=reader \
      -o jsonpath='{range .items[*].endpoints[*]}{.targetRef.name}{"\n"}{end}')"
    [ -n "$pods" ] && ! grep -qv "^reader-$to-" <<<"$pods"
  }
  wait_for "the live Service's endpoints to be reader-$to pods only" only_target
  if [ "$(k get "deploy/reader-$from" -o jsonpath='{.spec.replicas}' 2>/dev/null || echo 0)" -gt 0 ]; then
    say "draining reader-$from for ${drain}s"
    sleep "$drain"
    say "scaling reader-$from down"
    k scale "deploy/reader-$from" --replicas=0
  fi
  say "readers: $to is live"
}

switch_writer() {
  local to="$1" from; from="$(other "$1")"
  say "starting writer-$to"
  k scale "deploy/writer-$to" --replicas=1
  k rollout status "deploy/writer-$to" --timeout="${timeout}s"
  local role
  has_role() { role="$(writer_role "$to")"; [ "$role" = standby ] || [ "$role" = active ]; }
  wait_for "writer-$to to report standby or active" has_role
  say "writer-$to is $role"

  local mark=""
  if [ "$(k get "deploy/writer-$from" -o jsonpath='{.spec.replicas}' 2>/dev/null || echo 0)" -gt 0 ]; then
    [ "$(writer_role "$from")" = active ] && mark="$(writer_last_ledger "$from")"
    say "stopping writer-$from${mark:+ (last ledger $mark)}"
    k scale "deploy/writer-$from" --replicas=0
    # Its pods are gone once Kubernetes lists none (kubectl wait errs on an empty match).
    old_gone() { [ -z "$(k get pods -l "app=writer,colour=$from" -o name)" ]; }
    wait_for "writer-$from's pod to exit" old_gone
  fi
  is_active() { [ "$(writer_role "$to")" = active ]; }
  wait_for "writer-$to to become active" is_active
  if [ -n "$mark" ]; then
    past_mark() { local l; l="$(writer_last_ledger "$to")"; [ -n "$l" ] && [ "$l" -gt "$mark" ]; }
    wait_for "writer-$to to commit past ledger $mark" past_mark
    local now gaps; now="$(writer_last_ledger "$to")"
    gaps="$(k exec "deploy/writer-$to" -c writer -- writer gaps --from "$mark" --to "$now")"
    echo "$gaps"
    grep -q '^no gaps' <<<"$gaps" || die "ledgers are missing between $mark and $now"
  fi
  say "writer: $to is active"
}

case "${1:-}" in
  writer) [ $# -eq 2 ] || usage; valid_colour "$2"; switch_writer "$2" ;;
  blue|green) [ $# -eq 1 ] || usage; switch_readers "$1" ;;
  *) usage ;;
esac
