//! JSON-RPC 2.0 as Stellar RPC speaks it: the envelope (single and batch requests,
//! notifications, standard error codes) and the methods `getHealth`, `getNetwork`,
//! `getLatestLedger` and `getLedgers`.
//!
//! Field names, JSON types, validation order, error codes and error messages follow
//! `stellar/stellar-rpc` (`cmd/stellar-rpc/internal/methods/get_ledgers.go` and friends)
//! and `go-stellar-sdk/protocols/rpc`, so a client tested against the simulator behaves
//! the same against the real service. Notable real behaviours kept on purpose:
//! `getLedgers` with a cursor that is already the latest ledger is an *error* (-32602,
//! "cursor ('N') must be between ..."), not an empty page; `startLedger` outside the
//! served window is -32600; the default page size is 50 and the maximum 200.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::state::State;

/// `getLedgers` page size when the request gives none (stellar-rpc's default).
pub const DEFAULT_LEDGERS_LIMIT: u64 = 50;
/// Largest `getLedgers` page size (stellar-rpc's default maximum).
pub const MAX_LEDGERS_LIMIT: u64 = 200;
/// Most requests accepted in one JSON-RPC batch.
pub const MAX_BATCH: usize = 100;

/// JSON-RPC error codes.
pub mod code {
    /// The body is not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Not a valid request object, or (Stellar RPC) a request outside the served range.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Parameters of the wrong shape or value.
    pub const INVALID_PARAMS: i64 = -32602;
    /// Server-side failure.
    pub const INTERNAL_ERROR: i64 = -32603;
}

/// A JSON-RPC error object.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct RpcError {
    pub(crate) code: i64,
    pub(crate) message: String,
}

impl RpcError {
    pub(crate) fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The outcome of one HTTP body.
#[derive(Debug)]
pub(crate) enum Reply {
    /// A JSON body to send with HTTP 200.
    Json(Vec<u8>),
    /// Only notifications: nothing to answer (HTTP 204).
    Nothing,
}

/// What a single request produced: `None` for a notification.
type Answer = Option<Vec<u8>>;

/// Handles one HTTP request body (single request or batch). `fail` makes every request
/// in it answer the given error (fault injection) after the envelope is validated.
pub(crate) fn handle_body(state: &State, body: &[u8], fail: Option<&RpcError>) -> Reply {
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(error) => {
            let error = RpcError::new(code::PARSE_ERROR, format!("parse error: {error}"));
            return Reply::Json(envelope(&Value::Null, Err(&error)));
        }
    };
    match parsed {
        Value::Array(requests) => {
            if requests.is_empty() || requests.len() > MAX_BATCH {
                let error = RpcError::new(
                    code::INVALID_REQUEST,
                    format!("a batch must hold 1 to {MAX_BATCH} requests"),
                );
                return Reply::Json(envelope(&Value::Null, Err(&error)));
            }
            let answers: Vec<Vec<u8>> = requests
                .iter()
                .filter_map(|request| handle_one(state, request, fail))
                .collect();
            if answers.is_empty() {
                return Reply::Nothing;
            }
            let mut out =
                Vec::with_capacity(answers.iter().map(|a| a.len() + 1).sum::<usize>() + 2);
            out.push(b'[');
            for (i, answer) in answers.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(answer);
            }
            out.push(b']');
            Reply::Json(out)
        }
        request => match handle_one(state, &request, fail) {
            Some(answer) => Reply::Json(answer),
            None => Reply::Nothing,
        },
    }
}

fn handle_one(state: &State, request: &Value, fail: Option<&RpcError>) -> Answer {
    let Value::Object(object) = request else {
        let error = RpcError::new(code::INVALID_REQUEST, "request must be a JSON object");
        return Some(envelope(&Value::Null, Err(&error)));
    };
    let id = object.get("id");
    let id_or_null = id.unwrap_or(&Value::Null);
    let invalid = |message: &str| {
        let error = RpcError::new(code::INVALID_REQUEST, message);
        Some(envelope(id_or_null, Err(&error)))
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid("invalid version marker: the \"jsonrpc\" member must be \"2.0\"");
    }
    if !matches!(
        id,
        None | Some(Value::Null | Value::Number(_) | Value::String(_))
    ) {
        return invalid("invalid request ID");
    }
    let Some(method) = object.get("method").and_then(Value::as_str) else {
        return invalid("empty or missing method name");
    };
    let params = object.get("params").unwrap_or(&Value::Null);
    let result = match fail {
        Some(error) => Err(error.clone()),
        None => call(state, method, params),
    };
    if let Err(error) = &result {
        tracing::debug!(method, code = error.code, message = %error.message, "rpc error");
    }
    // A request without an id is a notification: executed, never answered.
    let id = id?;
    Some(match &result {
        Ok(bytes) => envelope_raw(id, bytes),
        Err(error) => envelope(id, Err(error)),
    })
}

