-- A fee-bump transaction is also found by the hash of the transaction it wraps, as on
-- Horizon. Few transactions are fee bumps, so the index is partial and small.
CREATE INDEX transactions_by_inner_hash ON transactions (inner_hash)
    WHERE inner_hash IS NOT NULL;
