//! The reader's queries. Every page is one keyset range scan over a primary key: the
//! payments table itself for the global, ledger and transaction feeds, or one of the
//! integer-keyed history tables (per account, per asset, per account and asset),
//! joined to payments by id, and to transactions only when a page embeds them (a
//! payment row keeps its transaction's hash, outcome and close time). Ranges are
//! bounded by the source's tip, so a page depends only on (tip, request). Single
//! resources (one payment operation, one transaction) are point lookups bounded by the
//! tip the same way.
//!
//! An account page can be read together with the account's newest activity (the input
//! of its ETag) in one statement (`page_with_activity`): one round trip and one
//! statement per uncached request instead of two. What must hold: the activity read
//! with a page is the same row `account_activity` returns, read in the same snapshot
//! as the page.

use shared::payment::TransactionContext;
use shared::toid::Toid;
use sqlx::{PgPool, Row as _};

use crate::params::{Cursor, Order, PageRequest, Scope};
use crate::problem::Problem;
use crate::records::{
    payment_from_row, payment_from_row_at, transaction_from_row, CorruptRow, StoredPayment,
    TransactionColumns, TRANSACTION_COLUMNS,
};
use crate::sources::{is_timeout, ReadFailure, Source};

/// A query failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A stored row cannot be read back.
    #[error(transparent)]
    Corrupt(#[from] CorruptRow),
}

impl ReadFailure for StoreError {
    fn database(&self) -> Option<&sqlx::Error> {
        match self {
            Self::Database(e) => Some(e),
            Self::Corrupt(_) => None,
        }
    }

    fn into_problem(self) -> Problem {
        match self {
            Self::Database(e) if is_timeout(&e) => {
                Problem::timeout("The query took longer than the statement timeout.")
            }
            e => {
                tracing::error!(error = %e, "query failed");
                Problem::internal()
            }
        }
    }
}

/// A source's database as the queries read it: its pool, and whether its payments keep
/// their transaction's hash yet (until its writer has applied migration V6, pages read
/// the hash from `transactions`).
#[derive(Clone, Copy, Debug)]
pub struct Db<'a> {
    /// The source's pool.
    pub pool: &'a PgPool,
    /// Whether `payments.transaction_hash` exists.
    pub hash_kept: bool,
}

impl<'a> Db<'a> {
    /// The database of `source`, as its last probe found it.
    pub fn of(source: &'a Source) -> Self {
        Self {
            pool: &source.pool,
            hash_kept: source.hash_kept(),
        }
    }

    /// The transaction columns records read here carry: the whole transaction when it
    /// is embedded (or when payments do not keep the hash yet), else the summary.
    fn transaction_columns(self, embed: bool) -> TransactionColumns {
        if embed || !self.hash_kept {
            TransactionColumns::Whole
        } else {
            TransactionColumns::Summary
        }
    }
}

/// An account's newest payment (id, ledger), or None for an account without history.
pub type Activity = Option<(i64, u32)>;

/// What a page query found.
#[derive(Debug)]
pub enum PageResult {
    /// The records, in the requested order.
    Records(Vec<StoredPayment>),
    /// The ledger or transaction does not exist (at this tip).
    Missing(Problem),
}

/// The first ledger closed at or after a time (unix seconds, `$1`): one probe of
/// `ledgers_by_close_time`, as close times grow with the sequence.
pub const FIRST_LEDGER_FROM: &str = "SELECT sequence FROM ledgers \
    WHERE closed_at >= to_timestamp($1) ORDER BY closed_at, sequence LIMIT 1";
/// The last ledger closed before a time (unix seconds, `$1`).
pub const LAST_LEDGER_BEFORE: &str = "SELECT sequence FROM ledgers \
    WHERE closed_at < to_timestamp($1) ORDER BY closed_at DESC, sequence DESC LIMIT 1";

fn ledger_start(seq: u32) -> i64 {
    i64::from(seq) << 32
}

fn count_query() {
    metrics::counter!("reader_db_queries_total").increment(1);
}

