//! HAL pages as Horizon renders them: `_links` self/next/prev and
//! `_embedded.records`, each record through `shared::horizon`.

use serde_json::{json, Value};
use shared::horizon::{payment_json, LinkBase};
use shared::payment::PaymentRecord;

use crate::params::PageRequest;

/// Renders one page. `next` continues after the last record in the same order, `prev`
/// goes back from the first one in the other order; an empty page keeps its cursor.
pub fn render(request: &PageRequest, records: &[PaymentRecord], base: &LinkBase) -> Value {
    let path = request.scope.path();
    let href = |query: String| json!({ "href": format!("{}{path}?{query}", base.0.trim_end_matches('/')) });
    let own_cursor = request.cursor_text();
    let first = records.first().map(|r| r.id.to_string());
    let last = records.last().map(|r| r.id.to_string());
    let next_cursor = last.or_else(|| own_cursor.clone());
    let prev_cursor = first.or_else(|| own_cursor.clone());
    let records: Vec<Value> = records
        .iter()
        .map(|r| payment_json(r, base, request.join_transactions))
        .collect();
    json!({
        "_links": {
            "self": href(request.query_string(own_cursor.as_deref(), request.order)),
            "next": href(request.query_string(next_cursor.as_deref(), request.order)),
            "prev": href(request.query_string(prev_cursor.as_deref(), request.order.reverse())),
        },
        "_embedded": { "records": records },
    })
}
