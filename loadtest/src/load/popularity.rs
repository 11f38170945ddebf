//! Which accounts the load asks for: drawn with probability proportional to the
//! payments each has stored, so request popularity follows the chain's (zipf in the
//! synthetic world). The counts come from the replica (`account_payments`), or, with no
//! database at hand, from the accounts named in the newest pages of the global feed.
//!
//! What must hold: an account with twice the payments is drawn twice as often; an
//! account with none is never drawn; an empty table is refused, not sampled.

use std::collections::HashMap;

use anyhow::{bail, Context as _};

use crate::synth::rng::Rng;

/// Accounts and their weights, for sampling.
#[derive(Clone, Debug)]
pub struct Popularity {
    accounts: Vec<String>,
    cumulative: Vec<f64>,
}

impl Popularity {
    /// From `(account, payments)` pairs; pairs with no payments are left out.
    pub fn new(counts: impl IntoIterator<Item = (String, u64)>) -> anyhow::Result<Self> {
        let mut accounts = Vec::new();
        let mut cumulative = Vec::new();
        let mut total = 0.0;
        for (account, count) in counts {
            if count == 0 {
                continue;
            }
            total += count as f64;
            accounts.push(account);
            cumulative.push(total);
        }
        if accounts.is_empty() {
            bail!("no account with stored payments to draw from");
        }
        Ok(Self {
            accounts,
            cumulative,
        })
    }

    /// Accounts that can be drawn.
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    /// Never true: an empty table is refused.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// An account, drawn by weight.
    pub(crate) fn draw(&self, rng: &mut Rng) -> &str {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let target = rng.unit() * total;
        let i = self
            .cumulative
            .partition_point(|c| *c <= target)
            .min(self.accounts.len() - 1);
        &self.accounts[i]
    }

    /// The `top` accounts with the most payments in the database at `url` (the replica).
    pub async fn from_database(url: &str, top: u32) -> anyhow::Result<Self> {
        let db = crate::bench::reader::connect(url)
            .await
            .context("connecting to the database for account popularity")?;
        let rows = db
            .query(
                "SELECT a.address, c.n FROM (SELECT account_id, count(*) AS n \
                 FROM account_payments GROUP BY account_id ORDER BY n DESC LIMIT $1) c \
                 JOIN accounts a ON a.id = c.account_id",
                &[&i64::from(top)],
            )
            .await
            .context("counting payments per account")?;
        Self::new(
            rows.iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1).max(0) as u64)),
        )
    }

    /// From payment records (Horizon JSON): each payment counts for each account it
    /// names (`from`, `to`, `account`, `funder`).
    pub fn from_records<'a>(
        records: impl IntoIterator<Item = &'a serde_json::Value>,
    ) -> anyhow::Result<Self> {
        let mut counts: HashMap<String, u64> = HashMap::new();
        for record in records {
            for field in ["from", "to", "account", "funder"] {
                if let Some(account) = record.get(field).and_then(|v| v.as_str()) {
                    if account.starts_with('G') {
                        *counts.entry(account.to_owned()).or_default() += 1;
                    }
                }
            }
        }
        let mut pairs: Vec<(String, u64)> = counts.into_iter().collect();
        pairs.sort();
        Self::new(pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_drawn_in_proportion_to_their_payments() {
        // Zipf-like counts: 1000, 500, 333, 250, and one account with none.
        let counts = (1..=4u64)
            .map(|k| (format!("G{k}"), 1000 / k))
            .chain([("GNONE".to_owned(), 0)]);
        let popularity = Popularity::new(counts).expect("accounts");
        assert_eq!(popularity.len(), 4);
        let mut rng = Rng::new(9);
        let mut drawn: HashMap<String, u32> = HashMap::new();
        let n = 200_000;
        for _ in 0..n {
            *drawn
                .entry(popularity.draw(&mut rng).to_owned())
                .or_default() += 1;
        }
        assert!(!drawn.contains_key("GNONE"));
        let total = 1000.0 + 500.0 + 333.0 + 250.0;
        for k in 1..=4u64 {
            let want = (1000 / k) as f64 / total;
            let got = f64::from(drawn[&format!("G{k}")]) / f64::from(n);
            assert!((got - want).abs() < 0.01, "G{k}: {got} vs {want}");
        }
    }

    #[test]
    fn records_count_every_account_they_name() {
        let records = [
            serde_json::json!({"from": "GA", "to": "GB"}),
            serde_json::json!({"from": "GA", "to": "CCONTRACT"}),
            serde_json::json!({"funder": "GA", "account": "GC"}),
        ];
        let popularity = Popularity::from_records(records.iter()).expect("accounts");
        assert_eq!(popularity.len(), 3);
        let mut rng = Rng::new(1);
        let a = (0..10_000)
            .filter(|_| popularity.draw(&mut rng) == "GA")
            .count();
        // GA is named 3 times of 5.
        assert!((5_500..6_500).contains(&a), "{a}");
        assert!(Popularity::new(Vec::new()).is_err());
    }
}
