//! Writes batches of extracted ledgers to the primary, exactly once.
//!
//! A batch is one Postgres transaction: the cursor row is locked and checked first (it
//! must stand at the ledger just before the batch, with that ledger's hash: the fencing
//! condition), then every row goes in with binary COPY, then the cursor moves to the
//! batch's last ledger. A crash at any point leaves all of the batch or none of it, and a
//! second writer holding a stale view cannot commit over the first.
//!
//! The ids of the batch's addresses and assets are resolved before the transaction
//! starts (see `dictionary`), so no batch transaction ever waits on a dictionary row.

use std::collections::HashMap;

use deadpool_postgres::Object;
use shared::payment::{PaymentKind, Role};
use shared::stored::{encode_memo, DirectionCode, InvokeDetails};
use shared::{LedgerPayments, PaymentRecord};
use time::OffsetDateTime;

use crate::copy::CopyIn;
use crate::dictionary::{BatchIds, Dictionaries, DictionaryError};

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
    #[error("database: {0}")]
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

impl StoreError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Fenced { .. } => "fenced",
            Self::HashMismatch { .. } => "hash_mismatch",
            Self::NetworkMismatch { .. } => "network_mismatch",
            Self::NotContiguous(_) => "not_contiguous",
            Self::Postgres(_) => "postgres",
            Self::Dictionary(_) => "dictionary",
        }
    }
}

