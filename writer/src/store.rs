//! The commit protocol: how a batch of extracted ledgers lands in the primary exactly
//! once (the row encodings themselves live in `rows`).
//!
//! A live batch is one Postgres transaction on the writer-lock session (see `lock`): the
//! cursor row is locked and checked first (it must stand at the ledger just before the
//! batch, with that ledger's hash), the lease epoch must still be this writer's (the
//! fencing condition), then every row goes in with binary COPY, then the cursor moves
//! to the batch's last ledger. A crash at any point leaves all of the batch or none of
//! it, and a writer that lost the lock cannot commit at all: its session is gone.
//!
//! One lock order for every writer: the cursor row, then the rows of the batch (ledger
//! keys ascending, `account_last_activity` in account order). Dictionary ids are
//! resolved before any transaction starts (see `dictionary`), so no batch transaction
//! waits on a dictionary row. A backfill chunk never takes the cursor row inside its
//! transaction: a chunk behind the cursor never touches it, and a chunk at or after it
//! moves the cursor afterwards in a short transaction of its own that locks nothing else.

use std::collections::HashMap;

use shared::LedgerPayments;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, GenericClient};

use crate::dictionary::{Dictionaries, DictionaryError};
use crate::rows::{write_rows, RowError};

/// Where live ingestion stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The network the database holds.
    pub network_passphrase: String,
    /// The last ledger committed.
    pub last_ledger: u32,
    /// Its hash.
    pub last_ledger_hash: [u8; 32],
}

/// Why a batch was not committed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The cursor is not where this batch expects it: another writer committed first, or
    /// the batch does not follow on. Nothing was written.
    #[error(
        "fenced: the cursor stands at ledger {found} but this batch follows ledger {expected}"
    )]
    Fenced {
        /// Ledger the batch follows.
        expected: u32,
        /// Ledger the cursor stands at.
        found: u32,
    },
    /// Another writer took the lease since this one took the lock. Nothing was written.
    #[error("fenced: the writer lease is at epoch {current:?}, this writer holds epoch {held}")]
    LeaseLost {
        /// The epoch this writer took.
        held: i64,
        /// The epoch stored now.
        current: Option<i64>,
    },
    /// The first ledger of the batch does not chain onto the stored last ledger.
    #[error("ledger {ledger}: previous hash {found} does not match stored ledger hash {expected}")]
    HashMismatch {
        /// The ledger whose previous hash is wrong.
        ledger: u32,
        /// The stored hash of the ledger before it.
        expected: String,
        /// What the ledger names as its predecessor.
        found: String,
    },
    /// The database holds another network's data.
    #[error("the database holds network {stored:?}, not {requested:?}; refusing to mix networks")]
    NetworkMismatch {
        /// Passphrase stored in the cursor.
        stored: String,
        /// Passphrase of the source.
        requested: String,
    },
    /// The batch itself is not a contiguous, chained run of ledgers.
    #[error("batch is not contiguous at ledger {0}")]
    NotContiguous(u32),
    /// Postgres failed (the transaction rolled back).
    #[error("database: {}", describe_postgres(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// A dictionary entry vanished after it was added (rows were deleted by hand).
    #[error("dictionary: {0}")]
    Dictionary(String),
}

impl From<DictionaryError> for StoreError {
    fn from(error: DictionaryError) -> Self {
        match error {
            DictionaryError::Postgres(e) => Self::Postgres(e),
            missing @ DictionaryError::Missing { .. } => Self::Dictionary(missing.to_string()),
        }
    }
}

impl From<RowError> for StoreError {
    fn from(error: RowError) -> Self {
        match error {
            RowError::Postgres(e) => Self::Postgres(e),
            RowError::MissingId(what) => Self::Dictionary(what),
        }
    }
}

