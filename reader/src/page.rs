//! HAL pages as Horizon renders them: `_links` self/next/prev and
//! `_embedded.records`, each record through `shared::horizon`. A page serialises straight
//! into the response body; no JSON tree is built.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use shared::horizon::{Link, LinkBase, PaymentResource};

use crate::params::PageRequest;
use crate::records::StoredPayment;

/// One page of payment records, ready to serialise.
#[derive(Debug)]
pub struct Page<'a> {
    links: PageLinks,
    records: &'a [StoredPayment],
    base: &'a LinkBase,
    join_transactions: bool,
}

#[derive(Debug, Serialize)]
struct PageLinks {
    #[serde(rename = "self")]
    own: Link,
    next: Link,
    prev: Link,
}

/// The records of a page, serialised one resource after another.
struct Records<'a> {
    records: &'a [StoredPayment],
    base: &'a LinkBase,
    join_transactions: bool,
}

impl Serialize for Records<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            self.records
                .iter()
                .map(|r| PaymentResource::new(r, self.base, self.join_transactions)),
        )
    }
}

#[derive(Serialize)]
struct Embedded<'a> {
    records: Records<'a>,
}

impl Serialize for Page<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_map(Some(2))?;
        out.serialize_entry("_links", &self.links)?;
        out.serialize_entry(
            "_embedded",
            &Embedded {
                records: Records {
                    records: self.records,
                    base: self.base,
                    join_transactions: self.join_transactions,
                },
            },
        )?;
        out.end()
    }
}

/// The page for `records`. `next` continues after the last record in the same order,
/// `prev` goes back from the first one in the other order; an empty page keeps its cursor.
pub fn render<'a>(
    request: &PageRequest,
    records: &'a [StoredPayment],
    base: &'a LinkBase,
) -> Page<'a> {
    let path = request.scope.path();
    let href = |query: String| base.link(format_args!("{path}?{query}"));
    let own_cursor = request.cursor_text();
    let first = records.first().map(|r| r.id.to_string());
    let last = records.last().map(|r| r.id.to_string());
    let next_cursor = last.or_else(|| own_cursor.clone());
    let prev_cursor = first.or_else(|| own_cursor.clone());
    Page {
        links: PageLinks {
            own: href(request.query_string(own_cursor.as_deref(), request.order)),
            next: href(request.query_string(next_cursor.as_deref(), request.order)),
            prev: href(request.query_string(prev_cursor.as_deref(), request.order.reverse())),
        },
        records,
        base,
        join_transactions: request.join_transactions,
    }
}