/// Reads one page of `request` as of ledger `tip`.
pub async fn page(db: Db<'_>, request: &PageRequest, tip: u32) -> Result<PageResult, StoreError> {
    Ok(page_with_activity(db, request, tip, false).await?.0)
}

/// Reads one page of `request` as of ledger `tip` and, when `activity` is asked for
/// and the scope is an account, the account's newest activity in the same statement.
/// The second value is None when the activity was not read (not asked for, not an
/// account page, or a page known to be empty without a query): the caller reads it
/// with `account_activity` then.
pub async fn page_with_activity(
    db: Db<'_>,
    request: &PageRequest,
    tip: u32,
    activity: bool,
) -> Result<(PageResult, Option<Activity>), StoreError> {
    let pool = db.pool;
    let records = |r: Vec<StoredPayment>| (PageResult::Records(r), None);
    let missing = |p: Problem| (PageResult::Missing(p), None);
    // [lo, hi): ids in range.
    let mut lo: i64 = 0;
    let mut hi: i64 = ledger_start(tip.saturating_add(1));
    match &request.scope {
        Scope::All | Scope::Account(_) => {}
        Scope::Ledger(seq) => {
            if *seq > tip {
                return Ok(missing(Problem::not_found(format!(
                    "Ledger {seq} has not closed yet (the latest is {tip})."
                ))));
            }
            count_query();
            let exists = sqlx::query("SELECT 1 FROM ledgers WHERE sequence = $1")
                .bind(*seq as i32)
                .fetch_optional(pool)
                .await?
                .is_some();
            if !exists {
                return Ok(missing(Problem::not_found(format!(
                    "Ledger {seq} is not in this history."
                ))));
            }
            let (start, end) = Toid::ledger_range(*seq);
            lo = start;
            hi = end;
        }
        Scope::Transaction(hash) => {
            count_query();
            // The hash of a fee bump or of the transaction it wraps (each index-backed).
            let row = sqlx::query(
                "SELECT id, ledger_sequence FROM transactions WHERE hash = $1 \
                 UNION ALL \
                 SELECT id, ledger_sequence FROM transactions \
                 WHERE inner_hash = $1 AND inner_hash IS NOT NULL \
                 LIMIT 1",
            )
            .bind(hash.as_slice())
            .fetch_optional(pool)
            .await?;
            let unknown = || {
                missing(Problem::not_found(format!(
                    "Transaction {} has no payments in this history.",
                    hex::encode(hash)
                )))
            };
            let Some(row) = row else {
                return Ok(unknown());
            };
            let ledger: i32 = row.try_get("ledger_sequence")?;
            if ledger as u32 > tip {
                return Ok(unknown());
            }
            let id: i64 = row.try_get("id")?;
            lo = id;
            hi = id + (1 << 12);
        }
    }
    if let (Some(from), Some(to)) = (request.from_time, request.to_time) {
        if from >= to {
            // A window that closes before it opens holds nothing.
            return Ok(records(Vec::new()));
        }
    }
    if let Some(from) = request.from_time {
        count_query();
        // One probe of `ledgers_by_close_time` (close times grow with the sequence). The
        // `min(sequence)` form walked the primary key and filtered on the close time:
        // 133 ms for a late bound over 250,000 ledgers (docs/benchmarks.md).
        let first: Option<i32> = sqlx::query_scalar(FIRST_LEDGER_FROM)
            .bind(from as f64)
            .fetch_optional(pool)
            .await?;
        match first {
            Some(seq) => lo = lo.max(ledger_start(seq as u32)),
            None => return Ok(records(Vec::new())),
        }
    }
    if let Some(to) = request.to_time {
        count_query();
        let last: Option<i32> = sqlx::query_scalar(LAST_LEDGER_BEFORE)
            .bind(to as f64)
            .fetch_optional(pool)
            .await?;
        match last {
            Some(seq) => hi = hi.min(ledger_start(seq as u32 + 1)),
            None => return Ok(records(Vec::new())),
        }
    }
    match (request.order, request.cursor) {
        (_, Cursor::Start) => {}
        (Order::Asc, Cursor::Now) => lo = lo.max(hi),
        (Order::Desc, Cursor::Now) => {}
        (Order::Asc, Cursor::After(t)) => lo = lo.max(t.saturating_add(1)),
        (Order::Desc, Cursor::After(t)) => hi = hi.min(t),
    }
    if lo >= hi {
        return Ok(records(Vec::new()));
    }
    let account = match &request.scope {
        Scope::Account(a) if activity => a.as_str(),
        _ => return Ok(records(range(db, request, lo, hi).await?)),
    };
    let (rows, activity) = range_with_activity(db, request, account, lo, hi).await?;
    Ok((PageResult::Records(rows), Some(activity)))
}

