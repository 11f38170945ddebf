#!/usr/bin/env bash
# A payments database of tens of millions of rows, generated in SQL, for measuring the
# reader's plans at scale (docs/benchmarks.md, "Time filters at 50M payments").
#
#   scripts/scale-db.sh build DIR [PAYMENTS]   initdb DIR/data, run `writer migrate`, fill
#   scripts/scale-db.sh start DIR              start the server again on a kept DIR
#   scripts/scale-db.sh stop DIR               stop it (then `rm -rf DIR` to free the disk)
#
# The server listens on 127.0.0.1:$PORT (default 55432), database `payments`, user
# `postgres`, trust authentication; durability is off (fsync, full-page writes) and
# 512 MB of shared buffers, as in `loadtest bench reader-history`.
#
# What the rows look like (the columns and TOIDs the writer writes, see writer/src/rows.rs):
# - ledgers from 50,000,000 on, closed 5 s apart from 2024-01-01T00:00:00Z,
#   PAYMENTS/200 of them, 200 payments each;
# - 50 transactions a ledger, 4 payment operations each (operation indexes 1-4), about
#   4 % failed (all their operations then failed too);
# - payments of type 1 (`payment`): 80 % lumens, 20 % USDC; the source is the
#   transaction's source account, the destination another account;
# - $ACCOUNTS accounts (default 1,000,000; real strkeys from `loadtest synth accounts`),
#   picked with a skew: account k is drawn with density ~ k^(-2/3), so the most active
#   account is in about 1 % of payments and most have a few dozen;
# - account_payments: the source (direction 1) and destination (2) of every payment,
#   one row with direction 3 when they are the same; account_last_activity from it;
# - no asset_payments / account_asset_history rows (asset-filtered feeds are not what
#   this database measures).
# The tables are emptied and filled in the transaction that created their new files, so
# with wal_level=minimal nothing is written to the WAL; random-order indexes are built
# after the load (sorted), as a restore would.
set -euo pipefail

cmd=${1:?usage: scale-db.sh build|start|stop DIR [PAYMENTS]}
dir=${2:?usage: scale-db.sh build|start|stop DIR [PAYMENTS]}
payments=${3:-50000000}
accounts=${ACCOUNTS:-1000000}
port=${PORT:-55432}
root=$(cd "$(dirname "$0")/.." && pwd)
loadtest=${LOADTEST:-$root/target/release/loadtest}
writer=${WRITER:-$root/target/release/writer}
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
psql_() { as_pg "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres "$@"; }

start() {
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 120 start -o \
        "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir \
         -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
         -c shared_buffers=512MB -c max_wal_size=8GB -c checkpoint_timeout=30min \
         -c wal_level=minimal -c max_wal_senders=0 -c maintenance_work_mem=1GB \
         -c max_parallel_maintenance_workers=2"
}

case $cmd in
start) start; exit ;;
stop) as_pg "$bin/pg_ctl" -D "$dir/data" -m fast stop; exit ;;
build) ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac

ledgers=$(( (payments + 199) / 200 ))
payments=$(( ledgers * 200 ))
first=50000000
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
[ "$(id -u)" = 0 ] && chown postgres: "$dir"
as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust >/dev/null
start
psql_ -d postgres -c "CREATE DATABASE payments"
url="postgres://postgres@127.0.0.1:$port/payments"
"$writer" migrate --database-url "$url"
t0=$(date +%s)

# Accounts (ids 1..N in strkey order of generation) and the two assets.
"$loadtest" synth accounts --count "$accounts" --seed 7 \
    | psql_ -d payments -c "\\copy accounts (address) FROM STDIN"
psql_ -d payments <<SQL
INSERT INTO assets (asset) VALUES ('native'), ('USDC:' || (SELECT address FROM accounts WHERE id = 1));
-- Account index (0-based) drawn from a multiplicative hash of i: density ~ k^(-2/3).
CREATE FUNCTION scale_pick(i bigint, mult bigint) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN floor($accounts * power(((i * mult) % 4294967296)::float8 / 4294967296, 3))::integer;
-- Whether transaction t succeeded (about 96 %).
CREATE FUNCTION scale_ok(t bigint) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN (t * 2246822519) % 4294967296 % 100 >= 4;
SQL
echo "accounts: $(( $(date +%s) - t0 )) s"

# Ledgers, transactions, payments (one session) and account history (another), at once.
psql_ -d payments <<SQL &
SET work_mem = '256MB';
BEGIN;
TRUNCATE ledgers, transactions, payments;
DROP INDEX transactions_by_hash;
INSERT INTO ledgers (sequence, hash, previous_hash, closed_at, protocol_version,
    transaction_count, successful_transaction_count, operation_count, payment_count)