impl StoreError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Fenced { .. } => "fenced",
            Self::LeaseLost { .. } => "lease_lost",
            Self::HashMismatch { .. } => "hash_mismatch",
            Self::NetworkMismatch { .. } => "network_mismatch",
            Self::NotContiguous(_) => "not_contiguous",
            Self::Postgres(_) => "postgres",
            Self::Dictionary(_) => "dictionary",
        }
    }

    /// A condition that passes by itself, so retrying the batch for as long as it takes is
    /// right: the connection dropped, the server is shutting down or starting, a
    /// serialization failure or deadlock rolled the transaction back, connections or a
    /// lock are momentarily unavailable.
    pub fn is_transient(&self) -> bool {
        let Self::Postgres(error) = self else {
            return false;
        };
        let Some(code) = error.code() else {
            // No SQLSTATE: the connection failed, not the statement.
            return true;
        };
        let transient = [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::OBJECT_IN_USE,
        ];
        code.code().starts_with("08") || transient.contains(code)
    }

    /// A database error that may be deterministic (a constraint violation, disk full, an
    /// encoding error, ...): worth a bounded number of retries, since some of them pass
    /// (a concurrent backfill stored a ledger between the check and the write; space was
    /// freed), but never retried forever.
    pub fn is_database_failure(&self) -> bool {
        matches!(self, Self::Postgres(_)) && !self.is_transient()
    }

    /// The Postgres condition's name and SQLSTATE (`unique_violation (23505)`), if this is
    /// a database error the server named.
    pub fn condition(&self) -> Option<String> {
        match self {
            Self::Postgres(error) => error
                .code()
                .map(|code| format!("{} ({})", condition_name(code), code.code())),
            _ => None,
        }
    }
}

/// The name of a SQLSTATE, for errors an operator reads.
fn condition_name(code: &SqlState) -> &'static str {
    match code.code() {
        "23505" => "unique_violation",
        "23503" => "foreign_key_violation",
        "23502" => "not_null_violation",
        "23514" => "check_violation",
        "53100" => "disk_full",
        "53200" => "out_of_memory",
        "53400" => "configuration_limit_exceeded",
        "22021" => "character_not_in_repertoire",
        "22P05" => "untranslatable_character",
        "22003" => "numeric_value_out_of_range",
        "22001" => "string_data_right_truncation",
        "57014" => "query_canceled",
        "40001" => "serialization_failure",
        "40P01" => "deadlock_detected",
        "58030" => "io_error",
        "XX000" => "internal_error",
        "XX001" => "data_corrupted",
        other => match &other[..2] {
            "22" => "data_exception",
            "23" => "integrity_constraint_violation",
            "53" => "insufficient_resources",
            "54" => "program_limit_exceeded",
            "58" => "system_error",
            "XX" => "internal_error",
            _ => "database_error",
        },
    }
}

fn describe_postgres(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!(
            "{}: {} ({})",
            db.severity(),
            db.message(),
            condition_name(db.code())
        ),
        None => error.to_string(),
    }
}

/// Reads the cursor, if ingestion ever started.
pub async fn read_cursor(
    client: &impl GenericClient,
) -> Result<Option<Cursor>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT network_passphrase, last_ledger, last_ledger_hash FROM ingest_cursor",
            &[],
        )
        .await?;
    Ok(row.map(|row| {
        let hash: Vec<u8> = row.get(2);
        let mut last_ledger_hash = [0u8; 32];
        last_ledger_hash.copy_from_slice(&hash[..32.min(hash.len())]);
        Cursor {
            network_passphrase: row.get(0),
            last_ledger: row.get::<_, i32>(1) as u32,
            last_ledger_hash,
        }
    }))
}

/// The last ledger of the run of stored ledgers that starts at `from` (`None` when
/// `from` itself is not stored).
pub async fn stored_run_end(
    client: &impl GenericClient,
    from: u32,
) -> Result<Option<u32>, tokio_postgres::Error> {
    let row = client
        .query_one(
            "WITH RECURSIVE run AS ( \
               SELECT sequence FROM ledgers WHERE sequence = $1 \
               UNION ALL \
               SELECT l.sequence FROM ledgers l JOIN run ON l.sequence = run.sequence + 1) \
             SELECT max(sequence) FROM run",
            &[&(from as i32)],
        )
        .await?;
    Ok(row.get::<_, Option<i32>>(0).map(|s| s as u32))
}

