//! Request parameters: parsed, validated and normalised. A normalised request is the
//! input of every query and of the page's ETag, so two spellings of the same request
//! get the same page under the same tag, and every bad value is a 400 naming its field.
//!
//! What must hold: this module and the OpenAPI document (`openapi.rs`, built from the
//! patterns and bounds below) accept exactly the same values. Every value the document's
//! schemas admit parses (a strkey also needs a valid checksum, which no pattern can
//! state; the document says so and names the format), every value they reject is a 400,
//! and an empty value means the parameter's default (`allowEmptyValue`).

use std::fmt::Write as _;

use shared::address::{AccountId, Address};
use shared::asset::Asset;
use shared::stored::DirectionCode;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::problem::Problem;

/// The account payments route (its metrics label and Cache-Control policy key).
pub const ACCOUNT_ROUTE: &str = "/accounts/{account_id}/payments";
/// The largest page, as in Horizon.
pub const MAX_LIMIT: u32 = 200;
/// The page size when none is asked for.
pub const DEFAULT_LIMIT: u32 = 10;
/// The largest ledger sequence (ledger sequences are stored as Postgres `integer`).
pub const MAX_LEDGER: u32 = i32::MAX as u32;
/// The largest paging token (TOIDs are signed 64-bit).
pub const MAX_CURSOR: i64 = i64::MAX;

/// An account route's address: a `G...` account (version byte 6 << 3) or a `C...`
/// contract (2 << 3), 56 base-32 characters. The version byte fixes the first character
/// and the top three bits of the second; the last two bytes are a CRC-16 checksum.
pub const ADDRESS_PATTERN: &str = "^[GC][A-D][A-Z2-7]{54}$";
/// An asset: `native` or `CODE:ISSUER` (1 to 12 letters and digits, a `G...` issuer).
pub const ASSET_PATTERN: &str = "^(native|[A-Za-z0-9]{1,12}:G[A-D][A-Z2-7]{54})$";
/// A transaction hash: 64 hexadecimal digits, either case.
pub const HASH_PATTERN: &str = "^[0-9a-fA-F]{64}$";

