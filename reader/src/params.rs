//! Request parameters: parsed, validated and normalised. A normalised request is the
//! cache key's second half and the input of every query, so two spellings of the same
//! request share one cache entry, and every bad value is a 400 naming its field.

use std::fmt::Write as _;

use shared::address::{AccountId, Address};
use shared::asset::Asset;
use shared::stored::DirectionCode;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::problem::Problem;

/// The largest page, as in Horizon.
pub const MAX_LIMIT: u32 = 200;
/// The page size when none is asked for.
pub const DEFAULT_LIMIT: u32 = 10;

/// Which payments a route lists.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `/payments`
    All,
    /// `/accounts/{account_id}/payments` (a `G...` account or a `C...` contract).
    Account(String),
    /// `/ledgers/{sequence}/payments`
    Ledger(u32),
    /// `/transactions/{hash}/payments`
    Transaction([u8; 32]),
}

impl Scope {
    /// The path of this scope's payments route.
    pub fn path(&self) -> String {
        match self {
            Self::All => "/payments".into(),
            Self::Account(a) => format!("/accounts/{a}/payments"),
            Self::Ledger(s) => format!("/ledgers/{s}/payments"),
            Self::Transaction(h) => format!("/transactions/{}/payments", hex::encode(h)),
        }
    }

    /// The route template, as the router and the Cache-Control policy name it.
    pub fn route(&self) -> &'static str {
        match self {
            Self::All => "/payments",
            Self::Account(_) => "/accounts/{account_id}/payments",
            Self::Ledger(_) => "/ledgers/{sequence}/payments",
            Self::Transaction(_) => "/transactions/{hash}/payments",
        }
    }
}

/// Parses an account route's address: a `G...` account or a `C...` contract (the
/// parties of Stellar Asset Contract movements).
pub fn parse_account(raw: &str) -> Result<String, Problem> {
    if raw.parse::<AccountId>().is_ok() {
        return Ok(raw.to_owned());
    }
    match Address::parse(raw) {
        Some(Address::Contract(_)) => Ok(raw.to_owned()),
        Some(Address::Account(m)) if m.muxed_id.is_some() => Err(Problem::invalid_field(
            "account_id",
            format!(
                "muxed accounts have no history of their own; use the base account {}",
                m.account
            ),
        )),
        _ => Err(Problem::invalid_field(
            "account_id",
            "expected a G... account id or a C... contract id",
        )),
    }
}

/// Parses a ledger sequence.
pub fn parse_ledger(raw: &str) -> Result<u32, Problem> {
    match raw.parse::<u32>() {
        Ok(seq) if seq >= 1 && seq <= i32::MAX as u32 => Ok(seq),
        _ => Err(Problem::invalid_field(
            "sequence",
            "expected a ledger sequence number between 1 and 2147483647",
        )),
    }
}

/// Parses a transaction hash (64 hex digits).
pub fn parse_hash(raw: &str) -> Result<[u8; 32], Problem> {
    let mut out = [0u8; 32];
    if raw.len() == 64 && hex::decode_to_slice(raw, &mut out).is_ok() {
        Ok(out)
    } else {
        Err(Problem::invalid_field(
            "hash",
            "expected a transaction hash: 64 hexadecimal digits",
        ))
    }
}

/// The last id ledger `seq` could hold: a cursor after it starts at the next ledger.
pub fn after_ledger(seq: u32) -> i64 {
    ((i64::from(seq) + 1) << 32) - 1
}

/// Parses an operation id (a TOID: a positive integer).
pub fn parse_operation_id(raw: &str) -> Result<i64, Problem> {
    match raw.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(Problem::invalid_field(
            "id",
            "expected an operation id: a positive integer",
        )),
    }
}

/// Where a page starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cursor {
    /// From the start of the order (oldest for asc, newest for desc).
    Start,
    /// `now`: the chain tip (an ascending page from now is empty until ledgers arrive).
    Now,
    /// After this paging token (exclusive).
    After(i64),
}

/// Page order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first.
    Desc,
}

impl Order {
    /// The query-string form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Asc => "asc",
            Self::Desc => "desc",
        }
    }

    /// The other order.
    pub fn reverse(self) -> Self {
        match self {
            Self::Asc => Self::Desc,
            Self::Desc => Self::Asc,
        }
    }
}

/// Which side of an account's payments to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Payments the account sent (including those where it is both sides).
    Outgoing,
    /// Payments the account received (including those where it is both sides).
    Incoming,
}

impl Direction {
    /// The query-string form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Outgoing => "outgoing",
            Self::Incoming => "incoming",
        }
    }

    /// The stored direction codes that match.
    pub fn codes(self) -> [i16; 2] {
        match self {
            Self::Outgoing => DirectionCode::OUTGOING,
            Self::Incoming => DirectionCode::INCOMING,
        }
    }
}

