//! Stored rows back into domain payment records, so that the reader renders exactly
//! what the extractor produced (through `shared::horizon`), field for field.
//!
//! Columns are read by position (a name lookup per field was a visible share of an
//! uncached page's CPU): what must hold is that `PAYMENT_COLUMNS` and
//! `TRANSACTION_COLUMNS` list the columns in the order of the `P_*` and `T_*` indices
//! below (the unit test checks the names).
//!
//! A record carries its transaction whole only when the page embeds transactions
//! (`join=transactions`, one `transactions_pkey` probe per record); otherwise it carries
//! the summary a payment resource shows (hash, outcome, close time), read from the
//! payment's own row (`PAYMENT_SUMMARY_COLUMNS`).

use std::sync::Arc;

use shared::address::{AccountId, MuxedAccountId};
use shared::asset::Asset;
use shared::payment::{
    PathPaymentStrictness, PaymentKind, PaymentRecord, PaymentType, TransactionContext,
    TransactionRef, TransactionSummary,
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
        "t.id AS tx_id, t.hash, t.ledger_sequence, t.closed_at, \
    t.successful, t.source_account AS tx_source, t.source_muxed_id AS tx_source_muxed, \
    t.source_sequence, t.fee_account, t.fee_muxed_id, t.inner_hash, t.fee_charged, t.max_fee, \
    t.operation_count, t.memo_type, t.memo, t.min_time, t.max_time"
    };
}

/// The columns of a transaction query (`FROM transactions t`), in the order
/// [`transaction_from_row`] reads them.
pub const TRANSACTION_COLUMNS: &str = transaction_columns!();

/// The payment's own columns, the first `P_TX` of both column lists.
macro_rules! payment_columns {
    () => {
        "p.id, p.type, p.source_account, p.source_muxed_id, \
    p.destination, p.destination_muxed_id, p.asset, p.amount, p.source_asset, \
    p.source_amount, p.amount_limit, p.path, p.details, "
    };
}

/// The columns of a query joined to `transactions t`, in the order `payment_from_row`
/// reads them: the payment, then its whole transaction.
pub const PAYMENT_COLUMNS: &str = concat!(payment_columns!(), transaction_columns!());

/// The columns of a query over `payments p` alone, in the order `payment_from_row` reads
/// them: the payment, then its transaction's summary. A row written before the hash was
/// kept in `payments` (migration V6) and not filled yet takes it from `transactions`:
/// `COALESCE` runs that probe only for such a row.
pub const PAYMENT_SUMMARY_COLUMNS: &str = concat!(
    payment_columns!(),
    "COALESCE(p.transaction_hash, \
    (SELECT h.hash FROM transactions h WHERE h.id = p.transaction_id)) AS transaction_hash, \
    p.successful, p.closed_at"
);

/// A record as the reader reads it back: its transaction whole or summarised.
pub type StoredPayment = PaymentRecord<TransactionRef>;

/// Which transaction columns a row carries after the payment's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionColumns {
    /// `TRANSACTION_COLUMNS` (`PAYMENT_COLUMNS`).
    Whole,
    /// Hash, outcome and close time (`PAYMENT_SUMMARY_COLUMNS`).
    Summary,
}

impl TransactionColumns {
    /// The select list of these columns and the join (if any) a query over `payments p`
    /// needs for them.
    pub fn select(self) -> (&'static str, &'static str) {
        match self {
            Self::Whole => (
                PAYMENT_COLUMNS,
                " JOIN transactions t ON t.id = p.transaction_id",
            ),
            Self::Summary => (PAYMENT_SUMMARY_COLUMNS, ""),
        }
    }
}

