//! The row encodings: how one batch of extracted ledgers becomes rows of `ledgers`,
//! `transactions`, `payments`, the history tables and `account_last_activity`, written
//! with binary COPY inside a transaction the caller owns (see `store` for the commit
//! protocol around it).
//!
//! What must hold: every history row names the dictionary ids resolved for its batch
//! (a missing id is an error, never a skipped row); rows go in sorted by their index key
//! so consecutive insertions land in the same leaf pages; `account_last_activity` only
//! moves forward and is upserted in account order, the lock order every writer shares.

use std::collections::HashMap;

use shared::payment::{PaymentKind, Role};
use shared::stored::{encode_memo, DirectionCode, InvokeDetails};
use shared::{LedgerPayments, PaymentRecord};
use time::OffsetDateTime;

use crate::copy::CopyIn;
use crate::dictionary::BatchIds;

/// Why rows could not be written.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    /// Postgres refused a row or the COPY failed.
    #[error("database: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// A row names an address or asset whose id was not resolved for the batch.
    #[error("dictionary: {0}")]
    MissingId(String),
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
) -> Result<(), RowError> {
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
) -> Result<i64, RowError> {
    ids.account(address).ok_or_else(|| {
        RowError::MissingId(format!(
            "no id resolved for address {}",
            address.to_strkey()
        ))
    })
}

fn asset_id(ids: &BatchIds, asset: &shared::asset::Asset) -> Result<i32, RowError> {
    ids.asset(asset).ok_or_else(|| {
        RowError::MissingId(format!("no id resolved for asset {}", asset.canonical()))
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
         amount_limit, path, details, transaction_hash) FROM STDIN BINARY",
        18,
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
            .opt_jsonb(c.details.as_ref())
            .bytes(&p.transaction.hash);
    }
    copy.finish().await?;
    Ok(())
}

/// History rows of every record: per account, per asset, per (account, asset).
async fn copy_index_rows(
    tx: &tokio_postgres::Transaction<'_>,
    ids: &BatchIds,
    batch: &[&LedgerPayments],
) -> Result<(), RowError> {
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
) -> Result<(), RowError> {
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
