-- Each payment row keeps its transaction's hash, so a page of payments that does not
-- embed transactions is read from the history index and `payments` alone: before, every
-- record of such a page cost a probe of `transactions_pkey` for the hash, the only field
-- of the transaction a payment resource shows that `payments` did not hold already
-- (`successful` and `closed_at` are there). `transactions` still serves
-- `join=transactions`, `/transactions/{hash}` and the transaction feeds' hash lookups.
--
-- Adding a nullable column rewrites nothing, and the check is NOT VALID: it holds for
-- every row written from now on without a scan of the rows already there. Rows written
-- before this migration keep a NULL hash until `CALL fill_payment_transaction_hashes()`
-- fills them, one short transaction per range of ledgers, while the writer ingests;
-- readers take the hash of a NULL row from `transactions` meanwhile, and readers that
-- find no column at all (deployed before their writer applied this) read every page
-- joined to `transactions` as before (docs/writer.md).
ALTER TABLE payments ADD COLUMN transaction_hash bytea;
ALTER TABLE payments ADD CONSTRAINT payments_transaction_hash_length
    CHECK (length(transaction_hash) = 32) NOT VALID;

CREATE PROCEDURE fill_payment_transaction_hashes(ledgers_per_batch integer DEFAULT 64)
LANGUAGE plpgsql AS $fill$
DECLARE
    lo bigint;
    hi bigint;
    next_ledger bigint;
BEGIN
    IF ledgers_per_batch IS NULL OR ledgers_per_batch NOT BETWEEN 1 AND 1000000 THEN
        RAISE EXCEPTION 'ledgers_per_batch must be between 1 and 1000000';
    END IF;
    SELECT min(id) INTO lo FROM payments;
    WHILE lo IS NOT NULL LOOP
        -- Whole ledgers: ids are TOIDs, the ledger in the high 32 bits. Past the last
        -- ledger a TOID can name, the range has no upper end (and is the last).
        next_ledger := (lo >> 32) + ledgers_per_batch;
        hi := CASE WHEN next_ledger <= 2147483647 THEN next_ledger << 32 END;
        UPDATE payments p SET transaction_hash = t.hash
        FROM transactions t
        WHERE p.id >= lo AND (hi IS NULL OR p.id < hi) AND p.transaction_hash IS NULL
          AND t.id = p.transaction_id;
        COMMIT;
        EXIT WHEN hi IS NULL;
        SELECT min(id) INTO lo FROM payments WHERE id >= hi;
    END LOOP;
END
$fill$;
