//! The traffic model of `loadtest load`: which request classes share the arrival rate,
//! and how each class behaves. Read from a TOML file; `loadtest/load-model.toml` is
//! built in as the default (docs/loadtest.md describes it).
//!
//! What must hold: a parsed model is usable as it is: shares are finite and not
//! negative, at least one is positive, explorer kinds have a positive total weight,
//! keyed and abusive classes with a share have keys, pages are 1..=200 records. The
//! class of an arrival is drawn with probability share / (sum of shares).

use serde::{Deserialize, Serialize};

/// The built-in model.
pub const DEFAULT_MODEL: &str = include_str!("../../load-model.toml");

/// A request class: how its clients behave; results are kept per class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// A wallet polling its account's history with `If-None-Match`.
    Wallet,
    /// An explorer reading feeds and paging on.
    Explorer,
    /// A client with an API key (own limits, past the shared cache).
    Keyed,
    /// An abusive client on a tiny tier.
    Abusive,
    /// An event stream held open (its opening is the request measured).
    Stream,
    /// The trivial `/constant` route: the edge's own ceiling.
    Constant,
}

impl Class {
    /// Every class, in report order.
    pub const ALL: [Self; 6] = [
        Self::Wallet,
        Self::Explorer,
        Self::Keyed,
        Self::Abusive,
        Self::Stream,
        Self::Constant,
    ];

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wallet => "wallet",
            Self::Explorer => "explorer",
            Self::Keyed => "keyed",
            Self::Abusive => "abusive",
            Self::Stream => "stream",
            Self::Constant => "constant",
        }
    }

    /// Whether a 429 answer is what this class should get (it is then not an error).
    pub fn expects_refusals(self) -> bool {
        self == Self::Abusive
    }
}

/// Wallets.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wallet {
    /// Share of the arrival rate.
    pub share: f64,
    /// Records per page.
    #[serde(default = "ten")]
    pub limit: u32,
}

/// Explorers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Explorer {
    /// Share of the arrival rate.
    pub share: f64,
    /// Records per page.
    #[serde(default = "twenty")]
    pub limit: u32,
    /// Weight of the global feed among first pages.
    pub feed: f64,
    /// Weight of a ledger's payments.
    pub ledger: f64,
    /// Weight of a transaction's payments.
    pub transaction: f64,
    /// Probability of following a page's `next` link.
    pub follow: f64,
    /// Pages at most in one visit (the first included).
    pub max_pages: u32,
    /// Ledger pages are opened among the newest this many ledgers seen in the pages
    /// explorers read (the ledgers the history holds).
    pub ledger_depth: u32,
}

/// Clients with API keys.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keyed {
    /// Share of the arrival rate.
    pub share: f64,
    /// Records per page.
    #[serde(default = "fifty")]
    pub limit: u32,
    /// Their keys (each arrival takes one at random).
    pub keys: Vec<String>,
}

/// Abusive clients.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Abusive {
    /// Share of the arrival rate.
    pub share: f64,
    /// Their keys, on a tiny tier.
    pub keys: Vec<String>,
}

/// Event streams.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Streams {
    /// Streams held open for the whole run.
    pub open: u32,
}

/// The whole model.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficModel {
    /// Wallets.
    pub wallet: Wallet,
    /// Explorers.
    pub explorer: Explorer,
    /// Keyed clients.
    pub keyed: Keyed,
    /// Abusive clients.
    pub abusive: Abusive,
    /// Streams.
    pub streams: Streams,
}

fn ten() -> u32 {
    10
}
fn twenty() -> u32 {
    20
}
fn fifty() -> u32 {
    50
}

/// Why a model is refused.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Not TOML of the model's shape.
    #[error("traffic model: {0}")]
    Parse(#[from] toml::de::Error),
    /// Parsed, but not usable.
    #[error("traffic model: {0}")]
    Invalid(String),
}

impl TrafficModel {
    /// The built-in model.
    pub fn builtin() -> Self {
        Self::parse(DEFAULT_MODEL).unwrap_or_else(|e| panic!("the built-in model: {e}"))
    }

    /// Parses and checks a model.
    pub fn parse(text: &str) -> Result<Self, ModelError> {
        let model: Self = toml::from_str(text)?;
        model.validate()?;
        Ok(model)
    }

    fn validate(&self) -> Result<(), ModelError> {
        let bad = |what: String| Err(ModelError::Invalid(what));
        for (class, share) in self.shares() {
            if !share.is_finite() || share < 0.0 {
                return bad(format!("the {} share must be >= 0", class.as_str()));
            }
        }
        if self.shares().iter().all(|(_, s)| *s == 0.0) {
            return bad("at least one share must be positive".into());
        }
        let e = &self.explorer;
        let kinds = [e.feed, e.ledger, e.transaction];
        if kinds.iter().any(|w| !w.is_finite() || *w < 0.0) || kinds.iter().sum::<f64>() <= 0.0 {
            return bad("explorer feed/ledger/transaction weights must be >= 0, one > 0".into());
        }
        if !(0.0..=1.0).contains(&e.follow) {
            return bad("explorer follow must be within 0..=1".into());
        }
        if e.max_pages == 0 || e.ledger_depth == 0 {
            return bad("explorer max_pages and ledger_depth must be positive".into());
        }
        for (name, limit) in [
            ("wallet", self.wallet.limit),
            ("explorer", e.limit),
            ("keyed", self.keyed.limit),
        ] {
            if !(1..=200).contains(&limit) {
                return bad(format!("the {name} limit must be within 1..=200"));
            }
        }
        if self.keyed.share > 0.0 && self.keyed.keys.is_empty() {
            return bad("keyed clients need keys".into());
        }
        if self.abusive.share > 0.0 && self.abusive.keys.is_empty() {
            return bad("abusive clients need keys".into());
        }
        Ok(())
    }