/// Which transaction columns the records of `request` need.
fn transaction_columns(db: Db<'_>, request: &PageRequest) -> TransactionColumns {
    db.transaction_columns(request.join_transactions)
}

/// The page statement of `request`: records with ids in [$1, $2) matching the
/// request's filters, at most $3 of them in the request's order. `account` is the SQL
/// expression of the account's id (for account scopes); $5 is the asset, $6 the
/// direction codes. `transactions` is joined only when the page embeds them.
fn page_sql(db: Db<'_>, request: &PageRequest, account: &str) -> String {
    let order = match request.order {
        Order::Asc => "ASC",
        Order::Desc => "DESC",
    };
    let is_account = matches!(request.scope, Scope::Account(_));
    let (from, mut conditions, id) = match (is_account, request.asset.is_some()) {
        (true, true) => (
            "account_asset_history x JOIN payments p ON p.id = x.payment_id",
            format!(
                "x.account_id = {account} \
                 AND x.asset_id = (SELECT id FROM assets WHERE asset = $5)"
            ),
            "x.payment_id",
        ),
        (true, false) => (
            "account_payments x JOIN payments p ON p.id = x.payment_id",
            format!("x.account_id = {account}"),
            "x.payment_id",
        ),
        (false, true) => (
            "asset_payments x JOIN payments p ON p.id = x.payment_id",
            "x.asset_id = (SELECT id FROM assets WHERE asset = $5)".to_owned(),
            "x.payment_id",
        ),
        (false, false) => ("payments p", "true".to_owned(), "p.id"),
    };
    // The history tables carry `successful` and `direction` in their primary key's
    // INCLUDE columns: filters are checked in the index.
    let table = if id == "p.id" { "p" } else { "x" };
    if !request.include_failed {
        conditions.push_str(&format!(" AND {table}.successful"));
    }
    if request.direction.is_some() {
        conditions.push_str(" AND x.direction = ANY($6)");
    }
    let (columns, join) = transaction_columns(db, request).select();
    format!(
        "SELECT {columns} FROM {from}{join} \
         WHERE {conditions} AND {id} >= $1 AND {id} < $2 ORDER BY {id} {order} LIMIT $3"
    )
}

/// Binds $1..$6 of a `page_sql` statement.
fn bind_page<'q>(
    sql: &'q str,
    request: &PageRequest,
    account: Option<&'q str>,
    lo: i64,
    hi: i64,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let asset = request.asset.as_ref().map(|a| a.canonical());
    let directions: Vec<i16> = request
        .direction
        .map(|d| d.codes().to_vec())
        .unwrap_or_default();
    sqlx::query(sql)
        .bind(lo)
        .bind(hi)
        .bind(i64::from(request.limit))
        .bind(account)
        .bind(asset)
        .bind(directions)
}

/// Records with ids in [lo, hi) matching the request's filters, one page of them.
pub async fn range(
    db: Db<'_>,
    request: &PageRequest,
    lo: i64,
    hi: i64,
) -> Result<Vec<StoredPayment>, StoreError> {
    let account = match &request.scope {
        Scope::Account(a) => Some(a.as_str()),
        _ => None,
    };
    let sql = page_sql(db, request, "(SELECT id FROM accounts WHERE address = $4)");
    count_query();
    let rows = bind_page(&sql, request, account, lo, hi)
        .fetch_all(db.pool)
        .await?;
    let columns = transaction_columns(db, request);
    rows.iter()
        .map(|row| payment_from_row(row, columns).map_err(StoreError::from))
        .collect()
}