SELECT s, sha256(int4send(s)), sha256(int4send(s - 1)),
    timestamptz '2024-01-01 00:00:00+00' + make_interval(secs => (s - $first) * 5),
    23, 50, 48, 200, 200
FROM generate_series($first, $first + $ledgers - 1) s;
INSERT INTO transactions (id, hash, ledger_sequence, closed_at, successful, source_account,
    source_sequence, fee_charged, max_fee, operation_count, memo_type)
SELECT x.id, sha256(int8send(x.id)), x.ledger, l.closed_at, scale_ok(x.t), a.address,
    x.id, 400, 1000, 4, 0
FROM (SELECT t, $first + t / 50 AS ledger,
             (($first + t / 50)::bigint << 32) | ((t % 50 + 1) << 12) AS id
      FROM generate_series(0::bigint, $payments / 4 - 1) t) x
JOIN ledgers l ON l.sequence = x.ledger
JOIN accounts a ON a.id = scale_pick(x.t, 3266489917) + 1;
INSERT INTO payments (id, transaction_id, ledger_sequence, closed_at, type, successful,
    source_account, destination, asset, amount, transaction_hash)
SELECT x.id, x.id - x.op, x.ledger, l.closed_at, 1, scale_ok(x.i / 4), s.address, d.address,
    CASE WHEN x.i % 5 = 0 THEN (SELECT asset FROM assets WHERE id = 2) ELSE 'native' END,
    10000000 + x.i % 1000, sha256(int8send(x.id - x.op))
FROM (SELECT i, i % 4 + 1 AS op, $first + i / 200 AS ledger,
             (($first + i / 200)::bigint << 32) | ((i % 200 / 4 + 1) << 12) | (i % 4 + 1) AS id
      FROM generate_series(0::bigint, $payments - 1) i) x
JOIN ledgers l ON l.sequence = x.ledger
JOIN accounts s ON s.id = scale_pick(x.i / 4, 3266489917) + 1
JOIN accounts d ON d.id = scale_pick(x.i, 2654435761) + 1;
CREATE UNIQUE INDEX transactions_by_hash ON transactions (hash);
INSERT INTO backfill_ranges (start_ledger, end_ledger) VALUES ($first, $first + $ledgers - 1);
COMMIT;
SQL
a=$!
psql_ -d payments <<SQL &
SET work_mem = '256MB';
BEGIN;
TRUNCATE account_payments;
ALTER TABLE account_payments DROP CONSTRAINT account_payments_pkey;
INSERT INTO account_payments (account_id, payment_id, direction, successful)
SELECT p.account + 1, x.id, CASE WHEN x.src = x.dst THEN 3 ELSE p.direction END, x.ok
FROM (SELECT (($first + i / 200)::bigint << 32) | ((i % 200 / 4 + 1) << 12) | (i % 4 + 1) AS id,
             scale_pick(i / 4, 3266489917) AS src, scale_pick(i, 2654435761) AS dst,
             scale_ok(i / 4) AS ok
      FROM generate_series(0::bigint, $payments - 1) i) x
CROSS JOIN LATERAL (VALUES (x.src, 1::smallint), (x.dst, 2::smallint)) p(account, direction)
WHERE NOT (x.src = x.dst AND p.direction = 2);
ALTER TABLE account_payments ADD PRIMARY KEY (account_id, payment_id) INCLUDE (direction, successful);
COMMIT;
SQL
b=$!
wait $a
wait $b
echo "payments and history: $(( $(date +%s) - t0 )) s"

psql_ -d payments <<SQL
INSERT INTO account_last_activity (account_id, last_payment_id, last_ledger)
SELECT account_id, max(payment_id), (max(payment_id) >> 32)::integer
FROM account_payments GROUP BY account_id;
DROP FUNCTION scale_pick, scale_ok;
SQL
# All-visible pages (index-only scans of the history) and statistics, as autovacuum
# would leave them.
psql_ -d payments -c "VACUUM (ANALYZE) payments" &
a=$!
psql_ -d payments -c "VACUUM (ANALYZE) account_payments" &
b=$!
psql_ -d payments -c "VACUUM (ANALYZE) ledgers, transactions, accounts, assets, account_last_activity, backfill_ranges"
wait $a
wait $b
echo "built in $(( $(date +%s) - t0 )) s: $url"
psql_ -d payments -c "SELECT (SELECT count(*) FROM payments) AS payments, \
    (SELECT count(*) FROM account_payments) AS account_payments, \
    pg_size_pretty(pg_database_size('payments')) AS size"
