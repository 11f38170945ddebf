#!/bin/sh
# Run by the nginx image's entrypoint (/docker-entrypoint.d) before nginx starts: writes
# the live colour (LIVE_COLOUR, default blue) unless a switch already chose one, which
# the edge-live volume keeps across restarts of the edge.
set -eu
mkdir -p /etc/nginx/live
if [ ! -s /etc/nginx/live/live.conf ]; then
  colour="${LIVE_COLOUR:-blue}"
  case "$colour" in blue|green) ;; *) echo "LIVE_COLOUR must be blue or green" >&2; exit 1 ;; esac
  printf 'map "" $live_readers { default readers_%s; }\n' "$colour" > /etc/nginx/live/live.conf
fi
