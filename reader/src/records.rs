//! Stored rows back into domain payment records, so that the reader renders exactly
//! what the extractor produced (through `shared::horizon`), field for field.

use std::sync::Arc;

use shared::address::{AccountId, MuxedAccountId};
use shared::asset::Asset;
use shared::payment::{
    PathPaymentStrictness, PaymentKind, PaymentRecord, PaymentType, TransactionContext,
};
use shared::stored::{decode_memo, InvokeDetails};
use shared::toid::Toid;
use sqlx::postgres::PgRow;
use sqlx::Row as _;

/// A row that cannot be read back: the database holds something the writer never
/// writes. Reported as a 500 and logged with the payment id.
#[derive(Debug, thiserror::Error)]
#[error("payment {id}: stored row is inconsistent: {reason}")]
pub struct CorruptRow {
    /// The payment id.
    pub id: i64,
    /// What is wrong.
    pub reason: String,
}

/// The transaction columns of a query joined to `transactions t`, as
/// `transaction_from_row` reads them.
macro_rules! transaction_columns {
    () => {
        "t.id AS tx_id, t.hash, t.ledger_sequence, extract(epoch FROM t.closed_at)::bigint AS closed_unix, \
    t.successful, t.source_account AS tx_source, t.source_muxed_id AS tx_source_muxed, \
    t.source_sequence, t.fee_account, t.fee_muxed_id, t.inner_hash, t.fee_charged, t.max_fee, \
    t.operation_count, t.memo_type, t.memo, t.min_time, t.max_time"
    };
}

/// The columns of a transaction query (`FROM transactions t`), in the order
/// [`transaction_from_row`] reads them.
pub const TRANSACTION_COLUMNS: &str = transaction_columns!();

/// The columns every page query selects, in the order `payment_from_row` reads them.
pub const PAYMENT_COLUMNS: &str = concat!(
    "p.id, p.type, p.source_account, p.source_muxed_id, \
    p.destination, p.destination_muxed_id, p.asset, p.amount, p.source_asset, \
    p.source_amount, p.amount_limit, p.path, p.details, ",
    transaction_columns!()
);

struct Reader<'r> {
    row: &'r PgRow,
    id: i64,
}

impl Reader<'_> {
    fn bad(&self, reason: impl Into<String>) -> CorruptRow {
        CorruptRow {
            id: self.id,
            reason: reason.into(),
        }
    }

    fn get<'a, T>(&'a self, column: &str) -> Result<T, CorruptRow>
    where
        T: sqlx::Decode<'a, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        self.row
            .try_get(column)
            .map_err(|e| self.bad(format!("{column}: {e}")))
    }

    fn account(&self, column: &str) -> Result<AccountId, CorruptRow> {
        let text: String = self.get(column)?;
        text.parse()
            .map_err(|_| self.bad(format!("{column}: not an account: {text}")))
    }

    fn muxed(&self, column: &str, muxed_column: &str) -> Result<MuxedAccountId, CorruptRow> {
        let account = self.account(column)?;
        let muxed: Option<i64> = self.get(muxed_column)?;
        Ok(MuxedAccountId {
            account,
            // Stored bit for bit: an unsigned 64-bit id in a signed column.
            muxed_id: muxed.map(|m| m as u64),
        })
    }

    fn asset(&self, column: &str) -> Result<Asset, CorruptRow> {
        let text: Option<String> = self.get(column)?;
        let text = text.ok_or_else(|| self.bad(format!("{column} is null")))?;
        Asset::parse_canonical(&text).map_err(|_| self.bad(format!("{column}: {text}")))
    }

    fn amount(&self, column: &str) -> Result<i64, CorruptRow> {
        let v: Option<i64> = self.get(column)?;
        v.ok_or_else(|| self.bad(format!("{column} is null")))
    }

    fn hash(&self, column: &str) -> Result<Option<[u8; 32]>, CorruptRow> {
        let bytes: Option<Vec<u8>> = self.get(column)?;
        bytes
            .map(|b| {
                <[u8; 32]>::try_from(b.as_slice())
                    .map_err(|_| self.bad(format!("{column} is not 32 bytes")))
            })
            .transpose()
    }
}

