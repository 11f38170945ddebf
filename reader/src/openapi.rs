//! The OpenAPI 3.1 document served at `/openapi.json`: paths, responses and body
//! schemas generated from the handlers' annotations and the types below (which describe
//! the JSON the handlers render), then every parameter's schema, example and
//! description set from one table built on `params.rs`'s patterns and bounds.
//!
//! What must hold: the document states exactly what the parsers accept, so that a
//! schema-driven client or fuzzer that sends schema-valid values gets 2xx or 404 and
//! never 400, and one that sends anything else gets a 400 problem document
//! (`reader/tests/schema.rs` runs schemathesis over the served document to prove it).
//! Every parameter a route declares must have an entry in [`parameter`].

use std::sync::LazyLock;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::params::{
    ADDRESS_PATTERN, ASSET_PATTERN, DEFAULT_LIMIT, HASH_PATTERN, MAX_CURSOR, MAX_LEDGER, MAX_LIMIT,
};

/// Examples, all from the recorded pubnet ledgers (`testdata/`).
mod example {
    /// The receiver of a native payment in ledger 30820015.
    pub const ACCOUNT: &str = "GAHK7EEG2WWHVKDNT4CEQFZGKF2LGDSW2IVM4S5DP42RBW3K6BTODB4A";
    /// A transaction of ledger 30820015 with a payment.
    pub const HASH: &str = "51dc35480c3460b69b5b1a5d7650f3104420d3a4e3bed1b4cd72566649cf427a";
    /// The payment of that transaction (its TOID, which is its paging token).
    pub const CURSOR: &str = "132370956487426049";
    /// A recorded ledger (protocol 20, 541 transactions).
    pub const LEDGER: u32 = 51_000_294;
    /// A credit asset paid in ledger 30820015.
    pub const ASSET: &str = "TREEP:GAVBWV24PZ6POVQGQO5UEWGO3TO7ERYXRFFI6V5VH3BMTPDZOHVOFA3G";
    /// Ledger 30820015's close time.
    pub const FROM_TIME: &str = "2020-07-27T21:12:51Z";
    /// A day later.
    pub const TO_TIME: &str = "2020-07-28T21:12:51Z";
}

/// The custom `format` of a strkey that names an account route's subject. A pattern
/// cannot state the CRC-16 checksum; tools that know this format generate valid ones.
pub const ADDRESS_FORMAT: &str = "stellar-address";
/// The custom `format` of the `asset` parameter (its issuer is a checksummed strkey).
pub const ASSET_FORMAT: &str = "stellar-asset";

/// One documented parameter: its description, JSON Schema and an example.
#[derive(Debug)]
pub struct Parameter {
    /// What it selects.
    pub description: String,
    /// The values accepted (query parameters also accept the empty value, which means
    /// the default).
    pub schema: Value,
    /// A value that finds payments in the recorded fixtures.
    pub example: Value,
}

