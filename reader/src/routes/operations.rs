//! `GET /operations/{id}`: one payment operation, the resource a record's `self` link
//! names. Operations of other kinds are not kept, so they are 404 like unknown ids.
//!
//! What must hold: the body is byte for byte the record a page embeds for that id; it
//! is immutable once its ledger has closed, and a 404 is never cached.

use axum::extract::{Request, State};
use axum::response::Response;
use shared::horizon::PaymentResource;

use super::{immutable_resource, PathParam};
use crate::params;
use crate::problem::Problem;
use crate::state::AppState;
use crate::store::{self, StoreError};

/// GET /operations/{id}
#[utoipa::path(get, path = "/operations/{id}", tag = "payments",
    params(("id" = String, Path, description = "Operation id (the payment's paging token), a positive integer")),
    responses(
        (status = 200, description = "The payment operation", body = crate::openapi::Payment, content_type = "application/hal+json"),
        (status = 304, description = "Not modified"),
        (status = 400, description = "Invalid id", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No payment operation with this id", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "Stale history or no source", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
    ))]
pub async fn operation(
    State(state): State<AppState>,
    PathParam(raw): PathParam,
    request: Request,
) -> Result<Response, Problem> {
    let id = params::parse_operation_id(&raw)?;
    let path = format!("/operations/{id}");
    immutable_resource(
        &state,
        "/operations/{id}",
        &path,
        request.headers(),
        || {
            Problem::not_found(format!(
                "There is no payment operation {id} in this history."
            ))
        },
        |chosen, base| async move {
            let Some(record) =
                store::payment(store::Db::of(&chosen.source), id, chosen.view.tip).await?
            else {
                return Ok(None);
            };
            serde_json::to_vec(&PaymentResource::new(&record, &base, false))
                .map(Some)
                .map_err(|e| {
                    StoreError::Corrupt(crate::records::CorruptRow {
                        id,
                        reason: e.to_string(),
                    })
                })
        },
    )
    .await
}