/// Reads the cursor, if ingestion ever started.
pub async fn read_cursor(client: &Object) -> Result<Option<Cursor>, tokio_postgres::Error> {
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
/// ingestion. On the first batch ever, the cursor is created in the same transaction.
///
/// Ledgers the database already holds (written by a backfill, or by another writer that
/// got there first) are checked against their stored hash and skipped, so nothing is
/// ever written twice; the cursor only moves forward.
pub async fn commit_live_batch(
    client: &mut Object,
    dictionaries: &Dictionaries,
    network_passphrase: &str,
    batch: &[LedgerPayments],
) -> Result<BatchSummary, StoreError> {
    let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
        return Ok(BatchSummary::default());
    };
    check_contiguous(batch)?;
    let ids = dictionaries.resolve(client, batch).await?;
    let tx = client.transaction().await?;
    let cursor = tx
        .query_opt(
            "SELECT network_passphrase, last_ledger, last_ledger_hash FROM ingest_cursor FOR UPDATE",
            &[],
        )
        .await?;
    let cursor_ledger = match cursor {
        None => {
            // First batch: the cursor starts just before it. A concurrent first batch
            // from another writer conflicts on the singleton key.
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
/// neighbours on both sides, records the range as completed, and, when the chunk closes
/// the gap right after the live cursor, moves the cursor over every ledger now stored
/// contiguously after it. Returns the ledgers written and the payments they held.
pub async fn commit_backfill_chunk(
    client: &mut Object,
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
    let tx = client.transaction().await?;
    // The commit need not wait for its WAL flush. The chunk's rows and its
    // `backfill_ranges` row commit together, so a commit lost in a crash (the last few
    // hundred milliseconds of WAL at most) loses the whole chunk, which a rerun simply
    // writes again. Nothing durable can depend on a lost chunk: WAL is flushed in order,
    // so any later synchronous commit (a live batch that skipped these ledgers, a cursor
    // update) flushes this commit record first.
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await?;
    if let Some(row) = tx
        .query_opt("SELECT network_passphrase FROM ingest_cursor", &[])
        .await?
    {
        let stored: String = row.get(0);
        if stored != network_passphrase {
            return Err(StoreError::NetworkMismatch {
                stored,
                requested: network_passphrase.to_owned(),
            });
        }
    }
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
    // Close a gap after the live cursor: move it over the ledgers now stored after it.
    let cursor = tx
        .query_opt("SELECT last_ledger FROM ingest_cursor FOR UPDATE", &[])
        .await?;
    if let Some(row) = cursor {
        let last_ledger: i32 = row.get(0);
        if last_ledger + 1 >= start as i32 && last_ledger < end as i32 {
            tx.execute(
                "WITH RECURSIVE run AS ( \
                   SELECT sequence, hash FROM ledgers WHERE sequence = $1 + 1 \
                   UNION ALL \
                   SELECT l.sequence, l.hash FROM ledgers l JOIN run ON l.sequence = run.sequence + 1) \
                 UPDATE ingest_cursor SET last_ledger = top.sequence, last_ledger_hash = top.hash, updated_at = now() \
                 FROM (SELECT sequence, hash FROM run ORDER BY sequence DESC LIMIT 1) top",
                &[&last_ledger],
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok((
        to_write.len(),
        to_write.iter().map(|l| l.payments.len()).sum(),
    ))
}

/// Contiguous missing ranges of ledgers between `from` and `to` (inclusive).
pub async fn gaps(
    client: &Object,
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

/// A close time as stored: out-of-range values (never on a real chain) become the epoch.
fn unix_seconds(unix: i64) -> i64 {
    OffsetDateTime::from_unix_timestamp(unix)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .unix_timestamp()
}

/// A muxed id is an unsigned 64-bit value; it is stored bit for bit in a bigint.
fn muxed(id: Option<u64>) -> Option<i64> {
    id.map(|id| id as i64)
}

fn direction(role: Role) -> i16 {
    DirectionCode::from(role).code()
}

/// Writes every row of `batch` inside the caller's transaction; `ids` holds the
/// dictionary ids of every address and asset of the batch.
pub async fn write_rows(
    tx: &tokio_postgres::Transaction<'_>,
    ids: &BatchIds,
    batch: &[&LedgerPayments],
) -> Result<(), StoreError> {
    if batch.is_empty() {
        return Ok(());
    }
    copy_ledgers(tx, batch).await?;
    copy_transactions(tx, batch).await?;
    copy_payments(tx, batch).await?;
    copy_index_rows(tx, ids, batch).await?;
    upsert_activity(tx, ids, batch).await
}

fn account_id(
    ids: &BatchIds,
    address: &shared::payment::ParticipantAddress,
) -> Result<i64, StoreError> {
    ids.account(address).ok_or_else(|| {
        StoreError::Dictionary(format!(
            "no id resolved for address {}",
            address.to_strkey()
        ))
    })
}

fn asset_id(ids: &BatchIds, asset: &shared::asset::Asset) -> Result<i32, StoreError> {
    ids.asset(asset).ok_or_else(|| {
        StoreError::Dictionary(format!("no id resolved for asset {}", asset.canonical()))
    })
}

async fn copy_ledgers(
    tx: &tokio_postgres::Transaction<'_>,
    batch: &[&LedgerPayments],
) -> Result<(), tokio_postgres::Error> {
    let mut copy = CopyIn::start(
        tx,
        "COPY ledgers (sequence, hash, previous_hash, closed_at, protocol_version, transaction_count, \
         successful_transaction_count, operation_count, payment_count) FROM STDIN BINARY",
        9,
    )
    .await?;
    for l in batch {
        copy.row()
            .await?
            .i32(l.ledger.sequence as i32)
            .bytes(&l.ledger.hash)
            .bytes(&l.ledger.previous_hash)
            .timestamp(unix_seconds(l.ledger.closed_at))
            .i32(l.ledger.protocol_version as i32)
            .i32(l.stats.transactions as i32)
            .i32(l.stats.successful_transactions as i32)
            .i32(l.stats.operations as i32)
            .i32(l.payments.len() as i32);
    }
    copy.finish().await?;
    Ok(())
}

async fn copy_transactions(
    tx: &tokio_postgres::Transaction<'_>,
    batch: &[&LedgerPayments],
) -> Result<(), tokio_postgres::Error> {
    let mut copy = CopyIn::start(
        tx,
        "COPY transactions (id, hash, ledger_sequence, closed_at, successful, source_account, source_muxed_id, \
         source_sequence, fee_account, fee_muxed_id, inner_hash, fee_charged, max_fee, operation_count, memo_type, \
         memo, min_time, max_time) FROM STDIN BINARY",
        18,
    )
    .await?;
    for t in batch.iter().flat_map(|l| l.transactions.iter()) {
        let (memo_type, memo) = encode_memo(&t.memo);
        let source = t.source.account.to_strkey();
        let fee_account = t.fee_source.map(|f| f.account.to_strkey());
        copy.row()
            .await?
            .i64(t.id.to_i64())
            .bytes(&t.hash)
            .i32(t.ledger_seq as i32)
            .timestamp(unix_seconds(t.closed_at))
            .bool(t.successful)
            .text(&source)
            .opt_i64(muxed(t.source.muxed_id))
            .i64(t.source_sequence)
            .opt_text(fee_account.as_deref())
            .opt_i64(t.fee_source.and_then(|f| muxed(f.muxed_id)))
            .opt_bytes(t.inner_hash.as_ref().map(|h| h.as_slice()))
            .i64(t.fee_charged)
            .i64(t.max_fee)
            .i32(t.operation_count as i32)
            .i16(memo_type)
            .opt_bytes(memo.as_deref())
            .opt_i64(t.time_bounds.map(|(min, _)| min as i64))
            .opt_i64(t.time_bounds.map(|(_, max)| max as i64));
    }
    copy.finish().await?;
    Ok(())
}

/// The typed columns of a payment row, shared with tests and the reader's decoding.
#[derive(Debug, Default)]
pub struct PaymentColumns {
    /// Destination account.
    pub destination: Option<String>,
    /// Its muxed id.
    pub destination_muxed_id: Option<i64>,
    /// Asset received.
    pub asset: Option<String>,
    /// Amount received (or starting balance, or merged balance).
    pub amount: Option<i64>,
    /// Path payments' source asset.
    pub source_asset: Option<String>,
    /// Path payments' source amount.
    pub source_amount: Option<i64>,
    /// `source_max` or `destination_min`.
    pub amount_limit: Option<i64>,
    /// Path payments' path.
    pub path: Option<Vec<String>>,
    /// invoke_host_function details.
    pub details: Option<InvokeDetails>,
}

/// Splits a record's kind into the payment table's columns.
pub fn payment_columns(record: &PaymentRecord) -> PaymentColumns {
    match &record.kind {
        PaymentKind::CreateAccount {
            account,
            starting_balance,
        } => PaymentColumns {
            destination: Some(account.to_strkey()),
            asset: Some("native".into()),
            amount: Some(*starting_balance),
            ..Default::default()
        },
        PaymentKind::Payment { to, asset, amount } => PaymentColumns {
            destination: Some(to.account.to_strkey()),
            destination_muxed_id: muxed(to.muxed_id),
            asset: Some(asset.canonical()),
            amount: Some(*amount),
            ..Default::default()
        },
        PaymentKind::PathPayment {
            to,
            asset,
            amount,
            source_asset,
            source_amount,
            limit,
            path,
            ..
        } => PaymentColumns {
            destination: Some(to.account.to_strkey()),
            destination_muxed_id: muxed(to.muxed_id),
            asset: Some(asset.canonical()),
            amount: Some(*amount),
            source_asset: Some(source_asset.canonical()),
            source_amount: Some(*source_amount),
            amount_limit: Some(*limit),
            path: Some(path.iter().map(|a| a.canonical()).collect()),
            ..Default::default()
        },
        PaymentKind::AccountMerge { into, amount } => PaymentColumns {
            destination: Some(into.account.to_strkey()),
            destination_muxed_id: muxed(into.muxed_id),
            asset: Some("native".into()),
            amount: *amount,
            ..Default::default()
        },
        PaymentKind::InvokeHostFunction {
            function,
            balance_changes,
        } => PaymentColumns {
            details: Some(InvokeDetails::new(function, balance_changes)),
            ..Default::default()
        },
    }
}

async fn copy_payments(
    tx: &tokio_postgres::Transaction<'_>,
    batch: &[&LedgerPayments],
) -> Result<(), tokio_postgres::Error> {
    let mut copy = CopyIn::start(
        tx,
        "COPY payments (id, transaction_id, ledger_sequence, closed_at, type, successful, source_account, \
         source_muxed_id, destination, destination_muxed_id, asset, amount, source_asset, source_amount, \
         amount_limit, path, details) FROM STDIN BINARY",
        17,
    )
    .await?;
    for p in batch.iter().flat_map(|l| l.payments.iter()) {
        let c = payment_columns(p);
        let source = p.source.account.to_strkey();
        copy.row()
            .await?
            .i64(p.id.to_i64())
            .i64(p.transaction.id.to_i64())
            .i32(p.transaction.ledger_seq as i32)
            .timestamp(unix_seconds(p.transaction.closed_at))
            .i16(p.payment_type().type_i())
            .bool(p.successful())
            .text(&source)
            .opt_i64(muxed(p.source.muxed_id))
            .opt_text(c.destination.as_deref())
            .opt_i64(c.destination_muxed_id)
            .opt_text(c.asset.as_deref())
            .opt_i64(c.amount)
            .opt_text(c.source_asset.as_deref())
            .opt_i64(c.source_amount)
            .opt_i64(c.amount_limit)
            .opt_text_array(c.path.as_deref())
            .opt_jsonb(c.details.as_ref());
    }
    copy.finish().await?;
    Ok(())
}

/// History rows of every record: per account, per asset, per (account, asset).
async fn copy_index_rows(
    tx: &tokio_postgres::Transaction<'_>,
    ids: &BatchIds,
    batch: &[&LedgerPayments],
) -> Result<(), StoreError> {
    // (account, payment, direction, successful), (asset, payment, successful),
    // (account, asset, payment, direction, successful)
    let mut accounts: Vec<(i64, i64, i16, bool)> = Vec::new();
    let mut assets: Vec<(i32, i64, bool)> = Vec::new();
    let mut account_assets: Vec<(i64, i32, i64, i16, bool)> = Vec::new();
    let mut record_assets: Vec<i32> = Vec::with_capacity(4);
    for p in batch.iter().flat_map(|l| l.payments.iter()) {
        let id = p.id.to_i64();
        let ok = p.successful();
        record_assets.clear();
        for asset in p.assets() {
            record_assets.push(asset_id(ids, &asset)?);
        }
        for &asset in &record_assets {
            assets.push((asset, id, ok));
        }
        for participant in p.participants() {
            let account = account_id(ids, &participant.address)?;
            let dir = direction(participant.role);
            for &asset in &record_assets {
                account_assets.push((account, asset, id, dir, ok));
            }
            accounts.push((account, id, dir, ok));
        }
    }
    // In index order: consecutive insertions land in the same, cached leaf pages.
    accounts.sort_unstable();
    assets.sort_unstable();
    account_assets.sort_unstable();
    let mut copy = CopyIn::start(
        tx,
        "COPY account_payments (account_id, payment_id, direction, successful) FROM STDIN BINARY",
        4,
    )
    .await?;
    for (account, id, dir, ok) in accounts {
        copy.row().await?.i64(account).i64(id).i16(dir).bool(ok);
    }
    copy.finish().await?;
    let mut copy = CopyIn::start(
        tx,
        "COPY asset_payments (asset_id, payment_id, successful) FROM STDIN BINARY",
        3,
    )
    .await?;
    for (asset, id, ok) in assets {
        copy.row().await?.i32(asset).i64(id).bool(ok);
    }
    copy.finish().await?;
    let mut copy = CopyIn::start(
        tx,
        "COPY account_asset_history (account_id, asset_id, payment_id, direction, successful) FROM STDIN BINARY",
        5,
    )
    .await?;
    for (account, asset, id, dir, ok) in account_assets {
        copy.row()
            .await?
            .i64(account)
            .i32(asset)
            .i64(id)
            .i16(dir)
            .bool(ok);
    }
    copy.finish().await?;
    Ok(())
}

/// Moves each touched address's last activity forward (never back: backfill of older
/// ledgers must not regress it).
async fn upsert_activity(
    tx: &tokio_postgres::Transaction<'_>,
    ids: &BatchIds,
    batch: &[&LedgerPayments],
) -> Result<(), StoreError> {
    let mut newest: HashMap<i64, (i64, i32)> = HashMap::new();
    for p in batch.iter().flat_map(|l| l.payments.iter()) {
        for participant in p.participants() {
            let entry = newest
                .entry(account_id(ids, &participant.address)?)
                .or_insert((i64::MIN, 0));
            if p.id.to_i64() > entry.0 {
                *entry = (p.id.to_i64(), p.transaction.ledger_seq as i32);
            }
        }
    }
    if newest.is_empty() {
        return Ok(());
    }
    // A stable order keeps concurrent writers (live and backfill) from deadlocking on
    // the rows they both touch.
    let mut newest: Vec<_> = newest.into_iter().collect();
    newest.sort_unstable_by_key(|(account, _)| *account);
    let mut accounts = Vec::with_capacity(newest.len());
    let mut payment_ids = Vec::with_capacity(newest.len());
    let mut ledgers = Vec::with_capacity(newest.len());
    for (account, (id, ledger)) in newest {
        accounts.push(account);
        payment_ids.push(id);
        ledgers.push(ledger);
    }
    tx.execute(
        "INSERT INTO account_last_activity (account_id, last_payment_id, last_ledger) \
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::int[]) \
         ON CONFLICT (account_id) DO UPDATE SET \
           last_payment_id = GREATEST(account_last_activity.last_payment_id, EXCLUDED.last_payment_id), \
           last_ledger = GREATEST(account_last_activity.last_ledger, EXCLUDED.last_ledger)",
        &[&accounts, &payment_ids, &ledgers],
    )
    .await?;
    Ok(())
}