/// What a committed batch added.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchSummary {
    /// Ledgers written.
    pub ledgers: usize,
    /// Payment records written.
    pub payments: usize,
    /// The new cursor position.
    pub last_ledger: u32,
    /// Its hash.
    pub last_ledger_hash: [u8; 32],
    /// Its close time.
    pub last_closed_at: i64,
}

/// Commits `batch` (contiguous ledgers, oldest first) as the continuation of live
/// ingestion, on `client`, the session that holds the writer lock, as the holder of
/// lease `epoch`. On the first batch ever, the cursor is created in the same transaction
/// (after the stored ledger just before the batch, if a backfill wrote it, which must
/// then be the batch's predecessor).
///
/// Ledgers the database already holds (written by a backfill, or by another writer that
/// got there first) are checked against their stored hash and skipped, so nothing is
/// ever written twice; the cursor only moves forward.
pub async fn commit_live_batch(
    client: &mut Client,
    dictionaries: &Dictionaries,
    network_passphrase: &str,
    epoch: i64,
    batch: &[LedgerPayments],
) -> Result<BatchSummary, StoreError> {
    let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
        return Ok(BatchSummary::default());
    };
    check_contiguous(batch)?;
    let ids = dictionaries.resolve(client, batch).await?;
    let tx = client.transaction().await?;
    // Lock order: the cursor row first, as every writer does.
    let cursor = tx
        .query_opt(
            "SELECT network_passphrase, last_ledger, last_ledger_hash FROM ingest_cursor FOR UPDATE",
            &[],
        )
        .await?;
    // The lease is read, not locked: its holder renews it while this batch runs, and only
    // a writer holding the advisory lock (so not while this session lives) can bump it.
    let current: Option<i64> = tx
        .query_opt("SELECT epoch FROM writer_lease", &[])
        .await?
        .map(|row| row.get(0));
    if current != Some(epoch) {
        return Err(StoreError::LeaseLost {
            held: epoch,
            current,
        });
    }
    let cursor_ledger = match cursor {
        None => {
            // First batch: the cursor starts just before it. A backfill may have stored
            // that ledger already (a first run before the RPC's retention): it must be
            // the batch's predecessor.
            if let Some(row) = tx
                .query_opt(
                    "SELECT hash FROM ledgers WHERE sequence = $1",
                    &[&(first.ledger.sequence as i32 - 1)],
                )
                .await?
            {
                let hash: Vec<u8> = row.get(0);
                if hash.as_slice() != first.ledger.previous_hash.as_slice() {
                    return Err(StoreError::HashMismatch {
                        ledger: first.ledger.sequence,
                        expected: hex::encode(hash),
                        found: hex::encode(first.ledger.previous_hash),
                    });
                }
            }
            // A concurrent first batch from another writer conflicts on the singleton key.
            tx.execute(
                "INSERT INTO ingest_cursor (network_passphrase, last_ledger, last_ledger_hash) VALUES ($1, $2, $3)",
                &[&network_passphrase, &(first.ledger.sequence as i32 - 1), &first.ledger.previous_hash.as_slice()],
            )
            .await?;
            first.ledger.sequence - 1
        }
        Some(row) => {
            let stored: String = row.get(0);
            if stored != network_passphrase {
                return Err(StoreError::NetworkMismatch {
                    stored,
                    requested: network_passphrase.to_owned(),
                });
            }
            let last_ledger = row.get::<_, i32>(1) as u32;
            let last_hash: Vec<u8> = row.get(2);
            if last_ledger + 1 < first.ledger.sequence {
                return Err(StoreError::Fenced {
                    expected: first.ledger.sequence - 1,
                    found: last_ledger,
                });
            }
            if let Some(next) = batch.iter().find(|l| l.ledger.sequence == last_ledger + 1) {
                if last_hash.as_slice() != next.ledger.previous_hash.as_slice() {
                    return Err(StoreError::HashMismatch {
                        ledger: next.ledger.sequence,
                        expected: hex::encode(&last_hash),
                        found: hex::encode(next.ledger.previous_hash),
                    });
                }
            }
            last_ledger
        }
    };
    let to_write = not_yet_stored(&tx, batch).await?;
    write_rows(&tx, &ids, &to_write).await?;
    if last.ledger.sequence > cursor_ledger {
        tx.execute(
            "UPDATE ingest_cursor SET last_ledger = $1, last_ledger_hash = $2, updated_at = now()",
            &[&(last.ledger.sequence as i32), &last.ledger.hash.as_slice()],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(BatchSummary {
        ledgers: to_write.len(),
        payments: to_write.iter().map(|l| l.payments.len()).sum(),
        last_ledger: last.ledger.sequence.max(cursor_ledger),
        last_ledger_hash: last.ledger.hash,
        last_closed_at: last.ledger.closed_at,
    })
}

/// The ledgers of `batch` the database does not hold yet. Those it holds must carry the
/// same hash, or the chain has forked.
async fn not_yet_stored<'b>(
    tx: &tokio_postgres::Transaction<'_>,
    batch: &'b [LedgerPayments],
) -> Result<Vec<&'b LedgerPayments>, StoreError> {
    let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
        return Ok(Vec::new());
    };
    let rows = tx
        .query(
            "SELECT sequence, hash FROM ledgers WHERE sequence BETWEEN $1 AND $2",
            &[
                &(first.ledger.sequence as i32),
                &(last.ledger.sequence as i32),
            ],
        )
        .await?;
    let stored: HashMap<u32, Vec<u8>> = rows
        .iter()
        .map(|r| (r.get::<_, i32>(0) as u32, r.get(1)))
        .collect();
    let mut out = Vec::with_capacity(batch.len());
    for ledger in batch {
        match stored.get(&ledger.ledger.sequence) {
            None => out.push(ledger),
            Some(hash) if hash.as_slice() == ledger.ledger.hash.as_slice() => {}
            Some(hash) => {
                return Err(StoreError::HashMismatch {
                    ledger: ledger.ledger.sequence,
                    expected: hex::encode(hash),
                    found: hex::encode(ledger.ledger.hash),
                })
            }
        }
    }
    Ok(out)
}

