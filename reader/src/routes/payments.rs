//! The payments routes (`/payments`, `/accounts/{account_id}/payments`,
//! `/ledgers/{sequence}/payments`, `/transactions/{hash}/payments`): one page from a
//! conditional match, the response cache or the database, or an event stream with
//! `Accept: text/event-stream`.
//!
//! What must hold: `Last-Event-ID` is read only for event streams (it would otherwise
//! change a shared-cacheable body that `Vary` does not name); `cursor=now` is resolved
//! to a concrete position at the chosen source's tip before any link is built, so `next`
//! never re-anchors at the tip; `If-None-Match: *` never answers 304 for a ledger or
//! transaction that does not exist.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::response::Response;
use bytes::Bytes;

use super::{
    cached_response, condition, encoding, missing_at, not_modified, query_pairs, rendered_response,
    wants_event_stream, BaseRef, CacheOutcome, PathParam,
};
use crate::cache::{Encoding, Rendered};
use crate::conditional::{self, PageFacts, TagInputs};
use crate::params::{self, PageRequest, Scope};
use crate::policy::Class;
use crate::problem::Problem;
use crate::sources::Chosen;
use crate::state::AppState;
use crate::store::{self, PageResult, StoreError};
use crate::stream;

/// GET /payments
#[utoipa::path(get, path = "/payments", tag = "payments",
    params(crate::openapi::PageParams),
    responses(
        (status = 200, description = "A page of payments (or an event stream with Accept: text/event-stream)", body = crate::openapi::PaymentsPage, content_type = "application/hal+json"),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 400, description = "Invalid parameter", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "Stale history, no source, saturated or too many streams", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 504, description = "Statement timeout", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
    ))]
pub async fn all_payments(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, Problem> {
    payments(state, Subject::Parsed(Scope::All), &request.into_parts().0).await
}

/// GET /accounts/{account_id}/payments
#[utoipa::path(get, path = "/accounts/{account_id}/payments", tag = "payments",
    params(("account_id" = String, Path, description = "A G... account or a C... contract"), crate::openapi::AccountPageParams),
    responses(
        (status = 200, description = "A page of the account's payments", body = crate::openapi::PaymentsPage, content_type = "application/hal+json"),
        (status = 304, description = "Not modified: the account has no new payments"),
        (status = 400, description = "Invalid account id or parameter", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "Stale history or no source", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
    ))]
pub async fn account_payments(
    State(state): State<AppState>,
    PathParam(account): PathParam,
    request: Request,
) -> Result<Response, Problem> {
    payments(state, Subject::Account(&account), &request.into_parts().0).await
}

/// GET /ledgers/{sequence}/payments
#[utoipa::path(get, path = "/ledgers/{sequence}/payments", tag = "payments",
    params(("sequence" = u32, Path, description = "Ledger sequence"), crate::openapi::PageParams),
    responses(
        (status = 200, description = "The ledger's payments", body = crate::openapi::PaymentsPage, content_type = "application/hal+json"),
        (status = 304, description = "Not modified"),
        (status = 400, description = "Invalid sequence or parameter", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "Unknown ledger", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "Stale history or no source", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
    ))]
pub async fn ledger_payments(
    State(state): State<AppState>,
    PathParam(sequence): PathParam,
    request: Request,
) -> Result<Response, Problem> {
    let scope = Scope::Ledger(params::parse_ledger(&sequence)?);
    payments(state, Subject::Parsed(scope), &request.into_parts().0).await
}

/// GET /transactions/{hash}/payments
#[utoipa::path(get, path = "/transactions/{hash}/payments", tag = "payments",
    params(("hash" = String, Path, description = "Transaction hash, 64 hex digits: a fee bump's own or that of the transaction it wraps"), crate::openapi::PageParams),
    responses(
        (status = 200, description = "The transaction's payments (failed ones included)", body = crate::openapi::PaymentsPage, content_type = "application/hal+json"),
        (status = 304, description = "Not modified"),
        (status = 400, description = "Invalid hash or parameter", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "Unknown transaction", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "Stale history or no source", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
    ))]