/// Serialises `{"jsonrpc":"2.0","id":..,"error":..}` (or a result, already serialised).
fn envelope(id: &Value, result: Result<&[u8], &RpcError>) -> Vec<u8> {
    match result {
        Ok(bytes) => envelope_raw(id, bytes),
        Err(error) => {
            #[derive(Serialize)]
            struct ErrorEnvelope<'a> {
                jsonrpc: &'static str,
                id: &'a Value,
                error: &'a RpcError,
            }
            serde_json::to_vec(&ErrorEnvelope {
                jsonrpc: "2.0",
                id,
                error,
            })
            .unwrap_or_else(|_| {
                br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"internal error"}}"#
                    .to_vec()
            })
        }
    }
}

fn envelope_raw(id: &Value, result: &[u8]) -> Vec<u8> {
    let id = serde_json::to_vec(id).unwrap_or_else(|_| b"null".to_vec());
    let mut out = Vec::with_capacity(result.len() + id.len() + 40);
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    out.extend_from_slice(&id);
    out.extend_from_slice(br#","result":"#);
    out.extend_from_slice(result);
    out.push(b'}');
    out
}

/// Runs one method; `Ok` holds the serialised `result` member.
fn call(state: &State, method: &str, params: &Value) -> Result<Vec<u8>, RpcError> {
    match method {
        "getHealth" => get_health(state),
        "getNetwork" => get_network(state),
        "getLatestLedger" => get_latest_ledger(state),
        "getLedgers" => get_ledgers(state, params),
        _ => Err(RpcError::new(
            code::METHOD_NOT_FOUND,
            format!("no such method {method:?}"),
        )),
    }
}

fn to_json(value: &impl Serialize) -> Result<Vec<u8>, RpcError> {
    serde_json::to_vec(value)
        .map_err(|error| RpcError::new(code::INTERNAL_ERROR, error.to_string()))
}

fn get_health(state: &State) -> Result<Vec<u8>, RpcError> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Health {
        status: &'static str,
        latest_ledger: u32,
        latest_ledger_close_time: i64,
        oldest_ledger: u32,
        oldest_ledger_close_time: i64,
        ledger_retention_window: u32,
    }
    let window = state.window();
    let (latest, oldest) = (state.ledger(window.latest), state.ledger(window.oldest));
    let retention = state
        .faults()
        .retention
        .unwrap_or_else(|| u32::try_from(state.ledgers.len()).unwrap_or(u32::MAX));
    to_json(&Health {
        status: "healthy",
        latest_ledger: latest.sequence,
        latest_ledger_close_time: latest.close_time_i64(),
        oldest_ledger: oldest.sequence,
        oldest_ledger_close_time: oldest.close_time_i64(),
        ledger_retention_window: retention,
    })
}

fn get_network(state: &State) -> Result<Vec<u8>, RpcError> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Network<'a> {
        passphrase: &'a str,
        protocol_version: u32,
    }
    let latest = state.ledger(state.window().latest);
    to_json(&Network {
        passphrase: &state.network_passphrase,
        protocol_version: latest.protocol_version,
    })
}

fn get_latest_ledger(state: &State) -> Result<Vec<u8>, RpcError> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Latest<'a> {
        id: &'a str,
        protocol_version: u32,
        sequence: u32,
        close_time: String,
        header_xdr: &'a str,
        metadata_xdr: &'a str,
    }
    let latest = state.ledger(state.window().latest);
    to_json(&Latest {
        id: &latest.hash,
        protocol_version: latest.protocol_version,
        sequence: latest.sequence,
        close_time: latest.close_time.to_string(),
        header_xdr: &latest.header_xdr,
        metadata_xdr: &latest.metadata_xdr,
    })
}

/// `getLedgers` parameters (`GetLedgersRequest` in go-stellar-sdk). Nulls read as absent,
/// as Go's decoder does.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetLedgersParams {
    #[serde(default)]
    start_ledger: Option<u32>,
    #[serde(default)]
    pagination: Option<Pagination>,
    #[serde(default)]
    xdr_format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Pagination {
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
}