// Positions in `PAYMENT_COLUMNS`; its transaction columns follow from `P_TX` on.
const P_ID: usize = 0;
const P_TYPE: usize = 1;
const P_SOURCE: usize = 2;
const P_SOURCE_MUXED: usize = 3;
const P_DESTINATION: usize = 4;
const P_DESTINATION_MUXED: usize = 5;
const P_ASSET: usize = 6;
const P_AMOUNT: usize = 7;
const P_SOURCE_ASSET: usize = 8;
const P_SOURCE_AMOUNT: usize = 9;
const P_AMOUNT_LIMIT: usize = 10;
const P_PATH: usize = 11;
const P_DETAILS: usize = 12;
const P_TX: usize = 13;
// Positions in `TRANSACTION_COLUMNS`.
const T_ID: usize = 0;
const T_HASH: usize = 1;
const T_LEDGER: usize = 2;
const T_CLOSED: usize = 3;
const T_SUCCESSFUL: usize = 4;
const T_SOURCE: usize = 5;
const T_SOURCE_MUXED: usize = 6;
const T_SEQUENCE: usize = 7;
const T_FEE_ACCOUNT: usize = 8;
const T_FEE_MUXED: usize = 9;
const T_INNER_HASH: usize = 10;
const T_FEE_CHARGED: usize = 11;
const T_MAX_FEE: usize = 12;
const T_OPERATIONS: usize = 13;
const T_MEMO_TYPE: usize = 14;
const T_MEMO: usize = 15;
const T_MIN_TIME: usize = 16;
const T_MAX_TIME: usize = 17;
// Positions of the summary, after `P_TX`.
const S_HASH: usize = 0;
const S_SUCCESSFUL: usize = 1;
const S_CLOSED: usize = 2;

/// A row's columns from `base` on.
struct Reader<'r> {
    row: &'r PgRow,
    base: usize,
    id: i64,
}

impl Reader<'_> {
    fn bad(&self, reason: impl Into<String>) -> CorruptRow {
        CorruptRow {
            id: self.id,
            reason: reason.into(),
        }
    }

    fn name(&self, column: usize) -> &str {
        use sqlx::Column as _;
        self.row
            .columns()
            .get(self.base + column)
            .map_or("?", |c| c.name())
    }

    fn get<'a, T>(&'a self, column: usize) -> Result<T, CorruptRow>
    where
        T: sqlx::Decode<'a, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        self.row
            .try_get(self.base + column)
            .map_err(|e| self.bad(format!("{}: {e}", self.name(column))))
    }

    /// The same row from `offset` columns further on.
    fn at(&self, offset: usize) -> Self {
        Reader {
            row: self.row,
            base: self.base + offset,
            id: self.id,
        }
    }

    fn account(&self, column: usize) -> Result<AccountId, CorruptRow> {
        let text: &str = self.get(column)?;
        text.parse()
            .map_err(|_| self.bad(format!("{}: not an account: {text}", self.name(column))))
    }

    fn muxed(&self, column: usize, muxed_column: usize) -> Result<MuxedAccountId, CorruptRow> {
        let account = self.account(column)?;
        let muxed: Option<i64> = self.get(muxed_column)?;
        Ok(MuxedAccountId {
            account,
            // Stored bit for bit: an unsigned 64-bit id in a signed column.
            muxed_id: muxed.map(|m| m as u64),
        })
    }

    fn asset(&self, column: usize) -> Result<Asset, CorruptRow> {
        let text: Option<&str> = self.get(column)?;
        let text = text.ok_or_else(|| self.bad(format!("{} is null", self.name(column))))?;
        Asset::parse_canonical(text).map_err(|_| self.bad(format!("{}: {text}", self.name(column))))
    }

    fn amount(&self, column: usize) -> Result<i64, CorruptRow> {
        let v: Option<i64> = self.get(column)?;
        v.ok_or_else(|| self.bad(format!("{} is null", self.name(column))))
    }

    /// A `timestamptz` as whole seconds since the epoch (decoded here: Postgres's
    /// `extract(epoch ...)` computes a numeric per row).
    fn unix_time(&self, column: usize) -> Result<i64, CorruptRow> {
        let t: time::OffsetDateTime = self.get(column)?;
        Ok(t.unix_timestamp())
    }

    fn hash(&self, column: usize) -> Result<Option<[u8; 32]>, CorruptRow> {
        let bytes: Option<&[u8]> = self.get(column)?;
        bytes
            .map(|b| {
                <[u8; 32]>::try_from(b)
                    .map_err(|_| self.bad(format!("{} is not 32 bytes", self.name(column))))
            })
            .transpose()
    }
}