pub async fn transaction_payments(
    State(state): State<AppState>,
    PathParam(hash): PathParam,
    request: Request,
) -> Result<Response, Problem> {
    let scope = Scope::Transaction(params::parse_hash(&hash.to_ascii_lowercase())?);
    payments(state, Subject::Parsed(scope), &request.into_parts().0).await
}

/// The reconnection header of event streams, named once.
static LAST_EVENT_ID: axum::http::HeaderName = axum::http::HeaderName::from_static("last-event-id");

/// What a payments route is about, as far as the cache needs to know before the rest
/// of the request is parsed: an account's address is checked (a strkey's checksum) only
/// when the page is not already cached.
enum Subject<'a> {
    /// A checked scope.
    Parsed(Scope),
    /// An account route's address, not yet checked.
    Account(&'a str),
}

impl Subject<'_> {
    /// Whether the page's key is tip-independent (as [`conditional::fixed_scope`]).
    fn fixed_at(&self, tip: u32) -> bool {
        match self {
            Self::Parsed(scope) => conditional::fixed_scope(scope, tip),
            Self::Account(_) => false,
        }
    }

    fn route(&self) -> &'static str {
        match self {
            Self::Parsed(scope) => scope.route(),
            Self::Account(_) => params::ACCOUNT_ROUTE,
        }
    }

    fn scope(self) -> Result<Scope, Problem> {
        match self {
            Self::Parsed(scope) => Ok(scope),
            Self::Account(raw) => Ok(Scope::Account(params::parse_account(raw)?)),
        }
    }
}

/// The request as the cache sees it: where links point and the path and query as sent.
struct Target<'a> {
    base: BaseRef<'a>,
    path_and_query: &'a str,
}

impl Target<'_> {
    fn key(&self, fixed: bool, view: &crate::sources::View) -> String {
        crate::cache::page_key(
            fixed,
            view.tip,
            view.generation,
            self.base.parts(),
            self.path_and_query,
        )
    }
}

async fn payments(
    state: AppState,
    subject: Subject<'_>,
    request: &Parts,
) -> Result<Response, Problem> {
    let headers = &request.headers;
    let streaming = wants_event_stream(headers);
    let target = Target {
        base: BaseRef::of(&state, headers),
        path_and_query: request.uri.path_and_query().map_or("/", |pq| pq.as_str()),
    };
    let condition = condition(headers);
    let encoding = encoding(headers);
    // A page this pod has rendered for exactly this request at the chosen source's data
    // version: answered before the query is parsed. The read below starts at the same
    // source.
    let chosen = if streaming {
        None
    } else {
        let chosen = state.sources.choose(&[])?;
        let key = target.key(subject.fixed_at(chosen.view.tip), &chosen.view);
        let (route, tip) = (subject.route(), chosen.view.tip);
        if let Some(hit) = cached_response(&state, &key, route, tip, condition, encoding).await {
            return Ok(hit);
        }
        Some(chosen)
    };
    let scope = subject.scope()?;
    let query = query_pairs(request.uri.query());
    // The reconnection header of event streams; a plain GET ignores it, as Horizon does.
    let last_event_id = headers
        .get(&LAST_EVENT_ID)
        .and_then(|h| h.to_str().ok())
        .filter(|_| streaming);
    let page_request = PageRequest::parse(scope, &query, last_event_id)?;
    let Some(chosen) = chosen else {
        let base = target.base.to_link_base();
        return Ok(stream::open(state, page_request, base).await);
    };
    let (state, page_request, target) = (&state, &page_request, &target);
    state
        .sources
        .read_from(chosen, |chosen| {
            page_at(state, chosen, page_request, target, condition, encoding)
        })
        .await
}