/// A fully validated payments request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PageRequest {
    /// Which payments.
    pub scope: Scope,
    /// Where to start.
    pub cursor: Cursor,
    /// Order.
    pub order: Order,
    /// Page size, 1..=200.
    pub limit: u32,
    /// Whether failed transactions' payments are listed.
    pub include_failed: bool,
    /// Whether each record embeds its transaction.
    pub join_transactions: bool,
    /// Only payments moving this asset.
    pub asset: Option<Asset>,
    /// Only this side of an account's payments.
    pub direction: Option<Direction>,
    /// Only payments in ledgers closed at or after this time (unix seconds).
    pub from_time: Option<i64>,
    /// Only payments in ledgers closed before this time (unix seconds).
    pub to_time: Option<i64>,
}

fn parse_bool(field: &str, raw: &str) -> Result<bool, Problem> {
    match raw {
        "true" => Ok(true),
        "false" | "" => Ok(false),
        _ => Err(Problem::invalid_field(field, "expected true or false")),
    }
}

fn parse_time(field: &str, raw: &str) -> Result<i64, Problem> {
    if let Ok(t) = OffsetDateTime::parse(raw, &Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    Err(Problem::invalid_field(
        field,
        "expected an RFC 3339 time such as 2024-05-01T00:00:00Z",
    ))
}

/// Names every query parameter the payments routes understand (others are ignored, as
/// Horizon ignores them).
pub const PARAMETERS: [&str; 9] = [
    "cursor",
    "order",
    "limit",
    "include_failed",
    "join",
    "asset",
    "direction",
    "from_time",
    "to_time",
];

impl PageRequest {
    /// Validates the query string of a payments route. `last_event_id` (the SSE
    /// reconnection header) overrides `cursor`, as in Horizon.
    pub fn parse(
        scope: Scope,
        query: &[(String, String)],
        last_event_id: Option<&str>,
    ) -> Result<Self, Problem> {
        let mut seen: [Option<&str>; PARAMETERS.len()] = [None; PARAMETERS.len()];
        for (key, value) in query {
            if let Some(i) = PARAMETERS.iter().position(|p| p == key) {
                if seen[i].is_some() {
                    return Err(Problem::invalid_field(key, "given more than once"));
                }
                seen[i] = Some(value.as_str());
            }
        }
        let [cursor, order, limit, include_failed, join, asset, direction, from_time, to_time] =
            seen;

        let cursor = match last_event_id.or(cursor) {
            None | Some("") => Cursor::Start,
            Some("now") => Cursor::Now,
            Some(raw) => match raw.parse::<i64>() {
                Ok(token) if token >= 0 => Cursor::After(token),
                _ => {
                    return Err(Problem::invalid_field(
                        "cursor",
                        "expected a paging token (a non-negative integer) or \"now\"",
                    ))
                }
            },
        };
        let order = match order {
            None | Some("") | Some("asc") => Order::Asc,
            Some("desc") => Order::Desc,
            Some(_) => return Err(Problem::invalid_field("order", "expected asc or desc")),
        };
        let limit = match limit {
            None | Some("") => DEFAULT_LIMIT,
            Some(raw) => match raw.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(Problem::invalid_field(
                        "limit",
                        format!("expected an integer from 1 to {MAX_LIMIT}"),
                    ))
                }
            },
        };
        let include_failed = include_failed
            .map(|v| parse_bool("include_failed", v))
            .transpose()?
            .unwrap_or(false);
        let join_transactions = match join {
            None | Some("") => false,
            Some("transactions") => true,
            Some(_) => return Err(Problem::invalid_field("join", "expected transactions")),
        };
        let asset =
            match asset {
                None | Some("") => None,
                Some(raw) => Some(Asset::parse_canonical(raw).map_err(|_| {
                    Problem::invalid_field("asset", "expected native or CODE:ISSUER")
                })?),
            };
        let direction = match direction {
            None | Some("") => None,
            Some(raw) => {
                if !matches!(scope, Scope::Account(_)) {
                    return Err(Problem::invalid_field(
                        "direction",
                        "only account routes take a direction",
                    ));
                }
                match raw {
                    "incoming" => Some(Direction::Incoming),
                    "outgoing" => Some(Direction::Outgoing),
                    _ => {
                        return Err(Problem::invalid_field(
                            "direction",
                            "expected incoming or outgoing",
                        ))
                    }
                }
            }
        };
        let from_time = from_time
            .filter(|v| !v.is_empty())
            .map(|v| parse_time("from_time", v))
            .transpose()?;
        let to_time = to_time
            .filter(|v| !v.is_empty())
            .map(|v| parse_time("to_time", v))
            .transpose()?;
        if let (Some(from), Some(to)) = (from_time, to_time) {
            if from >= to {
                return Err(Problem::invalid_field(
                    "to_time",
                    "must be later than from_time",
                ));
            }
        }
        // A transaction's payments are listed whether or not it succeeded: the caller
        // named the transaction.
        let include_failed = include_failed || matches!(scope, Scope::Transaction(_));
        Ok(Self {
            scope,
            cursor,
            order,
            limit,
            include_failed,
            join_transactions,
            asset,
            direction,
            from_time,
            to_time,
        })
    }

    /// Resolves `cursor=now` against `tip`, as Horizon does: ascending, just after the
    /// last id the tip ledger could hold (so the page is empty and `next` continues from
    /// there); descending, the newest record (the same as no cursor). Any other cursor
    /// is left alone. Links built afterwards never carry `now`.
    pub fn resolve_now(&mut self, tip: u32) {
        if self.cursor == Cursor::Now {
            self.cursor = match self.order {
                Order::Asc => Cursor::After(after_ledger(tip)),
                Order::Desc => Cursor::Start,
            };
        }
    }

    /// The query string that reproduces this request with another cursor and order
    /// (for `_links`), parameters in a fixed order.
    pub fn query_string(&self, cursor: Option<&str>, order: Order) -> String {
        let mut q = String::new();
        if let Some(c) = cursor {
            let _ = write!(q, "cursor={c}&");
        } else {
            q.push_str("cursor=&");
        }
        let _ = write!(q, "limit={}&order={}", self.limit, order.as_str());
        if self.include_failed && !matches!(self.scope, Scope::Transaction(_)) {
            q.push_str("&include_failed=true");
        }
        if self.join_transactions {
            q.push_str("&join=transactions");
        }
        if let Some(asset) = &self.asset {
            let _ = write!(q, "&asset={}", asset.canonical());
        }
        if let Some(d) = self.direction {
            let _ = write!(q, "&direction={}", d.as_str());
        }
        if let Some(t) = self.from_time {
            let _ = write!(q, "&from_time={}", shared::horizon::format_time(t));
        }
        if let Some(t) = self.to_time {
            let _ = write!(q, "&to_time={}", shared::horizon::format_time(t));
        }
        q
    }

    /// The cursor as the query string shows it.
    pub fn cursor_text(&self) -> Option<String> {
        match self.cursor {
            Cursor::Start => None,
            Cursor::Now => Some("now".into()),
            Cursor::After(t) => Some(t.to_string()),
        }
    }

    /// The normalised form: one string per distinct request (the cache key's half).
    pub fn normalized(&self) -> String {
        let cursor = self.cursor_text();
        format!(
            "{}?{}",
            self.scope.path(),
            self.query_string(cursor.as_deref(), self.order)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_and_normalisation() {
        let a = PageRequest::parse(Scope::All, &q(&[]), None).expect("valid");
        assert_eq!(a.limit, DEFAULT_LIMIT);
        assert_eq!(a.order, Order::Asc);
        let b = PageRequest::parse(
            Scope::All,
            &q(&[("order", "asc"), ("limit", "10"), ("foo", "bar")]),
            None,
        )
        .expect("valid");
        assert_eq!(a.normalized(), b.normalized());
    }

    #[test]
    fn bad_values_name_their_field() {
        for (key, value) in [
            ("limit", "0"),
            ("limit", "201"),
            ("limit", "ten"),
            ("order", "up"),
            ("cursor", "-1"),
            ("cursor", "abc"),
            ("include_failed", "yes"),
            ("join", "ledgers"),
            ("asset", "USD"),
            ("from_time", "yesterday"),
        ] {
            let err = PageRequest::parse(Scope::All, &q(&[(key, value)]), None)
                .expect_err("must be refused");
            assert_eq!(
                err.extras.as_ref().map(|e| e["invalid_field"].clone()),
                Some(key.into())
            );
        }
        assert!(PageRequest::parse(Scope::All, &q(&[("direction", "incoming")]), None).is_err());
    }

    #[test]
    fn now_resolves_to_a_position() {
        let mut asc = PageRequest::parse(Scope::All, &q(&[("cursor", "now")]), None).expect("ok");
        asc.resolve_now(7);
        assert_eq!(asc.cursor, Cursor::After((8 << 32) - 1));
        assert!(!asc.normalized().contains("now"));
        let mut desc = PageRequest::parse(
            Scope::All,
            &q(&[("cursor", "now"), ("order", "desc")]),
            None,
        )
        .expect("ok");
        desc.resolve_now(7);
        assert_eq!(desc.cursor, Cursor::Start);
    }

    #[test]
    fn last_event_id_overrides_cursor() {
        let r = PageRequest::parse(Scope::All, &q(&[("cursor", "5")]), Some("9")).expect("valid");
        assert_eq!(r.cursor, Cursor::After(9));
    }

    #[test]
    fn path_parameters() {
        assert!(parse_ledger("0").is_err());
        assert!(parse_ledger("12a").is_err());
        assert_eq!(parse_ledger("51000294").ok(), Some(51_000_294));
        assert!(parse_hash("zz").is_err());
        assert!(parse_account("GAHK7EEG").is_err());
        assert!(parse_account(
            "MAHK7EEG2WWHVKDNT4CEQFZGKF2LGDSW2IVM4S5DP42RBW3K6BTOCAAAAAADZU6VFBOJ2"
        )
        .is_err());
        assert!(parse_account("GAHK7EEG2WWHVKDNT4CEQFZGKF2LGDSW2IVM4S5DP42RBW3K6BTODB4A").is_ok());
    }
}
