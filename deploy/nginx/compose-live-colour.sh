#!/bin/sh
# The compose edge's live colour: writes /etc/nginx/live/live.conf, the `readers`
# upstream that deploy/nginx/edge-locations.conf proxies to, naming the compose services
# reader-<colour>-1 .. reader-<colour>-N (N = READERS_PER_COLOUR, default 2).
#   - Run by the nginx image's entrypoint (/docker-entrypoint.d) before nginx starts,
#     without an argument: writes LIVE_COLOUR (default blue) unless a switch already
#     chose a colour, which the edge-live volume keeps across restarts of the edge.
#   - Run by the operator with a colour (`... 40-live-colour.sh green`): rewrites the
#     file; then `nginx -t && nginx -s reload` moves traffic gracefully.
set -eu
live=/etc/nginx/live/live.conf
mkdir -p "$(dirname "$live")"
if [ "$#" -eq 0 ] && [ -s "$live" ]; then
  exit 0
fi
colour="${1:-${LIVE_COLOUR:-blue}}"
case "$colour" in blue|green) ;; *) echo "the colour must be blue or green, not $colour" >&2; exit 1 ;; esac
count="${READERS_PER_COLOUR:-2}"
case "$count" in ''|*[!0-9]*|0) echo "READERS_PER_COLOUR must be a positive number" >&2; exit 1 ;; esac
{
  echo "# Written by compose-live-colour.sh: the live readers ($colour)."
  echo "upstream readers {"
  i=1
  while [ "$i" -le "$count" ]; do
    echo "    server reader-$colour-$i:8000 max_fails=1 fail_timeout=2s;"
    i=$((i + 1))
  done
  echo "    keepalive 64;"
  echo "}"
} > "$live.tmp"
mv "$live.tmp" "$live"