/// The documented form of every request parameter, by name: what `params.rs` accepts.
pub fn parameter(name: &str) -> Option<Parameter> {
    let (description, schema, example): (String, Value, Value) = match name {
        "account_id" => (
            "A `G...` account or a `C...` contract (SEP-23 strkey: 56 base-32 characters, \
             the last two bytes a CRC-16/XMODEM checksum; a mistyped id whose checksum does \
             not match is refused with 400). Muxed `M...` addresses are refused with 400 \
             naming their base account: a muxed account has no history of its own."
                .into(),
            // No length bounds beside the pattern (which implies 56): tools derive
            // boundary-length strings from them without the format, so without a checksum.
            json!({
                "type": "string",
                "format": ADDRESS_FORMAT,
                "pattern": ADDRESS_PATTERN,
                "examples": [example::ACCOUNT],
            }),
            json!(example::ACCOUNT),
        ),
        "sequence" => (
            "A ledger sequence number. A ledger not in this history (or not closed yet) is 404."
                .into(),
            json!({ "type": "integer", "format": "int32", "minimum": 1, "maximum": MAX_LEDGER }),
            json!(example::LEDGER),
        ),
        "id" => (
            "A payment operation's id: its `paging_token`, a positive 64-bit integer. An \
             operation that is not a payment, or not in this history, is 404."
                .into(),
            json!({ "type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_CURSOR }),
            json!(example::CURSOR),
        ),
        "hash" => (
            "A transaction hash, 64 hexadecimal digits (either case): a fee bump's own or \
             that of the transaction it wraps. An unknown transaction is 404."
                .into(),
            json!({ "type": "string", "pattern": HASH_PATTERN, "minLength": 64, "maxLength": 64 }),
            json!(example::HASH),
        ),
        "cursor" => (
            "Paging token to continue after (a record's `paging_token`, a non-negative \
             64-bit integer), or `now` for the chain tip. Empty or absent: from the start \
             of the order."
                .into(),
            json!({ "anyOf": [
                { "type": "string", "enum": ["now"] },
                { "type": "integer", "format": "int64", "minimum": 0, "maximum": MAX_CURSOR },
            ] }),
            json!(example::CURSOR),
        ),
        "order" => (
            "`asc` (oldest first, the default) or `desc`.".into(),
            json!({ "type": "string", "enum": ["asc", "desc"], "default": "asc" }),
            json!("desc"),
        ),
        "limit" => (
            format!("Records per page, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})."),
            json!({
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_LIMIT,
                "default": DEFAULT_LIMIT,
            }),
            json!(MAX_LIMIT),
        ),
        "include_failed" => (
            "Also list payments of failed transactions (default false; a transaction's own \
             route always lists them)."
                .into(),
            json!({ "type": "boolean", "default": false }),
            json!(true),
        ),
        "join" => (
            "`transactions` embeds each record's transaction.".into(),
            json!({ "type": "string", "enum": ["transactions"] }),
            json!("transactions"),
        ),
        "asset" => (
            "Only payments moving this asset: `native` or `CODE:ISSUER` (a code of 1 to 12 \
             letters and digits, a `G...` issuer with a valid checksum). Beyond Horizon."
                .into(),
            json!({
                "type": "string",
                "format": ASSET_FORMAT,
                "pattern": ASSET_PATTERN,
                "examples": ["native", example::ASSET],
            }),
            json!("native"),
        ),
        "direction" => (
            "`incoming` or `outgoing`: only payments the account received or sent (a payment \
             to itself is both). Beyond Horizon."
                .into(),
            json!({ "type": "string", "enum": ["incoming", "outgoing"] }),
            json!("incoming"),
        ),
        "from_time" => (
            "Only payments in ledgers closed at or after this RFC 3339 time. Beyond Horizon."
                .into(),
            json!({ "type": "string", "format": "date-time" }),
            json!(example::FROM_TIME),
        ),
        "to_time" => (
            "Only payments in ledgers closed before this RFC 3339 time; a window that closes \
             before it opens is empty. Beyond Horizon."
                .into(),
            json!({ "type": "string", "format": "date-time" }),
            json!(example::TO_TIME),
        ),
        _ => return None,
    };
    Some(Parameter {
        description,
        schema,
        example,
    })
}

/// Query parameters of every payments route (schemas: [`parameter`]).
#[derive(Debug, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// See [`parameter`].
    pub cursor: Option<String>,
    /// See [`parameter`].
    pub order: Option<String>,
    /// See [`parameter`].
    pub limit: Option<u32>,
    /// See [`parameter`].
    pub include_failed: Option<bool>,
    /// See [`parameter`].
    pub join: Option<String>,
    /// See [`parameter`].
    pub asset: Option<String>,
    /// See [`parameter`].
    pub from_time: Option<String>,
    /// See [`parameter`].
    pub to_time: Option<String>,
}

/// Query parameters of the account route (schemas: [`parameter`]).
#[derive(Debug, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AccountPageParams {
    /// See [`parameter`].
    pub cursor: Option<String>,
    /// See [`parameter`].
    pub order: Option<String>,
    /// See [`parameter`].
    pub limit: Option<u32>,
    /// See [`parameter`].
    pub include_failed: Option<bool>,
    /// See [`parameter`].
    pub join: Option<String>,
    /// See [`parameter`].
    pub asset: Option<String>,
    /// See [`parameter`].
    pub direction: Option<String>,
    /// See [`parameter`].
    pub from_time: Option<String>,
    /// See [`parameter`].
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
    pub path: Option<Vec<Value>>,
    /// account_merge.
    pub into: Option<String>,
    /// invoke_host_function.
    pub function: Option<String>,
    /// invoke_host_function.
    pub asset_balance_changes: Option<Vec<AssetBalanceChange>>,
    /// With `join=transactions`: the transaction.
    #[schema(value_type = Option<Object>)]
    pub transaction: Option<Value>,
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

/// Sets every parameter's description, schema and example from [`parameter`]; query
/// parameters accept the empty value (it means the default, as in Horizon). Returns the
/// names of parameters without an entry.
fn constrain_parameters(doc: &mut Value) -> Vec<String> {
    let mut unknown = Vec::new();
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return unknown;
    };
    for operation in paths.values_mut().filter_map(Value::as_object_mut) {
        for op in operation.values_mut() {
            let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
                continue;
            };
            for p in params.iter_mut().filter_map(Value::as_object_mut) {
                let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
                let Some(documented) = parameter(name) else {
                    unknown.push(name.to_owned());
                    continue;
                };
                let in_query = p.get("in").and_then(Value::as_str) == Some("query");
                p.insert("description".into(), documented.description.into());
                p.insert("schema".into(), documented.schema);
                p.insert("example".into(), documented.example);
                if in_query {
                    p.insert("allowEmptyValue".into(), true.into());
                }
            }
        }
    }
    unknown
}

