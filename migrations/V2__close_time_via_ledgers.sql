-- Close-time bounds map to ledger sequences through the small ledgers table, and ledger
-- sequences to TOID ranges on payments: an index on payments(closed_at) costs every
-- ingested payment an index insertion for nothing.
DROP INDEX payments_by_close_time;
CREATE INDEX ledgers_by_close_time ON ledgers (closed_at);