/// Reads one row of a page query (`PAYMENT_COLUMNS`).
pub fn payment_from_row(row: &PgRow) -> Result<PaymentRecord, CorruptRow> {
    let id: i64 = row.try_get("id").map_err(|e| CorruptRow {
        id: -1,
        reason: e.to_string(),
    })?;
    let r = Reader { row, id };
    let transaction = Arc::new(transaction_context(&r)?);
    let type_i: i16 = r.get("type")?;
    let payment_type =
        PaymentType::from_type_i(type_i).ok_or_else(|| r.bad(format!("type {type_i}")))?;
    let source = r.muxed("source_account", "source_muxed_id")?;
    let kind = match payment_type {
        PaymentType::CreateAccount => PaymentKind::CreateAccount {
            account: r.account("destination")?,
            starting_balance: r.amount("amount")?,
        },
        PaymentType::Payment => PaymentKind::Payment {
            to: r.muxed("destination", "destination_muxed_id")?,
            asset: r.asset("asset")?,
            amount: r.amount("amount")?,
        },
        PaymentType::PathPaymentStrictReceive | PaymentType::PathPaymentStrictSend => {
            let path: Option<Vec<String>> = r.get("path")?;
            let path = path
                .unwrap_or_default()
                .iter()
                .map(|a| Asset::parse_canonical(a).map_err(|_| r.bad(format!("path asset {a}"))))
                .collect::<Result<_, _>>()?;
            PaymentKind::PathPayment {
                strict: if payment_type == PaymentType::PathPaymentStrictReceive {
                    PathPaymentStrictness::StrictReceive
                } else {
                    PathPaymentStrictness::StrictSend
                },
                to: r.muxed("destination", "destination_muxed_id")?,
                asset: r.asset("asset")?,
                amount: r.amount("amount")?,
                source_asset: r.asset("source_asset")?,
                source_amount: r.amount("source_amount")?,
                limit: r.amount("amount_limit")?,
                path,
            }
        }
        PaymentType::AccountMerge => PaymentKind::AccountMerge {
            into: r.muxed("destination", "destination_muxed_id")?,
            amount: r.get("amount")?,
        },
        PaymentType::InvokeHostFunction => {
            let details: Option<sqlx::types::Json<InvokeDetails>> = r.get("details")?;
            let details = details.ok_or_else(|| r.bad("details is null"))?;
            details.0.into_kind().map_err(|e| r.bad(e.to_string()))?
        }
    };
    Ok(PaymentRecord {
        id: Toid::from_i64(id).map_err(|e| r.bad(e.to_string()))?,
        source,
        kind,
        transaction,
    })
}

/// Reads one row of a transaction query (`TRANSACTION_COLUMNS`).
pub fn transaction_from_row(row: &PgRow) -> Result<TransactionContext, CorruptRow> {
    let id: i64 = row.try_get("tx_id").map_err(|e| CorruptRow {
        id: -1,
        reason: e.to_string(),
    })?;
    transaction_context(&Reader { row, id })
}

fn transaction_context(r: &Reader<'_>) -> Result<TransactionContext, CorruptRow> {
    let tx_id: i64 = r.get("tx_id")?;
    let memo_type: i16 = r.get("memo_type")?;
    let memo_bytes: Option<Vec<u8>> = r.get("memo")?;
    let memo = decode_memo(memo_type, memo_bytes).map_err(|e| r.bad(e.to_string()))?;
    let fee_account: Option<String> = r.get("fee_account")?;
    let fee_source = match fee_account {
        Some(_) => Some(r.muxed("fee_account", "fee_muxed_id")?),
        None => None,
    };
    let min_time: Option<i64> = r.get("min_time")?;
    let max_time: Option<i64> = r.get("max_time")?;
    let ledger: i32 = r.get("ledger_sequence")?;
    let operation_count: i32 = r.get("operation_count")?;
    Ok(TransactionContext {
        hash: r.hash("hash")?.ok_or_else(|| r.bad("hash is null"))?,
        inner_hash: r.hash("inner_hash")?,
        id: Toid::from_i64(tx_id).map_err(|e| r.bad(e.to_string()))?,
        successful: r.get("successful")?,
        source: r.muxed("tx_source", "tx_source_muxed")?,
        source_sequence: r.get("source_sequence")?,
        fee_source,
        fee_charged: r.get("fee_charged")?,
        max_fee: r.get("max_fee")?,
        operation_count: operation_count as u32,
        memo,
        time_bounds: min_time.map(|min| (min as u64, max_time.unwrap_or(0) as u64)),
        ledger_seq: ledger as u32,
        closed_at: r.get("closed_unix")?,
    })
}
