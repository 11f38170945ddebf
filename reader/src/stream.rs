//! Server-sent events on the payments routes (`Accept: text/event-stream`), as Horizon
//! streams: an `open` event, then every record in ascending order as `data` with its
//! paging token as `id`, continuing as ledgers close. A client that reconnects with
//! `Last-Event-ID` (or `cursor`) resumes right after the last record it saw. Streams per
//! pod are bounded; each ends when the pod shuts down, also when its client has
//! stopped reading (sending watches the shutdown token, and the body ends with it).
//! Streams do not stampede the pool when a ledger closes: the streams of one request at
//! one data version share one query (`StreamPages`).

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use shared::horizon::{LinkBase, PaymentResource};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::params::{after_ledger, Cursor, Order, PageRequest, MAX_LIMIT};
use crate::policy::Class;
use crate::problem::Problem;
use crate::sources::ReadFailure;
use crate::state::AppState;
use crate::store::{self, PageResult, StoreError};

/// Pages read for streams, shared by every stream at the same (source, tip,
/// generation, request): concurrent readers of one key wait for one query.
pub type StreamPages = moka::future::Cache<String, Arc<PageResult>>;

/// The shared page cache for streams: a few thousand entries, short-lived (a page is
/// only wanted while streams catch up on one tip).
pub fn new_stream_pages() -> StreamPages {
    moka::future::Cache::builder()
        .max_capacity(4_096)
        .time_to_live(Duration::from_secs(30))
        .build()
}

/// A query failure shared by every stream that waited on it.
struct SharedFailure(Arc<StoreError>);

impl ReadFailure for SharedFailure {
    fn database(&self) -> Option<&sqlx::Error> {
        self.0.database()
    }

    fn into_problem(self) -> Problem {
        match Arc::try_unwrap(self.0) {
            Ok(error) => error.into_problem(),
            Err(shared) => match shared.database() {
                Some(e) if crate::sources::is_timeout(e) => {
                    Problem::timeout("The query took longer than the statement timeout.")
                }
                _ => {
                    tracing::error!(error = %shared, "stream query failed");
                    Problem::internal()
                }
            },
        }
    }
}

/// Opens a stream for `request` (its order is ascending whatever was asked).
pub async fn open(state: AppState, mut request: PageRequest, base: LinkBase) -> Response {
    let Ok(permit) = state.streams.clone().try_acquire_owned() else {
        metrics::counter!("reader_rejected_total", "reason" => "streams").increment(1);
        return Problem::unavailable("This reader has as many open streams as it allows.")
            .into_response();
    };
    // The starting point is resolved now: `now` means the current best tip.
    let start = match request.cursor {
        Cursor::After(t) => t,
        Cursor::Start => -1,
        Cursor::Now => match state.sources.choose(&[]) {
            // The last id the tip ledger could hold.
            Ok(chosen) => after_ledger(chosen.view.tip),
            Err(problem) => return problem.into_response(),
        },
    };
    request.order = Order::Asc;
    request.limit = MAX_LIMIT;
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(256);
    let route = request.scope.route();
    let cache_control = state
        .policy
        .current()
        .value(route, Class::Stream)
        .to_owned();
    let shutdown = state.shutdown.clone();
    tokio::spawn(run(state, request, base, start, tx, permit));
    // The body ends at shutdown even when its client stopped reading (the sender
    // may be blocked on a full channel; the connection must not outlive the pod).
    let events = ReceiverStream::new(rx).take_until(shutdown.cancelled_owned());
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&cache_control) {
        headers.insert(header::CACHE_CONTROL, v);
    }
    headers.insert(header::VARY, HeaderValue::from_static("Accept"));
    // Tells nginx not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

async fn run(
    state: AppState,
    mut request: PageRequest,
    base: LinkBase,
    mut after: i64,
    tx: mpsc::Sender<Result<Event, Infallible>>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    metrics::gauge!("reader_streams_active").increment(1.0);
    let mut tips = state.sources.subscribe_tip();
    let opened = Event::default()
        .event("open")
        .data("\"hello\"")
        .retry(Duration::from_secs(1));
    if tx.send(Ok(opened)).await.is_err() {
        metrics::gauge!("reader_streams_active").decrement(1.0);
        return;
    }
    'outer: loop {
        request.cursor = if after < 0 {
            Cursor::Start
        } else {
            Cursor::After(after)
        };
        let mut wait = true;
        let request_at = &request;
        let state_at = &state;
        let read = state
            .sources
            .read(|chosen| async move {
                // Every stream of this request at this source's data version shares one
                // query: a new ledger costs one query per page per pod, not one per stream.
                let view = chosen.view;
                let key = format!(
                    "{}|{}.{}|{}",
                    chosen.source.name,
                    view.tip,
                    view.generation,
                    request_at.normalized()
                );
                state_at
                    .stream_pages
                    .try_get_with(key, async {
                        state_at.db_queries.fetch_add(1, Ordering::Relaxed);
                        store::page(store::Db::of(&chosen.source), request_at, view.tip)
                            .await
                            .map(Arc::new)
                    })
                    .await
                    .map_err(SharedFailure)
            })
            .await;
        match read.as_deref() {
            Ok(PageResult::Records(records)) => {
                wait = records.len() < request.limit as usize;
                for record in records {
                    let resource = PaymentResource::new(record, &base, request.join_transactions);
                    let Ok(json) = serde_json::to_string(&resource) else {
                        break 'outer;
                    };
                    let event = Event::default().id(record.id.to_string()).data(json);
                    // A stalled client must not hold the stream past shutdown.
                    let sent = tokio::select! {
                        sent = tx.send(Ok(event)) => sent.is_ok(),
                        _ = state.shutdown.cancelled() => false,
                    };
                    if !sent {
                        break 'outer;
                    }
                    after = record.id.to_i64();
                }
                metrics::counter!("reader_stream_records_total").increment(records.len() as u64);
            }
            Ok(PageResult::Missing(_)) => {}
            Err(problem) => {
                tracing::warn!(error = %problem, "stream query failed; retrying");
                tokio::select! {
                    _ = state.shutdown.cancelled() => break,
                    _ = tx.closed() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
        }
        if wait {
            tokio::select! {
                _ = state.shutdown.cancelled() => break,
                _ = tx.closed() => break,
                changed = tips.changed() => if changed.is_err() { break },
                // Sources can also come back without the best tip moving.
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        } else if state.shutdown.is_cancelled() {
            break;
        }
    }
    metrics::gauge!("reader_streams_active").decrement(1.0);
}