/// `range` for the account `account`, with the account's newest activity read in the
/// same statement: the account's row, its activity (if any) and the page (if any) are
/// joined, so that every returned row carries the activity and an empty page is one
/// row with no payment (no row at all: the account is unknown).
async fn range_with_activity(
    db: Db<'_>,
    request: &PageRequest,
    account: &str,
    lo: i64,
    hi: i64,
) -> Result<(Vec<StoredPayment>, Activity), StoreError> {
    let order = match request.order {
        Order::Asc => "ASC",
        Order::Desc => "DESC",
    };
    let page = page_sql(db, request, "acc.id");
    let sql = format!(
        "SELECT act.last_payment_id AS activity_id, act.last_ledger AS activity_ledger, pg.* \
         FROM accounts acc \
         LEFT JOIN account_last_activity act ON act.account_id = acc.id \
         LEFT JOIN LATERAL ({page}) pg ON true \
         WHERE acc.address = $4 ORDER BY pg.id {order}"
    );
    count_query();
    let rows = bind_page(&sql, request, Some(account), lo, hi)
        .fetch_all(db.pool)
        .await?;
    let columns = transaction_columns(db, request);
    let mut activity = None;
    let mut records = Vec::with_capacity(rows.len());
    // Columns: the activity (2), then the page's columns, all null for an empty page.
    for row in &rows {
        let id: Option<i64> = row.try_get(0)?;
        let ledger: Option<i32> = row.try_get(1)?;
        activity = id.zip(ledger).map(|(id, ledger)| (id, ledger as u32));
        if row.try_get::<Option<i64>, _>(2)?.is_some() {
            records.push(payment_from_row_at(row, 2, columns)?);
        }
    }
    Ok((records, activity))
}

/// An account's newest payment (id, ledger), for per-account ETags.
pub async fn account_activity(pool: &PgPool, account: &str) -> Result<Activity, sqlx::Error> {
    count_query();
    let row = sqlx::query(
        "SELECT l.last_payment_id, l.last_ledger FROM account_last_activity l \
         JOIN accounts a ON a.id = l.account_id WHERE a.address = $1",
    )
    .bind(account)
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok((
            r.try_get("last_payment_id")?,
            r.try_get::<i32, _>("last_ledger")? as u32,
        ))
    })
    .transpose()
}

/// One payment operation by id, as of ledger `tip` (None: no such payment, or an
/// operation of another kind, or not yet closed at `tip`), with its transaction's
/// summary (or the whole transaction, where payments do not keep the hash yet).
pub async fn payment(db: Db<'_>, id: i64, tip: u32) -> Result<Option<StoredPayment>, StoreError> {
    if id >> 32 > i64::from(tip) {
        return Ok(None);
    }
    count_query();
    let columns = db.transaction_columns(false);
    let (select, join) = columns.select();
    let sql = format!("SELECT {select} FROM payments p{join} WHERE p.id = $1");
    let row = sqlx::query(&sql).bind(id).fetch_optional(db.pool).await?;
    row.map(|r| payment_from_row(&r, columns).map_err(StoreError::from))
        .transpose()
}

/// One transaction by its hash, a fee bump's own or that of the transaction it wraps,
/// as of ledger `tip` (None: not in this history, which keeps the transactions that
/// carry payments).
pub async fn transaction(
    pool: &PgPool,
    hash: &[u8; 32],
    tip: u32,
) -> Result<Option<TransactionContext>, StoreError> {
    count_query();
    let sql = format!(
        "(SELECT {TRANSACTION_COLUMNS} FROM transactions t WHERE t.hash = $1) \
         UNION ALL \
         (SELECT {TRANSACTION_COLUMNS} FROM transactions t \
          WHERE t.inner_hash = $1 AND t.inner_hash IS NOT NULL) \
         LIMIT 1"
    );
    let row = sqlx::query(&sql)
        .bind(hash.as_slice())
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let tx = transaction_from_row(&row)?;
    Ok((tx.ledger_seq <= tip).then_some(tx))
}
