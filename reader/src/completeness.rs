//! How far the history a source holds is complete: the highest ledger up to which every
//! ledger from the oldest one held is present. A page may be called immutable only
//! within it (a backfill can still add ledgers in a gap, and so change any page that
//! spans or follows it).
//!
//! What must hold: the answer is never too high (a page is never wrongly immutable):
//! it is kept per (source, backfill generation, oldest ledger), extended only by
//! checking the ledgers added since, and on any error it is the oldest ledger minus one
//! (nothing complete).

use std::collections::HashMap;
use std::sync::Mutex;

use sqlx::PgPool;

use crate::sources::View;

#[derive(Clone, Copy, Debug)]
struct Known {
    generation: i64,
    oldest: u32,
    /// Every ledger in [oldest, through] is held.
    through: u32,
    /// The ledger after `through` was missing when last checked (a gap: only a new
    /// generation can close it).
    gap_after: bool,
}

/// Per source, what is known of its completeness.
#[derive(Debug, Default)]
pub struct Completeness {
    known: Mutex<HashMap<String, Known>>,
}

impl Completeness {
    /// The highest ledger through which `source`'s history is complete, checked at
    /// least up to `needed` (one query from where the last check stopped, only when
    /// `needed` is beyond it).
    pub async fn through(&self, source: &str, pool: &PgPool, view: View, needed: u32) -> u32 {
        let known = self
            .known
            .lock()
            .ok()
            .and_then(|k| k.get(source).copied())
            .filter(|k| k.generation == view.generation && k.oldest == view.oldest);
        if let Some(k) = known {
            if k.through >= needed || k.gap_after {
                return k.through;
            }
        }
        let start = known.map_or(view.oldest, |k| k.through);
        match first_without_successor(pool, start, view.tip).await {
            Ok(end) => {
                let next = Known {
                    generation: view.generation,
                    oldest: view.oldest,
                    through: end,
                    gap_after: end < view.tip,
                };
                if let Ok(mut k) = self.known.lock() {
                    k.insert(source.to_owned(), next);
                }
                end
            }
            Err(e) => {
                tracing::warn!(source, error = %e, "history completeness check failed");
                view.oldest.saturating_sub(1)
            }
        }
    }
}

/// The first ledger in [start, tip] whose successor is not held (`tip` when none is
/// missing before it).
async fn first_without_successor(pool: &PgPool, start: u32, tip: u32) -> Result<u32, sqlx::Error> {
    metrics::counter!("reader_db_queries_total").increment(1);
    let end: Option<i32> = sqlx::query_scalar(
        "SELECT min(l.sequence) FROM ledgers l \
         WHERE l.sequence >= $1 AND l.sequence < $2 \
         AND NOT EXISTS (SELECT 1 FROM ledgers n WHERE n.sequence = l.sequence + 1)",
    )
    .bind(start as i32)
    .bind(tip as i32)
    .fetch_one(pool)
    .await?;
    Ok(end.map_or(tip, |e| e as u32))
}
