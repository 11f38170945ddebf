#!/usr/bin/env bash
# Times the reader's time-filtered pages over HTTP on the database of scripts/scale-db.sh
# (docs/benchmarks.md, "Time filters at 50M payments"). Start a reader on it with its
# response cache off, so every request reads the database:
#
#   ./target/release/reader --listen 127.0.0.1:18431 --cache-bytes 0 \
#       --replica-url postgres://postgres@127.0.0.1:55432/payments &
#   scripts/scale-http-timing.sh [BASE_URL] [REQUESTS]
#
# Each URL is requested REQUESTS times (default 21) one after another with curl; the
# line gives the status, size and record count of the last response and the min,
# median and max of curl's total time. `/constant` (no handler work) is the ceiling
# of the same run. HOT and MID are accounts 1 and 1000 of `loadtest synth accounts
# --seed 7` (about 995,000 and 3,300 payments).
set -euo pipefail
base=${1:-http://127.0.0.1:18431}
requests=${2:-21}
hot=GDV6EHGQ6UMRKZBBQEK5OL5S3NJ3DUWVU4KHSBHHUVO5UZYWYSOEBRDS
mid=GD6MV3OD2GYO5OBJO3C7YUMQ53NQ36NJMIN3IWH2E7JBZSRJG4CHEB3D
window="from_time=2024-01-08T00:00:00Z&to_time=2024-01-09T00:00:00Z&order=desc&limit=50"
body=$(mktemp)
trap 'rm -f "$body"' EXIT
for path in \
    "/payments?from_time=2024-01-10T12:00:00Z" \
    "/payments?to_time=2024-01-05T00:00:00Z&order=desc" \
    "/payments?from_time=2024-01-08T00:00:00Z&to_time=2024-01-08T01:00:00Z&order=desc&limit=200" \
    "/accounts/$hot/payments?$window" \
    "/accounts/$mid/payments?$window" \
    "/constant"; do
    times=()
    for _ in $(seq "$requests"); do
        last=$(curl -s -o "$body" -w "%{http_code} %{size_download} %{time_total}" "$base$path")
        times+=("$(echo "$last" | awk '{printf "%.1f", $3 * 1000}')")
    done
    records=$( (grep -o '"paging_token"' "$body" || true) | wc -l)
    summary=$(printf '%s\n' "${times[@]}" | sort -n |
        awk '{a[NR] = $1} END {printf "min %.1f, median %.1f, max %.1f ms", a[1], a[int((NR + 1) / 2)], a[NR]}')
    echo "$path | $(echo "$last" | cut -d' ' -f1) $(echo "$last" | cut -d' ' -f2) bytes, $records records | $summary"
done