/// Commits one backfill chunk `[start, end]` (its ledgers, oldest first) in one
/// transaction: writes the ledgers not stored yet, checks the hash links with the stored
/// neighbours on both sides, and records the range as completed. That transaction never
/// locks the cursor row. Then, if the chunk is not wholly behind the live cursor, the
/// cursor moves over every ledger now stored contiguously after it, in a second short
/// transaction (so whichever of two neighbouring chunks commits last closes the run).
/// Returns the ledgers written and the payments they held.
pub async fn commit_backfill_chunk(
    client: &mut Client,
    dictionaries: &Dictionaries,
    network_passphrase: &str,
    start: u32,
    end: u32,
    chunk: &[LedgerPayments],
) -> Result<(usize, usize), StoreError> {
    check_contiguous(chunk)?;
    let expected: Vec<u32> = (start..=end).collect();
    let held: Vec<u32> = chunk.iter().map(|l| l.ledger.sequence).collect();
    if held != expected {
        return Err(StoreError::NotContiguous(
            held.first().copied().unwrap_or(start),
        ));
    }
    let ids = dictionaries.resolve(client, chunk).await?;
    // Read without a lock: the cursor only ever moves forward, so a chunk wholly behind
    // it now stays behind it.
    let cursor = read_cursor(&*client).await?;
    if let Some(cursor) = &cursor {
        if cursor.network_passphrase != network_passphrase {
            return Err(StoreError::NetworkMismatch {
                stored: cursor.network_passphrase.clone(),
                requested: network_passphrase.to_owned(),
            });
        }
    }
    let tx = client.transaction().await?;
    // The commit need not wait for its WAL flush. The chunk's rows and its
    // `backfill_ranges` row commit together, so a commit lost in a crash (the last few
    // hundred milliseconds of WAL at most) loses the whole chunk, which a rerun simply
    // writes again. Nothing durable can depend on a lost chunk: WAL is flushed in order,
    // so any later synchronous commit (a live batch that skipped these ledgers, a cursor
    // update) flushes this commit record first.
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await?;
    // Neighbours already stored must link to this chunk.
    if let (Some(first), Some(last)) = (chunk.first(), chunk.last()) {
        if let Some(row) = tx
            .query_opt(
                "SELECT hash FROM ledgers WHERE sequence = $1",
                &[&(start as i32 - 1)],
            )
            .await?
        {
            let hash: Vec<u8> = row.get(0);
            if hash.as_slice() != first.ledger.previous_hash.as_slice() {
                return Err(StoreError::HashMismatch {
                    ledger: start,
                    expected: hex::encode(hash),
                    found: hex::encode(first.ledger.previous_hash),
                });
            }
        }
        if let Some(row) = tx
            .query_opt(
                "SELECT previous_hash FROM ledgers WHERE sequence = $1",
                &[&(end as i32 + 1)],
            )
            .await?
        {
            let previous: Vec<u8> = row.get(0);
            if previous.as_slice() != last.ledger.hash.as_slice() {
                return Err(StoreError::HashMismatch {
                    ledger: end + 1,
                    expected: hex::encode(last.ledger.hash),
                    found: hex::encode(previous),
                });
            }
        }
    }
    let to_write = not_yet_stored(&tx, chunk).await?;
    write_rows(&tx, &ids, &to_write).await?;
    tx.execute(
        "INSERT INTO backfill_ranges (start_ledger, end_ledger) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&(start as i32), &(end as i32)],
    )
    .await?;
    tx.commit().await?;
    if cursor.is_some_and(|c| c.last_ledger < end) {
        advance_cursor_over_stored(client).await?;
    }
    Ok((
        to_write.len(),
        to_write.iter().map(|l| l.payments.len()).sum(),
    ))
}