/// Reads one row of a page query (`PAYMENT_COLUMNS` or `PAYMENT_SUMMARY_COLUMNS`).
pub fn payment_from_row(
    row: &PgRow,
    columns: TransactionColumns,
) -> Result<StoredPayment, CorruptRow> {
    payment_from_row_at(row, 0, columns)
}

/// Reads the payment columns of a row that starts with `base` other columns.
pub fn payment_from_row_at(
    row: &PgRow,
    base: usize,
    columns: TransactionColumns,
) -> Result<StoredPayment, CorruptRow> {
    let id: i64 = row.try_get(base + P_ID).map_err(|e| CorruptRow {
        id: -1,
        reason: e.to_string(),
    })?;
    let r = Reader { row, base, id };
    let tx = r.at(P_TX);
    let transaction = match columns {
        TransactionColumns::Whole => TransactionRef::Whole(Arc::new(transaction_context(&tx)?)),
        TransactionColumns::Summary => TransactionRef::Summary(TransactionSummary {
            hash: tx
                .hash(S_HASH)?
                .ok_or_else(|| tx.bad("transaction_hash is null"))?,
            successful: tx.get(S_SUCCESSFUL)?,
            closed_at: tx.unix_time(S_CLOSED)?,
        }),
    };
    let type_i: i16 = r.get(P_TYPE)?;
    let payment_type =
        PaymentType::from_type_i(type_i).ok_or_else(|| r.bad(format!("type {type_i}")))?;
    let source = r.muxed(P_SOURCE, P_SOURCE_MUXED)?;
    let kind = match payment_type {
        PaymentType::CreateAccount => PaymentKind::CreateAccount {
            account: r.account(P_DESTINATION)?,
            starting_balance: r.amount(P_AMOUNT)?,
        },
        PaymentType::Payment => PaymentKind::Payment {
            to: r.muxed(P_DESTINATION, P_DESTINATION_MUXED)?,
            asset: r.asset(P_ASSET)?,
            amount: r.amount(P_AMOUNT)?,
        },
        PaymentType::PathPaymentStrictReceive | PaymentType::PathPaymentStrictSend => {
            let path: Option<Vec<String>> = r.get(P_PATH)?;
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
                to: r.muxed(P_DESTINATION, P_DESTINATION_MUXED)?,
                asset: r.asset(P_ASSET)?,
                amount: r.amount(P_AMOUNT)?,
                source_asset: r.asset(P_SOURCE_ASSET)?,
                source_amount: r.amount(P_SOURCE_AMOUNT)?,
                limit: r.amount(P_AMOUNT_LIMIT)?,
                path,
            }
        }
        PaymentType::AccountMerge => PaymentKind::AccountMerge {
            into: r.muxed(P_DESTINATION, P_DESTINATION_MUXED)?,
            amount: r.get(P_AMOUNT)?,
        },
        PaymentType::InvokeHostFunction => {
            let details: Option<sqlx::types::Json<InvokeDetails>> = r.get(P_DETAILS)?;
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
    let id: i64 = row.try_get(T_ID).map_err(|e| CorruptRow {
        id: -1,
        reason: e.to_string(),
    })?;
    transaction_context(&Reader { row, base: 0, id })
}

fn transaction_context(r: &Reader<'_>) -> Result<TransactionContext, CorruptRow> {
    let tx_id: i64 = r.get(T_ID)?;
    let memo_type: i16 = r.get(T_MEMO_TYPE)?;
    let memo_bytes: Option<Vec<u8>> = r.get(T_MEMO)?;
    let memo = decode_memo(memo_type, memo_bytes).map_err(|e| r.bad(e.to_string()))?;
    let fee_account: Option<&str> = r.get(T_FEE_ACCOUNT)?;
    let fee_source = match fee_account {
        Some(_) => Some(r.muxed(T_FEE_ACCOUNT, T_FEE_MUXED)?),
        None => None,
    };
    let min_time: Option<i64> = r.get(T_MIN_TIME)?;
    let max_time: Option<i64> = r.get(T_MAX_TIME)?;
    let ledger: i32 = r.get(T_LEDGER)?;
    let operation_count: i32 = r.get(T_OPERATIONS)?;
    Ok(TransactionContext {
        hash: r.hash(T_HASH)?.ok_or_else(|| r.bad("hash is null"))?,
        inner_hash: r.hash(T_INNER_HASH)?,
        id: Toid::from_i64(tx_id).map_err(|e| r.bad(e.to_string()))?,
        successful: r.get(T_SUCCESSFUL)?,
        source: r.muxed(T_SOURCE, T_SOURCE_MUXED)?,
        source_sequence: r.get(T_SEQUENCE)?,
        fee_source,
        fee_charged: r.get(T_FEE_CHARGED)?,
        max_fee: r.get(T_MAX_FEE)?,
        operation_count: operation_count as u32,
        memo,
        time_bounds: min_time.map(|min| (min as u64, max_time.unwrap_or(0) as u64)),
        ledger_seq: ledger as u32,
        closed_at: r.unix_time(T_CLOSED)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The output names of a column list, in order (`x.name` and `x AS name` alike).
    fn names(columns: &str) -> Vec<String> {
        // Split at the commas outside parentheses.
        let mut parts = Vec::new();
        let (mut depth, mut start) = (0i32, 0);
        for (i, c) in columns.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&columns[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&columns[start..]);
        parts
            .into_iter()
            .map(|c| {
                let c = c.trim();
                let name = c.rsplit_once(" AS ").map_or(c, |(_, n)| n);
                name.rsplit_once('.').map_or(name, |(_, n)| n).to_owned()
            })
            .collect()
    }

    #[test]
    fn positions_match_the_column_lists() {
        let payment = names(PAYMENT_COLUMNS);
        let expected = [
            (P_ID, "id"),
            (P_TYPE, "type"),
            (P_SOURCE, "source_account"),
            (P_SOURCE_MUXED, "source_muxed_id"),
            (P_DESTINATION, "destination"),
            (P_DESTINATION_MUXED, "destination_muxed_id"),
            (P_ASSET, "asset"),
            (P_AMOUNT, "amount"),
            (P_SOURCE_ASSET, "source_asset"),
            (P_SOURCE_AMOUNT, "source_amount"),
            (P_AMOUNT_LIMIT, "amount_limit"),
            (P_PATH, "path"),
            (P_DETAILS, "details"),
            (P_TX + T_ID, "tx_id"),
        ];
        for (i, name) in expected {
            assert_eq!(payment[i], name, "PAYMENT_COLUMNS[{i}]");
        }
        let transaction = names(TRANSACTION_COLUMNS);
        assert_eq!(payment[P_TX..], transaction[..], "transaction columns");
        let summary = names(PAYMENT_SUMMARY_COLUMNS);
        assert_eq!(summary[..P_TX], payment[..P_TX], "payment columns");
        let expected = [
            (S_HASH, "transaction_hash"),
            (S_SUCCESSFUL, "successful"),
            (S_CLOSED, "closed_at"),
        ];
        assert_eq!(summary.len(), P_TX + expected.len());
        for (i, name) in expected {
            assert_eq!(
                summary[P_TX + i],
                name,
                "PAYMENT_SUMMARY_COLUMNS[{}]",
                P_TX + i
            );
        }
        let expected = [
            (T_ID, "tx_id"),
            (T_HASH, "hash"),
            (T_LEDGER, "ledger_sequence"),
            (T_CLOSED, "closed_at"),
            (T_SUCCESSFUL, "successful"),
            (T_SOURCE, "tx_source"),
            (T_SOURCE_MUXED, "tx_source_muxed"),
            (T_SEQUENCE, "source_sequence"),
            (T_FEE_ACCOUNT, "fee_account"),
            (T_FEE_MUXED, "fee_muxed_id"),
            (T_INNER_HASH, "inner_hash"),
            (T_FEE_CHARGED, "fee_charged"),
            (T_MAX_FEE, "max_fee"),
            (T_OPERATIONS, "operation_count"),
            (T_MEMO_TYPE, "memo_type"),
            (T_MEMO, "memo"),
            (T_MIN_TIME, "min_time"),
            (T_MAX_TIME, "max_time"),
        ];
        for (i, name) in expected {
            assert_eq!(transaction[i], name, "TRANSACTION_COLUMNS[{i}]");
        }
        assert_eq!(transaction.len(), T_MAX_TIME + 1);
    }
}
