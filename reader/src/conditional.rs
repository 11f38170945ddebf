//! Conditional requests and cache classes of payment pages, decided without I/O so that
//! each rule is unit-tested: which entity tag a page carries, when a tag can be matched
//! before any row is read, and when a page may be called immutable.
//!
//! What must hold: a tag names exactly one body (same tag, same bytes); a tag is matched
//! before reading only when the resource is known to exist (`If-None-Match: *` never
//! is); a page is immutable only when no later write can change it.

use crate::cache::{etag, if_none_match};
use crate::params::{Cursor, Order, PageRequest, Scope};
use crate::policy::Class;

/// What a page's tags are computed from.
#[derive(Clone, Copy, Debug)]
pub struct TagInputs<'a> {
    /// The link base (links are part of the body).
    pub base: &'a str,
    /// The normalised request.
    pub normalized: &'a str,
    /// The source's backfill generation.
    pub generation: i64,
    /// The source's tip.
    pub tip: u32,
}

/// Whether a scope's payments are fixed once it exists: a closed ledger's, or a
/// transaction's (a transaction never changes once its ledger closed).
pub fn fixed_scope(scope: &Scope, tip: u32) -> bool {
    match scope {
        Scope::Ledger(seq) => *seq <= tip,
        Scope::Transaction(_) => true,
        Scope::All | Scope::Account(_) => false,
    }
}

/// The tag of a page that cannot change: independent of the tip, and (for fixed scopes)
/// of the backfill generation too.
pub fn immutable_tag(inputs: &TagInputs<'_>, fixed: bool) -> String {
    if fixed {
        etag('i', &[inputs.base, inputs.normalized])
    } else {
        etag(
            'i',
            &[
                inputs.base,
                inputs.normalized,
                &inputs.generation.to_string(),
            ],
        )
    }
}

/// The tag of a page that may change. An account page's tag follows the account's own
/// newest payment (`activity`), so it survives tips that did not touch the account;
/// every other page's tag follows the tip.
pub fn head_tag(inputs: &TagInputs<'_>, account: bool, activity: Option<(i64, u32)>) -> String {
    let generation = inputs.generation.to_string();
    match (account, activity) {
        (true, None) => etag('a', &[inputs.base, inputs.normalized, &generation, "none"]),
        (true, Some((id, ledger))) if ledger <= inputs.tip => etag(
            'a',
            &[inputs.base, inputs.normalized, &generation, &id.to_string()],
        ),
        _ => etag(
            't',
            &[
                inputs.base,
                inputs.normalized,
                &generation,
                &inputs.tip.to_string(),
            ],
        ),
    }
}

/// Whether `If-None-Match` can be answered 304 from `tag` alone, before anything is
/// read. `*` never is: it matches only a resource that exists, and that takes a read.
pub fn matches_before_reading(condition: &str, tag: &str) -> bool {
    let star = condition.split(',').any(|c| c.trim() == "*");
    !star && if_none_match(condition, tag)
}

/// Whether `If-None-Match` matches a representation that exists (after reading).
pub fn matches(condition: &str, tag: &str) -> bool {
    if_none_match(condition, tag)
}

/// Whether an account page's tag is the per-account activity tag.
pub fn uses_activity_tag(request: &PageRequest) -> bool {
    matches!(request.scope, Scope::Account(_)) && request.cursor != Cursor::Now
}

/// What is known about a page once its rows are read.
#[derive(Clone, Copy, Debug)]
pub struct PageFacts {
    /// Records on the page.
    pub len: usize,
    /// The ledger of the last record.
    pub last_ledger: Option<u32>,
    /// The source's tip.
    pub tip: u32,
    /// The highest ledger up to which the history held is contiguous from the oldest
    /// ledger held (no ledger missing in between).
    pub complete_through: u32,
}

/// The cache class of a page: immutable when its scope is fixed, or when it is a full
/// ascending page from a concrete position whose last record is below the tip and
/// whose whole span is complete history (no backfill can add anything inside or before
/// it); otherwise it follows the head.
pub fn page_class(request: &PageRequest, fixed: bool, facts: PageFacts) -> Class {
    if fixed {
        return Class::Immutable;
    }
    let full_and_closed = request.order == Order::Asc
        && request.cursor != Cursor::Now
        && facts.len == request.limit as usize
        && facts
            .last_ledger
            .is_some_and(|l| l < facts.tip && l <= facts.complete_through);
    if full_and_closed {
        Class::Immutable
    } else {
        Class::Head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(query: &[(&str, &str)]) -> PageRequest {
        let pairs: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        PageRequest::parse(Scope::All, &pairs, None).expect("valid")
    }

    fn inputs(tip: u32) -> TagInputs<'static> {
        TagInputs {
            base: "https://x",
            normalized: "/payments?cursor=&limit=10&order=asc",
            generation: 0,
            tip,
        }
    }

    #[test]
    fn star_is_never_matched_before_reading() {
        let tag = immutable_tag(&inputs(5), true);
        assert!(!matches_before_reading("*", &tag));
        assert!(!matches_before_reading("\"x\", *", &tag));
        assert!(matches_before_reading(&tag, &tag));
        assert!(matches("*", &tag));
    }

    #[test]
    fn fixed_tags_ignore_tip_and_head_tags_follow_it() {
        assert_eq!(
            immutable_tag(&inputs(5), true),
            immutable_tag(&inputs(9), true)
        );
        assert_ne!(
            head_tag(&inputs(5), false, None),
            head_tag(&inputs(6), false, None)
        );
        // An account's tag follows its activity, not the tip.
        let activity = Some((42, 4));
        assert_eq!(
            head_tag(&inputs(5), true, activity),
            head_tag(&inputs(6), true, activity)
        );
        assert_ne!(
            head_tag(&inputs(5), true, activity),
            head_tag(&inputs(5), true, Some((43, 5)))
        );
    }

    #[test]
    fn fixed_scopes() {
        assert!(fixed_scope(&Scope::Ledger(5), 5));
        assert!(!fixed_scope(&Scope::Ledger(6), 5));
        assert!(fixed_scope(&Scope::Transaction([0; 32]), 1));
        assert!(!fixed_scope(&Scope::All, 5));
    }

    #[test]
    fn immutable_only_for_full_closed_complete_pages() {
        let r = request(&[("limit", "3"), ("cursor", "0")]);
        let facts = PageFacts {
            len: 3,
            last_ledger: Some(8),
            tip: 10,
            complete_through: 10,
        };
        assert_eq!(page_class(&r, false, facts), Class::Immutable);
        // Not full, at the tip, or spanning a gap: revalidate.
        for facts in [
            PageFacts { len: 2, ..facts },
            PageFacts {
                last_ledger: Some(10),
                ..facts
            },
            PageFacts {
                complete_through: 7,
                ..facts
            },
        ] {
            assert_eq!(page_class(&r, false, facts), Class::Head);
        }
        let desc = request(&[("limit", "3"), ("order", "desc")]);
        assert_eq!(page_class(&desc, false, facts), Class::Head);
        let now = request(&[("limit", "3"), ("cursor", "now")]);
        assert_eq!(page_class(&now, false, facts), Class::Head);
        assert_eq!(page_class(&now, true, facts), Class::Immutable);
    }
}