fn build() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let unknown = constrain_parameters(&mut doc);
    if !unknown.is_empty() {
        tracing::error!(?unknown, "parameters without a documented schema");
    }
    doc
}

static DOCUMENT: LazyLock<(Value, Bytes)> = LazyLock::new(|| {
    let doc = build();
    let bytes = serde_json::to_vec(&doc).unwrap_or_default();
    (doc, Bytes::from(bytes))
});

/// The document served at `/openapi.json`.
pub fn document() -> &'static Value {
    &DOCUMENT.0
}

/// The document, serialised once.
pub fn document_bytes() -> Bytes {
    DOCUMENT.1.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parameter_is_documented_with_constraints() {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("document");
        assert_eq!(constrain_parameters(&mut doc), Vec::<String>::new());
        let mut seen = 0;
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for p in item["get"]["parameters"].as_array().into_iter().flatten() {
                seen += 1;
                let schema = &p["schema"];
                let constrained = ["pattern", "enum", "format", "maximum", "anyOf"]
                    .iter()
                    .any(|k| schema.get(*k).is_some())
                    || schema["type"] == "boolean";
                assert!(constrained, "{path} {}: {schema}", p["name"]);
                assert!(p.get("example").is_some(), "{path} {}", p["name"]);
                assert_eq!(
                    p.get("allowEmptyValue").is_some(),
                    p["in"] == "query",
                    "{path} {}",
                    p["name"]
                );
            }
        }
        assert!(seen > 30, "{seen} parameters");
    }

    #[test]
    fn examples_are_accepted() {
        use crate::params::{parse_account, parse_hash, parse_ledger, PageRequest, Scope};
        assert!(parse_account(example::ACCOUNT).is_ok());
        assert!(parse_hash(example::HASH).is_ok());
        assert!(parse_ledger(&example::LEDGER.to_string()).is_ok());
        let query: Vec<(String, String)> = crate::params::PARAMETERS
            .iter()
            .map(|name| {
                let value = match parameter(name).expect("documented").example {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                ((*name).to_owned(), value)
            })
            .collect();
        let scope = Scope::Account(example::ACCOUNT.to_owned());
        PageRequest::parse(scope, &query, None).expect("the examples together are valid");
    }
}