fn get_ledgers(state: &State, params: &Value) -> Result<Vec<u8>, RpcError> {
    let params: GetLedgersParams = match params {
        Value::Null => GetLedgersParams::default(),
        Value::Object(_) => GetLedgersParams::deserialize(params).map_err(|error| {
            RpcError::new(code::INVALID_PARAMS, format!("invalid parameters: {error}"))
        })?,
        _ => {
            return Err(RpcError::new(
                code::INVALID_PARAMS,
                "invalid parameters: array parameters are not supported",
            ))
        }
    };
    let start_ledger = params.start_ledger.unwrap_or(0);
    let cursor = params
        .pagination
        .as_ref()
        .and_then(|p| p.cursor.as_deref())
        .unwrap_or("");
    let limit = params
        .pagination
        .as_ref()
        .and_then(|p| p.limit)
        .unwrap_or(0);
    let format = params.xdr_format.as_deref().unwrap_or("");

    let window = state.window();
    let (oldest, latest) = (state.ledger(window.oldest), state.ledger(window.latest));
    let in_range = |seq: u32| seq >= oldest.sequence && seq <= latest.sequence;

    // Validation, as `GetLedgersRequest.Validate`: pagination, then format, errors joined.
    let mut problems = Vec::new();
    let bad_page = || {
        format!(
            "start ledger ({start_ledger}) must be between the oldest ledger: {} and the latest \
             ledger: {} for this rpc instance",
            oldest.sequence, latest.sequence
        )
    };
    if params.pagination.is_some() {
        if !cursor.is_empty() {
            if start_ledger != 0 {
                problems.push(format!(
                    "startLedger ({start_ledger}) and cursor ({cursor}) cannot both be set"
                ));
            } else if limit > MAX_LEDGERS_LIMIT {
                problems.push(format!("limit must not exceed {MAX_LEDGERS_LIMIT}"));
            }
        } else if !in_range(start_ledger) {
            problems.push(bad_page());
        } else if limit > MAX_LEDGERS_LIMIT {
            problems.push(format!("limit must not exceed {MAX_LEDGERS_LIMIT}"));
        }
    } else if !in_range(start_ledger) {
        problems.push(bad_page());
    }
    if !matches!(format, "" | "base64" | "json") {
        problems.push(format!(
            "got '{format}': expected base64, json for optional 'xdrFormat'"
        ));
    }
    if !problems.is_empty() {
        let refused_tip = cursor.is_empty() && start_ledger == latest.sequence.wrapping_add(1);
        if refused_tip && state.faults().close_after_refused_tip {
            // The refusal is already decided: the ledger closes just after it.
            state.close_next();
        }
        return Err(RpcError::new(code::INVALID_REQUEST, problems.join("\n")));
    }
    if format == "json" {
        return Err(RpcError::new(
            code::INVALID_PARAMS,
            "xdrFormat 'json' is unsupported by this simulator; use 'base64'",
        ));
    }

    // Pagination, as `initializePagination`.
    let start = if cursor.is_empty() {
        start_ledger
    } else {
        let parsed: u32 = cursor.parse().map_err(|_| {
            RpcError::new(
                code::INVALID_PARAMS,
                format!("strconv.ParseUint: parsing {cursor:?}: invalid syntax"),
            )
        })?;
        let start = parsed.wrapping_add(1);
        if !in_range(start) {
            return Err(RpcError::new(
                code::INVALID_PARAMS,
                format!(
                    "cursor ('{cursor}') must be between the oldest ledger: {} and the latest \
                     ledger: {} for this rpc instance",
                    oldest.sequence, latest.sequence
                ),
            ));
        }
        start
    };
    let limit = if limit == 0 {
        DEFAULT_LEDGERS_LIMIT
    } else {
        limit
    };

    let first = state
        .index_of(start)
        .unwrap_or(window.oldest)
        .max(window.oldest);
    let last = (first as u64 + limit - 1).min(window.latest as u64) as usize;
    let faults = state.faults();
    let truncated: Vec<Option<String>> = (first..=last)
        .map(|i| {
            state
                .chance(faults.truncate_rate)
                .then(|| truncate_base64(&state.ledger(i).metadata_xdr))
        })
        .collect();

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct LedgerInfo<'a> {
        hash: &'a str,
        sequence: u32,
        ledger_close_time: String,
        header_xdr: &'a str,
        metadata_xdr: &'a str,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Page<'a> {
        ledgers: Vec<LedgerInfo<'a>>,
        latest_ledger: u32,
        latest_ledger_close_time: i64,
        oldest_ledger: u32,
        oldest_ledger_close_time: i64,
        cursor: String,
    }
    let ledgers: Vec<LedgerInfo<'_>> = (first..=last)
        .zip(&truncated)
        .map(|(i, cut)| {
            let ledger = state.ledger(i);
            LedgerInfo {
                hash: &ledger.hash,
                sequence: ledger.sequence,
                ledger_close_time: ledger.close_time.to_string(),
                header_xdr: &ledger.header_entry_xdr,
                metadata_xdr: cut.as_deref().unwrap_or(&ledger.metadata_xdr),
            }
        })
        .collect();
    if let Some(last) = ledgers.last() {
        state.note_served(last.sequence);
    }
    let cursor = match ledgers.last() {
        Some(last) => last.sequence.to_string(),
        None if !cursor.is_empty() => cursor.to_owned(),
        None => start.saturating_sub(1).to_string(),
    };
    to_json(&Page {
        ledgers,
        latest_ledger: latest.sequence,
        latest_ledger_close_time: latest.close_time_i64(),
        oldest_ledger: oldest.sequence,
        oldest_ledger_close_time: oldest.close_time_i64(),
        cursor,
    })
}

/// Cuts base64 text to about half, on a 4-character boundary so it stays valid base64
/// (of a prefix of the XDR, which then fails to decode).
pub(crate) fn truncate_base64(text: &str) -> String {
    let keep = (text.len() / 2) / 4 * 4;
    text.get(..keep).unwrap_or_default().to_owned()
}
