-- The writer lease: who holds the writer lock, until when. The active writer (the
-- session holding the advisory lock) takes it with a new epoch and renews `expires_at`
-- every quarter of the lease time; every live batch checks that the stored epoch is
-- still its own. A standby that finds the lease expired while its holder's backend
-- (`holder_pid`) still holds the advisory lock terminates that backend and takes over:
-- a hung writer (stopped, swapping, wedged) cannot keep the lock by keeping its socket.
CREATE TABLE writer_lease (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch bigint NOT NULL,
    holder_pid integer NOT NULL,            -- backend pid of the holder's lock session
    holder text NOT NULL,                   -- host:process, for operators
    renewed_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);

-- Schema changes that cannot run inside a transaction (`CREATE INDEX CONCURRENTLY`),
-- applied by the writer after the transactional migrations, once each, by name (see
-- `writer/src/db.rs` and docs/writer.md).
CREATE TABLE online_migrations (
    name text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);