/// One page at the chosen source: from a conditional match, from the cache, or from
/// the database.
async fn page_at(
    state: &AppState,
    chosen: Chosen,
    request: &PageRequest,
    target: &Target<'_>,
    condition: Option<&str>,
    encoding: Encoding,
) -> Result<Response, StoreError> {
    let view = chosen.view;
    let tip = view.tip;
    let base = &target.base.to_link_base();
    // The key follows the request as sent: `cursor=now` names a different position at
    // every tip, so its page is never kept under a tip-independent key.
    let now = request.cursor == params::Cursor::Now;
    let resolved;
    let request = if now {
        let mut r = request.clone();
        r.resolve_now(tip);
        resolved = r;
        &resolved
    } else {
        request
    };
    let route = request.scope.route();
    // A closed ledger's and a transaction's payments never change: neither their key
    // nor their tag depends on the tip.
    let fixed = conditional::fixed_scope(&request.scope, tip);
    let key = target.key(fixed && !now, &view);
    let mut normalized = String::with_capacity(160);
    request.write_normalized(&mut normalized);
    let inputs = TagInputs {
        base: &base.0,
        normalized: &normalized,
        generation: view.generation,
        tip,
    };
    if let Some(condition) = condition.filter(|c| crate::cache::may_name_immutable(c)) {
        let tag = conditional::immutable_tag(&inputs, fixed);
        if conditional::matches_before_reading(condition, &tag) {
            // Only ever issued for a page that cannot change.
            return Ok(not_modified(
                state,
                route,
                tag,
                Class::Immutable,
                tip,
                encoding,
            ));
        }
    }
    if let Some(hit) = cached_response(state, &key, route, tip, condition, encoding).await {
        return Ok(hit);
    }

    let account = match &request.scope {
        Scope::Account(a) if conditional::uses_activity_tag(request) => Some(a.as_str()),
        _ => None,
    };
    let db = store::Db::of(&chosen.source);
    let pool = db.pool;
    let lookup_activity = || async {
        match account {
            Some(a) => {
                state.db_queries.fetch_add(1, Ordering::Relaxed);
                store::account_activity(pool, a).await
            }
            None => Ok(None),
        }
    };
    let (activity, page) = match condition {
        // Conditional: the tag first, and rows only if it does not match.
        Some(condition) => {
            let activity = lookup_activity().await?;
            let tag = conditional::head_tag(&inputs, account.is_some(), activity);
            if !fixed && conditional::matches_before_reading(condition, &tag) {
                return Ok(not_modified(state, route, tag, Class::Head, tip, encoding));
            }
            state.db_queries.fetch_add(1, Ordering::Relaxed);
            (activity, store::page(db, request, tip).await?)
        }
        // Unconditional: the page and the activity its tag needs in one statement.
        None => {
            state.db_queries.fetch_add(1, Ordering::Relaxed);
            let (page, read) =
                store::page_with_activity(db, request, tip, account.is_some()).await?;
            let activity = match read {
                Some(activity) => activity,
                // A page known to be empty without a query: the tag still needs it.
                None => lookup_activity().await?,
            };
            (activity, page)
        }
    };
    let records = match page {
        PageResult::Records(r) => r,
        PageResult::Missing(problem) => return Ok(missing_at(problem, tip)),
    };
    let mut facts = PageFacts {
        len: records.len(),
        last_ledger: records.last().map(|r| r.id.ledger_seq),
        tip,
        complete_through: tip,
    };
    // Only a page that could be immutable asks how far the history is complete.
    if let (Class::Immutable, false, Some(last)) = (
        conditional::page_class(request, fixed, facts),
        fixed,
        facts.last_ledger,
    ) {
        facts.complete_through = state
            .completeness
            .through(&chosen.source.name, pool, view, last)
            .await;
    }
    let class = conditional::page_class(request, fixed, facts);
    let tag = match class {
        Class::Immutable => conditional::immutable_tag(&inputs, fixed),
        _ => conditional::head_tag(&inputs, account.is_some(), activity),
    };
    let body = serde_json::to_vec(&crate::page::render(request, &records, base)).map_err(|e| {
        StoreError::Corrupt(crate::records::CorruptRow {
            id: -1,
            reason: e.to_string(),
        })
    })?;
    let rendered = Arc::new(Rendered::new(Bytes::from(body), tag, class));
    state.cache.insert(key, rendered.clone()).await;
    let matched = condition.is_some_and(|c| conditional::matches(c, &rendered.etag));
    Ok(rendered_response(
        state,
        route,
        &rendered,
        tip,
        matched,
        CacheOutcome::Miss,
        encoding,
    ))
}