/// An unsigned decimal number: ASCII digits only (no sign, no spaces), as the document's
/// `integer` schemas are written in a query string or path.
fn decimal<T: std::str::FromStr>(raw: &str) -> Option<T> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

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
            Self::Account(_) => ACCOUNT_ROUTE,
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
    match decimal::<u32>(raw) {
        Some(seq) if (1..=MAX_LEDGER).contains(&seq) => Ok(seq),
        _ => Err(Problem::invalid_field(
            "sequence",
            format!("expected a ledger sequence number between 1 and {MAX_LEDGER}"),
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
    match decimal::<i64>(raw) {
        Some(id) if id > 0 => Ok(id),
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
    pub fn parse<K: AsRef<str>, V: AsRef<str>>(
        scope: Scope,
        query: &[(K, V)],
        last_event_id: Option<&str>,
    ) -> Result<Self, Problem> {
        let mut seen: [Option<&str>; PARAMETERS.len()] = [None; PARAMETERS.len()];
        for (key, value) in query {
            let key = key.as_ref();
            if let Some(i) = PARAMETERS.iter().position(|p| *p == key) {
                if seen[i].is_some() {
                    return Err(Problem::invalid_field(key, "given more than once"));
                }
                seen[i] = Some(value.as_ref());
            }
        }
        let [cursor, order, limit, include_failed, join, asset, direction, from_time, to_time] =
            seen;

        let cursor = match last_event_id.or(cursor) {
            None | Some("") => Cursor::Start,
            Some("now") => Cursor::Now,
            Some(raw) => match decimal::<i64>(raw) {
                Some(token) => Cursor::After(token),
                None => {
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
            Some(raw) => match decimal::<u32>(raw) {
                Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
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
        // A window that closes before it opens (to_time <= from_time) is valid and
        // holds no payment: the page is empty, as for any window without payments.
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
        let mut q = String::with_capacity(48);
        self.write_query(&mut q, cursor, order);
        q
    }

    /// [`PageRequest::query_string`], appended to `q`.
    fn write_query(&self, q: &mut String, cursor: Option<&str>, order: Order) {
        q.push_str("cursor=");
        if let Some(c) = cursor {
            q.push_str(c);
        }
        let _ = write!(q, "&limit={}&order={}", self.limit, order.as_str());
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
        let mut out = String::with_capacity(128);
        self.write_normalized(&mut out);
        out
    }

    /// [`PageRequest::normalized`], appended to `out` (a cache key is built in one
    /// buffer on every request).
    pub fn write_normalized(&self, out: &mut String) {
        match &self.scope {
            Scope::All => out.push_str("/payments"),
            Scope::Account(a) => {
                out.push_str("/accounts/");
                out.push_str(a);
                out.push_str("/payments");
            }
            Scope::Ledger(s) => {
                let _ = write!(out, "/ledgers/{s}/payments");
            }
            Scope::Transaction(h) => {
                out.push_str("/transactions/");
                out.push_str(&hex::encode(h));
                out.push_str("/payments");
            }
        }
        out.push('?');
        let mut number = itoa::Buffer::new();
        let cursor = match self.cursor {
            Cursor::Start => None,
            Cursor::Now => Some("now"),
            Cursor::After(t) => Some(number.format(t)),
        };
        self.write_query(out, cursor, self.order);
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
        assert!(parse_ledger("+5").is_err());
        assert!(parse_ledger(&(MAX_LEDGER + 1).to_string()).is_err());
    }

    #[test]
    fn an_inverted_time_window_is_empty_not_an_error() {
        let r = PageRequest::parse(
            Scope::All,
            &q(&[
                ("from_time", "2024-05-02T00:00:00Z"),
                ("to_time", "2024-05-01T00:00:00Z"),
            ]),
            None,
        )
        .expect("valid");
        assert!(r.from_time >= r.to_time);
    }

    #[test]
    fn numbers_are_plain_digits() {
        for (key, value) in [("limit", "+5"), ("limit", " 5"), ("cursor", "+7")] {
            assert!(PageRequest::parse(Scope::All, &q(&[(key, value)]), None).is_err());
        }
        let r = PageRequest::parse(Scope::All, &q(&[("cursor", &MAX_CURSOR.to_string())]), None)
            .expect("the largest paging token");
        assert_eq!(r.cursor, Cursor::After(MAX_CURSOR));
    }

    /// The documented schemas and the parsers agree: everything the patterns and bounds
    /// admit parses, everything outside them is refused.
    mod agreement {
        use super::super::*;
        use super::q;
        use proptest::prelude::*;
        use proptest::string::string_regex;
        use shared::address::Address;

        /// A pattern without its anchors, for generating strings from it.
        fn unanchored(pattern: &str) -> &str {
            pattern.trim_start_matches('^').trim_end_matches('$')
        }

        fn matches(pattern: &str, value: &str) -> bool {
            regex::Regex::new(pattern).expect("pattern").is_match(value)
        }

        fn one(key: &str, value: &str) -> Result<PageRequest, Problem> {
            PageRequest::parse(Scope::All, &q(&[(key, value)]), None)
        }

        /// RFC 3339 `date-time` (section 5.6), separators in either case.
        const DATE_TIME: &str = "[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])[Tt]\
            ([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?\
            ([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])";

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn every_address_is_in_the_pattern_and_parses(key in any::<[u8; 32]>()) {
                for address in [
                    AccountId(key).to_strkey(),
                    Address::Contract(key).to_strkey(),
                ] {
                    prop_assert!(matches(ADDRESS_PATTERN, &address), "{address}");
                    prop_assert!(parse_account(&address).is_ok(), "{address}");
                }
            }

            #[test]
            fn no_address_outside_the_pattern_parses(raw in "[A-Z2-7a-z0-9+/=-]{0,70}") {
                if !matches(ADDRESS_PATTERN, &raw) {
                    prop_assert!(parse_account(&raw).is_err(), "{raw}");
                }
            }

            #[test]
            fn every_asset_in_the_pattern_parses(
                code in string_regex("[A-Za-z0-9]{1,12}").expect("regex"),
                issuer in any::<[u8; 32]>(),
            ) {
                let asset = format!("{code}:{}", AccountId(issuer).to_strkey());
                prop_assert!(matches(ASSET_PATTERN, &asset), "{asset}");
                prop_assert!(one("asset", &asset).is_ok(), "{asset}");
            }

            #[test]
            fn no_asset_outside_the_pattern_parses(raw in "[A-Za-z0-9:_-]{1,75}") {
                if !matches(ASSET_PATTERN, &raw) {
                    prop_assert!(one("asset", &raw).is_err(), "{raw}");
                }
            }

            #[test]
            fn hashes_parse_exactly_in_the_pattern(raw in "[0-9a-fA-FgxZ ]{60,68}") {
                prop_assert_eq!(parse_hash(&raw).is_ok(), matches(HASH_PATTERN, &raw), "{}", raw);
            }

            #[test]
            fn hashes_from_the_pattern_parse(raw in string_regex(unanchored(HASH_PATTERN)).expect("regex")) {
                prop_assert!(parse_hash(&raw).is_ok());
            }

            #[test]
            fn ledgers_parse_exactly_in_range(seq in any::<i64>()) {
                let in_range = (1..=i64::from(MAX_LEDGER)).contains(&seq);
                prop_assert_eq!(parse_ledger(&seq.to_string()).is_ok(), in_range);
            }

            #[test]
            fn limits_parse_exactly_in_range(n in -5i64..300) {
                let in_range = (1..=i64::from(MAX_LIMIT)).contains(&n);
                prop_assert_eq!(one("limit", &n.to_string()).is_ok(), in_range);
            }

            #[test]
            fn cursors_parse_exactly_in_range(n in any::<i128>()) {
                let in_range = (0..=i128::from(MAX_CURSOR)).contains(&n);
                prop_assert_eq!(one("cursor", &n.to_string()).is_ok(), in_range);
            }

            #[test]
            fn rfc3339_times_parse(raw in string_regex(DATE_TIME).expect("regex")) {
                prop_assert!(one("from_time", &raw).is_ok(), "{}", raw);
                prop_assert!(one("to_time", &raw).is_ok(), "{}", raw);
            }
        }
    }
}