    /// The classes that share the arrival rate, with their shares as written.
    pub fn shares(&self) -> [(Class, f64); 4] {
        [
            (Class::Wallet, self.wallet.share),
            (Class::Explorer, self.explorer.share),
            (Class::Keyed, self.keyed.share),
            (Class::Abusive, self.abusive.share),
        ]
    }

    /// The class of an arrival, for `u` uniform in [0, 1).
    pub fn pick(&self, u: f64) -> Class {
        let shares = self.shares();
        let total: f64 = shares.iter().map(|(_, s)| s).sum();
        let mut target = u * total;
        let mut last = Class::Wallet;
        for (class, share) in shares {
            if share <= 0.0 {
                continue;
            }
            last = class;
            if target < share {
                return class;
            }
            target -= share;
        }
        last
    }
}

/// Explorer first pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExplorerKind {
    /// `/payments`.
    Feed,
    /// `/ledgers/{sequence}/payments`.
    Ledger,
    /// `/transactions/{hash}/payments`.
    Transaction,
}

impl Explorer {
    /// The first page's kind, for `u` uniform in [0, 1).
    pub fn pick(&self, u: f64) -> ExplorerKind {
        let total = self.feed + self.ledger + self.transaction;
        let target = u * total;
        if target < self.feed {
            ExplorerKind::Feed
        } else if target < self.feed + self.ledger || self.transaction <= 0.0 {
            ExplorerKind::Ledger
        } else {
            ExplorerKind::Transaction
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_model_parses_and_round_trips() {
        let model = TrafficModel::builtin();
        assert_eq!(model.wallet.limit, 10);
        assert_eq!(model.keyed.keys.len(), 4);
        let text = toml::to_string(&model).expect("serialise");
        let again = TrafficModel::parse(&text).expect("parse again");
        assert_eq!(again.shares(), model.shares());
    }

    #[test]
    fn arrivals_follow_the_shares() {
        let model = TrafficModel::builtin();
        let n = 100_000;
        let mut counts = std::collections::HashMap::new();
        for i in 0..n {
            // A low-discrepancy sequence: every part of [0, 1) is visited evenly.
            let u = (i as f64 + 0.5) / n as f64;
            *counts.entry(model.pick(u)).or_insert(0u32) += 1;
        }
        let total: f64 = model.shares().iter().map(|(_, s)| s).sum();
        for (class, share) in model.shares() {
            let got = f64::from(counts.get(&class).copied().unwrap_or(0)) / n as f64;
            let want = share / total;
            assert!((got - want).abs() < 0.001, "{class:?}: {got} vs {want}");
        }
    }

    #[test]
    fn a_zero_share_is_never_drawn() {
        let text = DEFAULT_MODEL
            .replace("share = 0.03", "share = 0.0")
            .replace("share = 0.12", "share = 0.0");
        let model = TrafficModel::parse(&text).expect("valid");
        for i in 0..10_000 {
            let class = model.pick(f64::from(i) / 10_000.0);
            assert!(
                matches!(class, Class::Wallet | Class::Explorer),
                "{class:?}"
            );
        }
        assert_eq!(model.pick(0.999_999_9), Class::Explorer);
    }

    #[test]
    fn explorer_kinds_follow_their_weights() {
        let e = TrafficModel::builtin().explorer;
        let count = |kind| {
            (0..1000)
                .filter(|i| e.pick(f64::from(*i) / 1000.0) == kind)
                .count()
        };
        assert_eq!(count(ExplorerKind::Feed), 500);
        assert_eq!(count(ExplorerKind::Ledger), 300);
        assert_eq!(count(ExplorerKind::Transaction), 200);
    }

    #[test]
    fn bad_models_are_refused_with_a_reason() {
        let cases = [
            (
                DEFAULT_MODEL.replace("share = 0.60", "share = -1.0"),
                "wallet",
            ),
            (
                DEFAULT_MODEL.replace("follow = 0.5", "follow = 2.0"),
                "follow",
            ),
            (DEFAULT_MODEL.replace("limit = 10", "limit = 500"), "limit"),
            (
                DEFAULT_MODEL.replace("keys = [\"load-abuser-1\", \"load-abuser-2\"]", "keys = []"),
                "abusive",
            ),
            (format!("{DEFAULT_MODEL}\n[extra]\nx = 1\n"), "unknown"),
            ("not toml at all [".to_owned(), "traffic model"),
        ];
        for (text, word) in cases {
            let error = TrafficModel::parse(&text).expect_err(word).to_string();
            assert!(error.contains(word), "{error} should name {word}");
        }
    }
}
