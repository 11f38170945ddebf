-- The reader's time-filter queries, as it issues them (reader/src/store.rs: the two
-- close-time lookups, then one page query between the TOIDs they give; pages without
-- join=transactions, on a database at migration V6 or later), under
-- EXPLAIN (ANALYZE, BUFFERS), on the database of scripts/scale-db.sh.
--
--   psql -X -h 127.0.0.1 -p 55432 -U postgres -d payments -f scripts/scale-time-filters.sql
--
-- Each request: the lookup plans, then the page plan with the bounds they gave
-- (custom plan, as for a statement's first executions), then the page plan again as
-- the generic plan a prepared statement may switch to later. Run it once right after
-- a restart with the OS page cache dropped (cold) and again (warm).
\set ON_ERROR_STOP 1
\timing off
\pset pager off

PREPARE first_ledger_from(float8) AS SELECT sequence FROM ledgers
    WHERE closed_at >= to_timestamp($1) ORDER BY closed_at, sequence LIMIT 1;
PREPARE last_ledger_before(float8) AS SELECT sequence FROM ledgers
    WHERE closed_at < to_timestamp($1) ORDER BY closed_at DESC, sequence DESC LIMIT 1;
-- store::range, global feed, without failed payments.
PREPARE all_asc(int8, int8, int8, text, text, int2[]) AS
SELECT p.id, p.type, p.source_account, p.source_muxed_id, p.destination, p.destination_muxed_id,
    p.asset, p.amount, p.source_asset, p.source_amount, p.amount_limit, p.path, p.details,
    COALESCE(p.transaction_hash,
        (SELECT h.hash FROM transactions h WHERE h.id = p.transaction_id)) AS transaction_hash,
    p.successful, p.closed_at
FROM payments p
WHERE true AND p.successful AND p.id >= $1 AND p.id < $2 ORDER BY p.id ASC LIMIT $3;
PREPARE all_desc(int8, int8, int8, text, text, int2[]) AS
SELECT p.id, p.type, p.source_account, p.source_muxed_id, p.destination, p.destination_muxed_id,
    p.asset, p.amount, p.source_asset, p.source_amount, p.amount_limit, p.path, p.details,
    COALESCE(p.transaction_hash,
        (SELECT h.hash FROM transactions h WHERE h.id = p.transaction_id)) AS transaction_hash,
    p.successful, p.closed_at
FROM payments p
WHERE true AND p.successful AND p.id >= $1 AND p.id < $2 ORDER BY p.id DESC LIMIT $3;
-- store::range, account history, without failed payments.
PREPARE account_desc(int8, int8, int8, text, text, int2[]) AS
SELECT p.id, p.type, p.source_account, p.source_muxed_id, p.destination, p.destination_muxed_id,
    p.asset, p.amount, p.source_asset, p.source_amount, p.amount_limit, p.path, p.details,
    COALESCE(p.transaction_hash,
        (SELECT h.hash FROM transactions h WHERE h.id = p.transaction_id)) AS transaction_hash,
    p.successful, p.closed_at
FROM account_payments x JOIN payments p ON p.id = x.payment_id
WHERE x.account_id = (SELECT id FROM accounts WHERE address = $4) AND x.successful
    AND x.payment_id >= $1 AND x.payment_id < $2 ORDER BY x.payment_id DESC LIMIT $3;

SELECT max(sequence) AS tip FROM ledgers \gset
SELECT (:tip + 1)::bigint << 32 AS tip_hi \gset
SELECT address AS hot FROM accounts WHERE id = 1 \gset
SELECT address AS mid FROM accounts WHERE id = 1000 \gset
\echo tip :tip, hot account :hot, mid account :mid

-- /payments?from_time=2024-01-10T12:00:00Z (order asc, limit 10)
\echo '### /payments?from_time=2024-01-10T12:00:00Z'
SELECT extract(epoch FROM timestamptz '2024-01-10 12:00:00+00') AS t_from \gset
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE first_ledger_from(:t_from);
EXECUTE first_ledger_from(:t_from) \gset f_
SELECT :f_sequence::bigint << 32 AS lo \gset
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE all_asc(:lo, :tip_hi, 10, NULL, NULL, '{}');

-- /payments?to_time=2024-01-05T00:00:00Z&order=desc (the newest before the bound)
\echo '### /payments?to_time=2024-01-05T00:00:00Z&order=desc'
SELECT extract(epoch FROM timestamptz '2024-01-05 00:00:00+00') AS t_to \gset
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE last_ledger_before(:t_to);
EXECUTE last_ledger_before(:t_to) \gset l_
SELECT (:l_sequence + 1)::bigint << 32 AS hi \gset
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE all_desc(0, :hi, 10, NULL, NULL, '{}');

-- /payments?from_time=2024-01-08T00:00:00Z&to_time=2024-01-08T01:00:00Z&order=desc&limit=200
\echo '### /payments?from_time=2024-01-08T00:00:00Z&to_time=2024-01-08T01:00:00Z&order=desc&limit=200'
SELECT extract(epoch FROM timestamptz '2024-01-08 00:00:00+00') AS t_from,
       extract(epoch FROM timestamptz '2024-01-08 01:00:00+00') AS t_to \gset
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE first_ledger_from(:t_from);
EXECUTE first_ledger_from(:t_from) \gset f_
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE last_ledger_before(:t_to);
EXECUTE last_ledger_before(:t_to) \gset l_
SELECT :f_sequence::bigint << 32 AS lo, (:l_sequence + 1)::bigint << 32 AS hi \gset
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE all_desc(:lo, :hi, 200, NULL, NULL, '{}');

-- /accounts/{hot, mid}/payments?from_time=2024-01-08T00:00:00Z&to_time=2024-01-09T00:00:00Z&order=desc&limit=50
SELECT extract(epoch FROM timestamptz '2024-01-08 00:00:00+00') AS t_from,
       extract(epoch FROM timestamptz '2024-01-09 00:00:00+00') AS t_to \gset
EXECUTE first_ledger_from(:t_from) \gset f_
EXECUTE last_ledger_before(:t_to) \gset l_
SELECT :f_sequence::bigint << 32 AS lo, (:l_sequence + 1)::bigint << 32 AS hi \gset
\echo '### /accounts/HOT/payments?from_time=2024-01-08T00:00:00Z&to_time=2024-01-09T00:00:00Z&order=desc&limit=50'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE account_desc(:lo, :hi, 50, :'hot', NULL, '{}');
\echo '### /accounts/MID/payments?from_time=2024-01-08T00:00:00Z&to_time=2024-01-09T00:00:00Z&order=desc&limit=50'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE account_desc(:lo, :hi, 50, :'mid', NULL, '{}');

-- The generic plans a prepared statement may settle on.
\echo '### generic plans'
SET plan_cache_mode = force_generic_plan;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE first_ledger_from(:t_from);
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE last_ledger_before(:t_to);
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE all_desc(:lo, :hi, 200, NULL, NULL, '{}');
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE account_desc(:lo, :hi, 50, :'hot', NULL, '{}');
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE account_desc(:lo, :hi, 50, :'mid', NULL, '{}');
