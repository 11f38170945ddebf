-- Payments schema. Written only by the writer (one Postgres transaction per batch of
-- ledgers), read by the readers on replicas. Every reader query is an index range scan:
-- ids are SEP-35 TOIDs, so a ledger's or a transaction's payments are id ranges, and
-- history queries walk (key, id) indexes with keyset cursors.
--
-- Conventions: accounts are strkeys (G..., or C... for contracts in SAC movements);
-- muxed ids are unsigned 64-bit values stored bit for bit in bigint (read back as u64);
-- amounts are stroops; assets are canonical text: 'native' or 'CODE:ISSUER'.

-- Where live ingestion stands; one row. The writer advances it in the same transaction
-- as the rows of each batch, and only from the ledger it expects (the fencing condition
-- that makes two writers unable to both commit the same batch).
CREATE TABLE ingest_cursor (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    network_passphrase text NOT NULL,
    last_ledger integer NOT NULL,
    last_ledger_hash bytea NOT NULL CHECK (length(last_ledger_hash) = 32),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledgers (
    sequence integer PRIMARY KEY,
    hash bytea NOT NULL UNIQUE CHECK (length(hash) = 32),
    previous_hash bytea NOT NULL CHECK (length(previous_hash) = 32),
    closed_at timestamptz NOT NULL,
    protocol_version integer NOT NULL,
    transaction_count integer NOT NULL,
    successful_transaction_count integer NOT NULL,
    operation_count integer NOT NULL,
    payment_count integer NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now()
);

-- Transactions that carry at least one payment (what join=transactions embeds).
CREATE TABLE transactions (
    id bigint PRIMARY KEY,                  -- TOID, operation index 0
    hash bytea NOT NULL CHECK (length(hash) = 32),
    ledger_sequence integer NOT NULL,
    closed_at timestamptz NOT NULL,
    successful boolean NOT NULL,
    source_account text NOT NULL,
    source_muxed_id bigint,
    source_sequence bigint NOT NULL,
    fee_account text,                       -- fee bumps only
    fee_muxed_id bigint,
    inner_hash bytea,                       -- fee bumps only
    fee_charged bigint NOT NULL,
    max_fee bigint NOT NULL,
    operation_count integer NOT NULL,
    memo_type smallint NOT NULL,            -- 0 none, 1 text, 2 id, 3 hash, 4 return
    memo bytea,                             -- raw text bytes, 8-byte big-endian id, or 32-byte hash
    min_time bigint,
    max_time bigint
);
CREATE UNIQUE INDEX transactions_by_hash ON transactions (hash);

CREATE TABLE payments (
    id bigint PRIMARY KEY,                  -- TOID of the operation; also the paging token
    transaction_id bigint NOT NULL,
    ledger_sequence integer NOT NULL,
    closed_at timestamptz NOT NULL,
    type smallint NOT NULL,                 -- Horizon's type_i
    successful boolean NOT NULL,
    source_account text NOT NULL,           -- from / funder / merged account / invoker
    source_muxed_id bigint,
    destination text,                       -- to / new account / merge target
    destination_muxed_id bigint,
    asset text,                             -- asset received
    amount bigint,                          -- stroops received / starting balance / merged balance
    source_asset text,                      -- path payments
    source_amount bigint,
    amount_limit bigint,                    -- source_max or destination_min
    path text[],
    details jsonb                           -- invoke_host_function: function and balance changes
);
-- The global feed without failed transactions' payments.
CREATE INDEX payments_successful ON payments (id) WHERE successful;
-- Close-time bounds map to ids through this index.
CREATE INDEX payments_by_close_time ON payments (closed_at, id);

-- Account history: one row per (address, payment), with the direction the address takes.
CREATE TABLE payment_participants (
    account text NOT NULL,
    payment_id bigint NOT NULL,
    direction smallint NOT NULL,            -- 1 outgoing, 2 incoming, 3 both
    successful boolean NOT NULL,
    PRIMARY KEY (account, payment_id)
);
CREATE INDEX payment_participants_successful ON payment_participants (account, payment_id) WHERE successful;

-- Asset-filtered feeds: per asset, and per (account, asset) for account history.
CREATE TABLE payment_assets (
    asset text NOT NULL,
    payment_id bigint NOT NULL,
    successful boolean NOT NULL,
    PRIMARY KEY (asset, payment_id)
);
CREATE TABLE account_asset_payments (
    account text NOT NULL,
    asset text NOT NULL,
    payment_id bigint NOT NULL,
    direction smallint NOT NULL,
    successful boolean NOT NULL,
    PRIMARY KEY (account, asset, payment_id)
);

-- The newest payment of each address: per-account ETags survive tip changes that did
-- not touch the account.
CREATE TABLE account_activity (
    account text PRIMARY KEY,
    last_payment_id bigint NOT NULL,
    last_ledger integer NOT NULL
);

-- Ledger ranges ingested by backfill (live ingestion is described by the cursor).
CREATE TABLE backfill_ranges (
    start_ledger integer NOT NULL,
    end_ledger integer NOT NULL CHECK (end_ledger >= start_ledger),
    completed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (start_ledger, end_ledger)
);