/// Moves the cursor over the ledgers stored contiguously right after it (filled by a
/// backfill), in a transaction that locks the cursor row and nothing else. Returns the
/// cursor's ledger afterwards, if there is a cursor.
pub async fn advance_cursor_over_stored(
    client: &mut Client,
) -> Result<Option<u32>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let Some(row) = tx
        .query_opt("SELECT last_ledger FROM ingest_cursor FOR UPDATE", &[])
        .await?
    else {
        return Ok(None);
    };
    let last_ledger: i32 = row.get(0);
    let moved = tx
        .query_opt(
            "WITH RECURSIVE run AS ( \
               SELECT sequence, hash FROM ledgers WHERE sequence = $1 + 1 \
               UNION ALL \
               SELECT l.sequence, l.hash FROM ledgers l JOIN run ON l.sequence = run.sequence + 1) \
             UPDATE ingest_cursor SET last_ledger = top.sequence, last_ledger_hash = top.hash, updated_at = now() \
             FROM (SELECT sequence, hash FROM run ORDER BY sequence DESC LIMIT 1) top \
             RETURNING ingest_cursor.last_ledger",
            &[&last_ledger],
        )
        .await?
        .map(|row| row.get::<_, i32>(0));
    tx.commit().await?;
    Ok(Some(moved.unwrap_or(last_ledger) as u32))
}

/// Contiguous missing ranges of ledgers between `from` and `to` (inclusive).
pub async fn gaps(
    client: &impl GenericClient,
    from: u32,
    to: u32,
) -> Result<Vec<(u32, u32)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "WITH present AS ( \
               SELECT sequence FROM ledgers WHERE sequence BETWEEN $1 AND $2 \
               UNION ALL SELECT $1 - 1 UNION ALL SELECT $2 + 1), \
             steps AS (SELECT sequence, lead(sequence) OVER (ORDER BY sequence) AS next FROM present) \
             SELECT sequence + 1, next - 1 FROM steps WHERE next > sequence + 1 ORDER BY sequence",
            &[&(from as i32), &(to as i32)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, i32>(0) as u32, r.get::<_, i32>(1) as u32))
        .collect())
}

fn check_contiguous(batch: &[LedgerPayments]) -> Result<(), StoreError> {
    for pair in batch.windows(2) {
        let (a, b) = (&pair[0].ledger, &pair[1].ledger);
        if b.sequence != a.sequence + 1 || b.previous_hash != a.hash {
            return Err(StoreError::NotContiguous(b.sequence));
        }
    }
    Ok(())
}
