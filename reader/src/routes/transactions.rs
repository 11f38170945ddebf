//! `GET /transactions/{hash}`: one transaction, the resource `join=transactions`
//! embeds and a record's `transaction` link names; found by a fee bump's own hash or by
//! the hash of the transaction it wraps, as the payments route is. This history keeps
//! the transactions that carry payments; others are 404.
//!
//! What must hold: the body is the resource `join=transactions` embeds; it is immutable
//! once its ledger has closed, and a 404 is never cached.

use axum::extract::{Request, State};
use axum::response::Response;
use shared::horizon::TransactionResource;

use super::{immutable_resource, PathParam};
use crate::params;
use crate::problem::Problem;
use crate::state::AppState;
use crate::store::{self, StoreError};

/// GET /transactions/{hash}
#[utoipa::path(get, path = "/transactions/{hash}", tag = "payments",
    params(("hash" = String, Path, description = "Transaction hash, 64 hex digits: a fee bump's own or that of the transaction it wraps")),
    responses(
        (status = 200, description = "The transaction", body = Object, content_type = "application/hal+json"),
        (status = 304, description = "Not modified"),
        (status = 400, description = "Invalid hash", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such transaction with payments in this history", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "Stale history or no source", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
    ))]
pub async fn transaction(
    State(state): State<AppState>,
    PathParam(raw): PathParam,
    request: Request,
) -> Result<Response, Problem> {
    let hash = params::parse_hash(&raw.to_ascii_lowercase())?;
    let hex = hex::encode(hash);
    let path = format!("/transactions/{hex}");
    immutable_resource(
        &state,
        "/transactions/{hash}",
        &path,
        request.headers(),
        || Problem::not_found(format!("Transaction {hex} is not in this history.")),
        |chosen, base| async move {
            let Some(tx) = store::transaction(&chosen.source.pool, &hash, chosen.view.tip).await?
            else {
                return Ok(None);
            };
            serde_json::to_vec(&TransactionResource::new(&tx, &base))
                .map(Some)
                .map_err(|e| {
                    StoreError::Corrupt(crate::records::CorruptRow {
                        id: tx.id.to_i64(),
                        reason: e.to_string(),
                    })
                })
        },
    )
    .await
}
