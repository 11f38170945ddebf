-- History index tables keyed by integer ids instead of 56-character strkeys.
--
-- Every payment adds a handful of rows to the history tables and an index entry for
-- each; with text keys those entries were ~70 bytes and bulk ingestion spent its time
-- in B-tree maintenance. Addresses and assets now live once in small dictionaries and
-- the history tables hold 8-byte ids. Readers resolve an address or asset to its id
-- once per request (an unknown one simply has no history).
--
-- The `successful` partial indexes are gone too: the primary keys INCLUDE `successful`
-- (and `direction`), so "without failed" and direction filters are answered from the
-- same index without visiting the heap.
--
-- Dictionary rows are added outside the writer's batch transactions (idempotently, by
-- the unique key) and never removed, so an id is stable once seen.

CREATE TABLE accounts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    address text NOT NULL UNIQUE            -- G... (or C..., B..., L... for SAC movements)
);

CREATE TABLE assets (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    asset text NOT NULL UNIQUE              -- 'native' or 'CODE:ISSUER'
);

INSERT INTO accounts (address)
SELECT account FROM payment_participants
UNION
SELECT account FROM account_activity
ORDER BY 1;

INSERT INTO assets (asset)
SELECT DISTINCT asset FROM payment_assets ORDER BY 1;

-- Account history: one row per (address, payment), with the direction the address takes.
CREATE TABLE account_payments (
    account_id bigint NOT NULL,
    payment_id bigint NOT NULL,
    direction smallint NOT NULL,            -- 1 outgoing, 2 incoming, 3 both
    successful boolean NOT NULL,
    PRIMARY KEY (account_id, payment_id) INCLUDE (direction, successful)
);
INSERT INTO account_payments (account_id, payment_id, direction, successful)
SELECT a.id, p.payment_id, p.direction, p.successful
FROM payment_participants p JOIN accounts a ON a.address = p.account;

-- Asset-filtered feeds.
CREATE TABLE asset_payments (
    asset_id integer NOT NULL,
    payment_id bigint NOT NULL,
    successful boolean NOT NULL,
    PRIMARY KEY (asset_id, payment_id) INCLUDE (successful)
);
INSERT INTO asset_payments (asset_id, payment_id, successful)
SELECT s.id, p.payment_id, p.successful
FROM payment_assets p JOIN assets s ON s.asset = p.asset;

-- Account history filtered by asset.
CREATE TABLE account_asset_history (
    account_id bigint NOT NULL,
    asset_id integer NOT NULL,
    payment_id bigint NOT NULL,
    direction smallint NOT NULL,
    successful boolean NOT NULL,
    PRIMARY KEY (account_id, asset_id, payment_id) INCLUDE (direction, successful)
);
INSERT INTO account_asset_history (account_id, asset_id, payment_id, direction, successful)
SELECT a.id, s.id, p.payment_id, p.direction, p.successful
FROM account_asset_payments p
JOIN accounts a ON a.address = p.account
JOIN assets s ON s.asset = p.asset;

-- The newest payment of each address (per-account ETags). Every batch updates the rows
-- of the addresses it touches; free room in each page lets those updates stay on the
-- page (HOT: no new primary key entry, old versions pruned in place).
CREATE TABLE account_last_activity (
    account_id bigint PRIMARY KEY,
    last_payment_id bigint NOT NULL,
    last_ledger integer NOT NULL
) WITH (fillfactor = 70);
INSERT INTO account_last_activity (account_id, last_payment_id, last_ledger)
SELECT a.id, x.last_payment_id, x.last_ledger
FROM account_activity x JOIN accounts a ON a.address = x.account;

DROP TABLE payment_participants;
DROP TABLE payment_assets;
DROP TABLE account_asset_payments;
DROP TABLE account_activity;

-- The global feed reads the primary key and checks `successful` on the rows it returns.
DROP INDEX payments_successful;
