//! The OpenAPI 3.1 document, generated from the handlers' annotations and the types
//! below (which describe the JSON the handlers render).

use serde::Serialize;
use utoipa::{IntoParams, OpenApi, ToSchema};

/// Query parameters of every payments route.
#[derive(Debug, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Paging token to continue after, or `now`.
    pub cursor: Option<String>,
    /// `asc` (default) or `desc`.
    pub order: Option<String>,
    /// Records per page, 1 to 200 (default 10).
    pub limit: Option<u32>,
    /// Also list payments of failed transactions (default false).
    pub include_failed: Option<bool>,
    /// `transactions` embeds each record's transaction.
    pub join: Option<String>,
    /// Only payments moving this asset: `native` or `CODE:ISSUER` (beyond Horizon).
    pub asset: Option<String>,
    /// Only payments in ledgers closed at or after this RFC 3339 time (beyond Horizon).
    pub from_time: Option<String>,
    /// Only payments in ledgers closed before this RFC 3339 time (beyond Horizon).
    pub to_time: Option<String>,
}

/// Query parameters of the account route.
#[derive(Debug, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AccountPageParams {
    /// Paging token to continue after, or `now`.
    pub cursor: Option<String>,
    /// `asc` (default) or `desc`.
    pub order: Option<String>,
    /// Records per page, 1 to 200 (default 10).
    pub limit: Option<u32>,
    /// Also list payments of failed transactions (default false).
    pub include_failed: Option<bool>,
    /// `transactions` embeds each record's transaction.
    pub join: Option<String>,
    /// Only payments moving this asset: `native` or `CODE:ISSUER` (beyond Horizon).
    pub asset: Option<String>,
    /// `incoming` or `outgoing`: only payments the account received or sent (beyond Horizon).
    pub direction: Option<String>,
    /// Only payments in ledgers closed at or after this RFC 3339 time (beyond Horizon).
    pub from_time: Option<String>,
    /// Only payments in ledgers closed before this RFC 3339 time (beyond Horizon).
    pub to_time: Option<String>,
}

/// A link.
#[derive(Debug, Serialize, ToSchema)]
pub struct Link {
    /// Target.
    pub href: String,
}

/// A page's links.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageLinks {
    /// This page.
    #[serde(rename = "self")]
    pub this: Link,
    /// The page after this one, in the same order.
    pub next: Link,
    /// The page before this one.
    pub prev: Link,
}

/// An asset movement of a Stellar Asset Contract (invoke_host_function).
#[derive(Debug, Serialize, ToSchema)]
pub struct AssetBalanceChange {
    /// `native`, `credit_alphanum4` or `credit_alphanum12`.
    pub asset_type: String,
    /// Asset code.
    pub asset_code: Option<String>,
    /// Asset issuer.
    pub asset_issuer: Option<String>,
    /// transfer, mint, burn or clawback.
    #[serde(rename = "type")]
    pub kind: String,
    /// Sender.
    pub from: Option<String>,
    /// Receiver.
    pub to: Option<String>,
    /// Amount, seven decimal places.
    pub amount: String,
    /// Muxed id of the receiver.
    pub destination_muxed_id: Option<String>,
}

/// One payment record: Horizon's operation resource for its type. Fields marked
/// "type ..." appear for those types only.
#[derive(Debug, Serialize, ToSchema)]
pub struct Payment {
    /// Operation id (TOID).
    pub id: String,
    /// Paging token (equal to id).
    pub paging_token: String,
    /// Whether the transaction succeeded.
    pub transaction_successful: bool,
    /// Operation source (G...).
    pub source_account: String,
    /// Its M... form, when muxed.
    pub source_account_muxed: Option<String>,
    /// Its muxed id, when muxed.
    pub source_account_muxed_id: Option<String>,
    /// create_account, payment, path_payment_strict_receive, path_payment_strict_send,
    /// account_merge or invoke_host_function.
    #[serde(rename = "type")]
    pub kind: String,
    /// 0, 1, 2, 13, 8 or 24.
    pub type_i: i32,
    /// Ledger close time (RFC 3339).
    pub created_at: String,
    /// Transaction hash.
    pub transaction_hash: String,
    /// type create_account.
    pub starting_balance: Option<String>,
    /// type create_account.
    pub funder: Option<String>,
    /// type create_account (new account) and account_merge (merged account).
    pub account: Option<String>,
    /// type payment and path payments.
    pub from: Option<String>,
    /// type payment and path payments.
    pub to: Option<String>,
    /// type payment, path payments, account_merge.
    pub amount: Option<String>,
    /// type payment and path payments.
    pub asset_type: Option<String>,
    /// type payment and path payments.
    pub asset_code: Option<String>,
    /// type payment and path payments.
    pub asset_issuer: Option<String>,
    /// path payments.
    pub source_amount: Option<String>,
    /// path_payment_strict_receive.
    pub source_max: Option<String>,
    /// path_payment_strict_send.
    pub destination_min: Option<String>,
    /// path payments.
    pub source_asset_type: Option<String>,
    /// path payments: intermediate assets.
    #[schema(value_type = Option<Vec<Object>>)]
    pub path: Option<Vec<serde_json::Value>>,
    /// account_merge.
    pub into: Option<String>,
    /// invoke_host_function.
    pub function: Option<String>,
    /// invoke_host_function.
    pub asset_balance_changes: Option<Vec<AssetBalanceChange>>,
    /// With `join=transactions`: the transaction.
    #[schema(value_type = Option<Object>)]
    pub transaction: Option<serde_json::Value>,
}

/// The records of a page.
#[derive(Debug, Serialize, ToSchema)]
pub struct Embedded {
    /// Payment records.
    pub records: Vec<Payment>,
}

/// A HAL page of payments.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentsPage {
    /// self, next, prev.
    pub _links: PageLinks,
    /// The records.
    pub _embedded: Embedded,
}

/// `GET /`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Root {
    /// The network passphrase.
    pub network_passphrase: Option<String>,
    /// Newest ledger served.
    pub history_latest_ledger: u32,
    /// Its close time.
    pub history_latest_ledger_closed_at: String,
    /// Oldest ledger held.
    pub history_elder_ledger: u32,
    /// Newest ledger known to the writer.
    pub network_latest_ledger: Option<u32>,
    /// This reader's version.
    pub version: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Stellar payments API",
        description = "Horizon-compatible payment history served from read replicas. \
            Every response carries `Latest-Ledger`; pages carry `ETag` and `Cache-Control`; \
            errors are `application/problem+json`. The payments routes stream \
            server-sent events with `Accept: text/event-stream`."
    ),
    paths(
        crate::routes::meta::root,
        crate::routes::payments::all_payments,
        crate::routes::payments::account_payments,
        crate::routes::payments::ledger_payments,
        crate::routes::payments::transaction_payments,
        crate::routes::operations::operation,
        crate::routes::transactions::transaction,
        crate::routes::meta::health,
        crate::routes::meta::ready,
        crate::routes::meta::render_metrics,
        crate::routes::meta::openapi_document,
        crate::routes::meta::constant,
    ),
    components(schemas(crate::problem::ProblemDocument, PaymentsPage, Payment, Root))
)]
struct ApiDoc;

/// The document served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
