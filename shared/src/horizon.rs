//! Horizon-compatible JSON for payment records and their transactions: the shape the
//! API serves and `writer extract` prints, so that existing Stellar SDKs read it as is.
//! Amounts are seven-place decimal strings, muxed accounts appear as the base `G...`
//! address plus `*_muxed` (`M...`) and `*_muxed_id` fields, ids are decimal strings.

use base64::Engine as _;
use std::sync::Arc;

use serde::ser::{Error as _, SerializeMap, Serializer};
use serde::Serialize;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::address::{Address, MuxedAccountId};
use crate::amount::format_stroops;
use crate::asset::Asset;
use crate::payment::{
    AssetBalanceChange, HostFunction, Memo, PathPaymentStrictness, PaymentKind, PaymentRecord,
    TransactionContext, TransactionFacts,
};

/// Renders a close time as Horizon does: RFC 3339, UTC, whole seconds.
pub fn format_time(unix_seconds: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix_seconds)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix_seconds.to_string())
}

/// Where links point: the public base URL of the API (empty for relative links).
#[derive(Clone, Debug, Default)]
pub struct LinkBase(pub String);

impl LinkBase {
    /// A HAL link to `path` under this base.
    pub fn link(&self, path: std::fmt::Arguments<'_>) -> Link {
        Link {
            href: format!("{}{}", self.0.trim_end_matches('/'), path),
        }
    }
}

/// A HAL link object: `{"href": ...}`.
#[derive(Clone, Debug, Serialize)]
pub struct Link {
    /// The target.
    pub href: String,
}

/// The three keys a (possibly muxed) account takes in a resource.
struct MuxedKeys {
    base: &'static str,
    muxed: &'static str,
    id: &'static str,
}

macro_rules! muxed_keys {
    ($field:literal) => {
        MuxedKeys {
            base: $field,
            muxed: concat!($field, "_muxed"),
            id: concat!($field, "_muxed_id"),
        }
    };
}

fn put_muxed<M: SerializeMap>(
    out: &mut M,
    keys: MuxedKeys,
    account: &MuxedAccountId,
) -> Result<(), M::Error> {
    out.serialize_entry(keys.base, &account.account.to_strkey())?;
    if let (Some(muxed), Some(id)) = (account.muxed_strkey(), account.muxed_id) {
        out.serialize_entry(keys.muxed, &muxed)?;
        out.serialize_entry(keys.id, &id.to_string())?;
    }
    Ok(())
}

/// The three keys an asset takes in a resource, with or without the `source_` prefix.
struct AssetKeys {
    kind: &'static str,
    code: &'static str,
    issuer: &'static str,
}

const ASSET: AssetKeys = AssetKeys {
    kind: "asset_type",
    code: "asset_code",
    issuer: "asset_issuer",
};

const SOURCE_ASSET: AssetKeys = AssetKeys {
    kind: "source_asset_type",
    code: "source_asset_code",
    issuer: "source_asset_issuer",
};

fn put_asset<M: SerializeMap>(out: &mut M, keys: AssetKeys, asset: &Asset) -> Result<(), M::Error> {
    out.serialize_entry(keys.kind, asset.type_name())?;
    if let (Some(code), Some(issuer)) = (asset.code(), asset.issuer()) {
        out.serialize_entry(keys.code, &code.as_str())?;
        out.serialize_entry(keys.issuer, &issuer.to_strkey())?;
    }
    Ok(())
}

/// An asset as an object of its own (a path payment's `path` entries).
struct AssetObject<'a>(&'a Asset);

impl Serialize for AssetObject<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_map(None)?;
        put_asset(&mut out, ASSET, self.0)?;
        out.end()
    }
}

/// One entry of `asset_balance_changes`.
struct BalanceChangeObject<'a>(&'a AssetBalanceChange);

impl Serialize for BalanceChangeObject<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let change = self.0;
        let mut out = serializer.serialize_map(None)?;
        put_asset(&mut out, ASSET, &change.asset)?;
        out.serialize_entry("type", change.kind.as_str())?;
        if let Some(from) = &change.from {
            out.serialize_entry("from", &from.to_strkey())?;
        }
        if let Some(to) = &change.to {
            out.serialize_entry("to", &to.to_strkey())?;
        }
        out.serialize_entry("amount", &format_stroops(change.amount))?;
        if let Some(Address::Account(MuxedAccountId {
            muxed_id: Some(id), ..
        })) = &change.to
        {
            out.serialize_entry("destination_muxed_id", &id.to_string())?;
        }
        out.end()
    }
}

/// One of an invoked host function's `parameters`.
#[derive(Serialize)]
struct Parameter<'a> {
    value: std::borrow::Cow<'a, str>,
    #[serde(rename = "type")]
    kind: &'a str,
}

/// Horizon's operation resource for one payment record, with `transaction_successful`
/// and, when asked (`join=transactions`), the transaction embedded. It serialises
/// straight to the output, without an intermediate JSON tree.
///
/// The record may carry its transaction whole or only its summary
/// ([`TransactionFacts`]); embedding a transaction that the record does not carry is a
/// serialisation error, never a resource without it.
#[derive(Debug)]
pub struct PaymentResource<'a, T = Arc<TransactionContext>> {
    record: &'a PaymentRecord<T>,
    links: &'a LinkBase,
    embed_transaction: bool,
}

impl<T> Clone for PaymentResource<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for PaymentResource<'_, T> {}

impl<'a, T> PaymentResource<'a, T> {
    /// The resource for `record`, its links under `links`.
    pub fn new(record: &'a PaymentRecord<T>, links: &'a LinkBase, embed_transaction: bool) -> Self {
        Self {
            record,
            links,
            embed_transaction,
        }
    }
}

#[derive(Serialize)]
struct PaymentLinks {
    #[serde(rename = "self")]
    own: Link,
    transaction: Link,
}

impl<T: TransactionFacts> Serialize for PaymentResource<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let record = self.record;
        let id = record.id.to_string();
        let tx = &record.transaction;
        let tx_hash = hex::encode(tx.hash());
        let payment_type = record.payment_type();
        let mut out = serializer.serialize_map(None)?;
        out.serialize_entry(
            "_links",
            &PaymentLinks {
                own: self.links.link(format_args!("/operations/{id}")),
                transaction: self.links.link(format_args!("/transactions/{tx_hash}")),
            },
        )?;
        out.serialize_entry("id", &id)?;
        out.serialize_entry("paging_token", &id)?;
        out.serialize_entry("transaction_successful", &tx.successful())?;
        put_muxed(&mut out, muxed_keys!("source_account"), &record.source)?;
        out.serialize_entry("type", payment_type.as_str())?;
        out.serialize_entry("type_i", &payment_type.type_i())?;
        out.serialize_entry("created_at", &format_time(tx.closed_at()))?;
        out.serialize_entry("transaction_hash", &tx_hash)?;

        match &record.kind {
            PaymentKind::CreateAccount {
                account,
                starting_balance,
            } => {
                out.serialize_entry(
                    "starting_balance",
                    &format_stroops((*starting_balance).into()),
                )?;
                put_muxed(&mut out, muxed_keys!("funder"), &record.source)?;
                out.serialize_entry("account", &account.to_strkey())?;
            }
            PaymentKind::Payment { to, asset, amount } => {
                put_asset(&mut out, ASSET, asset)?;
                put_muxed(&mut out, muxed_keys!("from"), &record.source)?;
                put_muxed(&mut out, muxed_keys!("to"), to)?;
                out.serialize_entry("amount", &format_stroops((*amount).into()))?;
            }
            PaymentKind::PathPayment {
                strict,
                to,
                asset,
                amount,
                source_asset,
                source_amount,
                limit,
                path,
            } => {
                put_asset(&mut out, ASSET, asset)?;
                put_muxed(&mut out, muxed_keys!("from"), &record.source)?;
                put_muxed(&mut out, muxed_keys!("to"), to)?;
                out.serialize_entry("amount", &format_stroops((*amount).into()))?;
                let path: Vec<AssetObject<'_>> = path.iter().map(AssetObject).collect();
                out.serialize_entry("path", &path)?;
                out.serialize_entry("source_amount", &format_stroops((*source_amount).into()))?;
                let limit_field = match strict {
                    PathPaymentStrictness::StrictReceive => "source_max",
                    PathPaymentStrictness::StrictSend => "destination_min",
                };
                out.serialize_entry(limit_field, &format_stroops((*limit).into()))?;
                put_asset(&mut out, SOURCE_ASSET, source_asset)?;
            }
            PaymentKind::AccountMerge { into, amount } => {
                put_muxed(&mut out, muxed_keys!("account"), &record.source)?;
                put_muxed(&mut out, muxed_keys!("into"), into)?;
                if let Some(amount) = amount {
                    out.serialize_entry("amount", &format_stroops((*amount).into()))?;
                }
            }
            PaymentKind::InvokeHostFunction {
                function,
                balance_changes,
            } => {
                out.serialize_entry("function", function.horizon_name())?;
                let (parameters, address, salt) = host_function_fields(function);
                out.serialize_entry("parameters", &parameters)?;
                out.serialize_entry("address", &address)?;
                out.serialize_entry("salt", &salt)?;
                let changes: Vec<BalanceChangeObject<'_>> =
                    balance_changes.iter().map(BalanceChangeObject).collect();
                out.serialize_entry("asset_balance_changes", &changes)?;
            }
        }
        if self.embed_transaction {
            let tx = tx.context().ok_or_else(|| {
                S::Error::custom("the transaction to embed was not read with the record")
            })?;
            out.serialize_entry("transaction", &TransactionResource::new(tx, self.links))?;
        }
        out.end()
    }
}

/// Renders one payment record as Horizon's operation resource for its type, as a JSON
/// tree (see [`PaymentResource`] to serialise without one).
pub fn payment_json(record: &PaymentRecord, links: &LinkBase, embed_transaction: bool) -> Value {
    // Every key is a string, so conversion to a tree cannot fail.
    serde_json::to_value(PaymentResource::new(record, links, embed_transaction)).unwrap_or_default()
}

fn host_function_fields(function: &HostFunction) -> (Vec<Parameter<'_>>, String, String) {
    match function {
        HostFunction::InvokeContract {
            contract,
            function,
            args,
        } => {
            // Horizon lists the contract address and the function name first, as values.
            let mut params = Vec::with_capacity(args.len() + 2);
            params.push(Parameter {
                value: stellar_address_scval(contract).into(),
                kind: "Address",
            });
            params.push(Parameter {
                value: symbol_scval(function).into(),
                kind: "Sym",
            });
            params.extend(args.iter().map(|(kind, value)| Parameter {
                value: value.as_str().into(),
                kind,
            }));
            (params, String::new(), String::new())
        }
        HostFunction::CreateContract { deployer, salt, .. } => (
            Vec::new(),
            deployer
                .as_ref()
                .map(Address::to_strkey)
                .unwrap_or_default(),
            salt.map(|s| u256_decimal(&s)).unwrap_or_default(),
        ),
        HostFunction::UploadWasm => (Vec::new(), String::new(), String::new()),
    }
}

fn stellar_address_scval(address: &Address) -> String {
    use stellar_xdr::{ScAddress, ScVal, WriteXdr};
    let sc = match address {
        Address::Contract(c) => ScAddress::Contract(stellar_xdr::ContractId(stellar_xdr::Hash(*c))),
        Address::Account(a) => ScAddress::Account(stellar_xdr::AccountId(
            stellar_xdr::PublicKey::PublicKeyTypeEd25519(stellar_xdr::Uint256(a.account.0)),
        )),
        Address::ClaimableBalance(b) => ScAddress::ClaimableBalance(
            stellar_xdr::ClaimableBalanceId::ClaimableBalanceIdTypeV0(stellar_xdr::Hash(*b)),
        ),
        Address::LiquidityPool(p) => {
            ScAddress::LiquidityPool(stellar_xdr::PoolId(stellar_xdr::Hash(*p)))
        }
    };
    ScVal::Address(sc)
        .to_xdr(stellar_xdr::Limits::none())
        .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
        .unwrap_or_default()
}

fn symbol_scval(symbol: &str) -> String {
    use stellar_xdr::{ScSymbol, ScVal, WriteXdr};
    ScSymbol::try_from(symbol.as_bytes().to_vec())
        .ok()
        .and_then(|s| ScVal::Symbol(s).to_xdr(stellar_xdr::Limits::none()).ok())
        .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
        .unwrap_or_default()
}

/// The decimal form of a big-endian 256-bit number (Horizon shows salts this way).
fn u256_decimal(bytes: &[u8; 32]) -> String {
    // Repeated division by 10 over base-2^32 limbs.
    let mut limbs: Vec<u32> = bytes
        .chunks(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mut digits = Vec::new();
    while limbs.iter().any(|&l| l != 0) {
        let mut remainder: u64 = 0;
        for limb in limbs.iter_mut() {
            let value = (remainder << 32) | u64::from(*limb);
            *limb = (value / 10) as u32;
            remainder = value % 10;
        }
        digits.push(b'0' + remainder as u8);
    }
    if digits.is_empty() {
        return "0".to_owned();
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

/// Horizon's transaction resource (the fields this system keeps), serialised straight
/// to the output.
#[derive(Clone, Copy, Debug)]
pub struct TransactionResource<'a> {
    tx: &'a TransactionContext,
    links: &'a LinkBase,
}

impl<'a> TransactionResource<'a> {
    /// The resource for `tx`, its links under `links`.
    pub fn new(tx: &'a TransactionContext, links: &'a LinkBase) -> Self {
        Self { tx, links }
    }
}

/// Only links to routes the reader serves (no `ledger`: ledgers are not a resource of
/// this API; the `ledger` field carries the sequence).
#[derive(Serialize)]
struct TransactionLinks {
    #[serde(rename = "self")]
    own: Link,
    payments: Link,
}

#[derive(Serialize)]
struct TimeBounds {
    min_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_time: Option<String>,
}

#[derive(Serialize)]
struct Preconditions {
    timebounds: TimeBounds,
}

#[derive(Serialize)]
struct HashOnly<'a> {
    hash: &'a str,
}

impl Serialize for TransactionResource<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let tx = self.tx;
        let hash = hex::encode(tx.hash);
        let mut out = serializer.serialize_map(None)?;
        out.serialize_entry(
            "_links",
            &TransactionLinks {
                own: self.links.link(format_args!("/transactions/{hash}")),
                payments: self
                    .links
                    .link(format_args!("/transactions/{hash}/payments")),
            },
        )?;
        out.serialize_entry("id", &hash)?;
        out.serialize_entry("paging_token", &tx.id.to_string())?;
        out.serialize_entry("successful", &tx.successful)?;
        out.serialize_entry("hash", &hash)?;
        out.serialize_entry("ledger", &tx.ledger_seq)?;
        out.serialize_entry("created_at", &format_time(tx.closed_at))?;
        put_muxed(&mut out, muxed_keys!("source_account"), &tx.source)?;
        out.serialize_entry("source_account_sequence", &tx.source_sequence.to_string())?;
        put_muxed(
            &mut out,
            muxed_keys!("fee_account"),
            tx.fee_source.as_ref().unwrap_or(&tx.source),
        )?;
        out.serialize_entry("fee_charged", &tx.fee_charged.to_string())?;
        out.serialize_entry("max_fee", &tx.max_fee.to_string())?;
        out.serialize_entry("operation_count", &tx.operation_count)?;
        out.serialize_entry("memo_type", tx.memo.type_name())?;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        match &tx.memo {
            Memo::None => {}
            Memo::Text(bytes) => {
                out.serialize_entry("memo", &String::from_utf8_lossy(bytes))?;
                out.serialize_entry("memo_bytes", &b64(bytes))?;
            }
            Memo::Id(id) => out.serialize_entry("memo", &id.to_string())?,
            Memo::Hash(h) | Memo::Return(h) => out.serialize_entry("memo", &b64(h))?,
        }
        if let Some((min, max)) = tx.time_bounds {
            out.serialize_entry("valid_after", &format_time(min as i64))?;
            if max != 0 {
                out.serialize_entry("valid_before", &format_time(max as i64))?;
            }
            out.serialize_entry(
                "preconditions",
                &Preconditions {
                    timebounds: TimeBounds {
                        min_time: min.to_string(),
                        max_time: (max != 0).then(|| max.to_string()),
                    },
                },
            )?;
        }
        if let (Some(inner), Some(_)) = (tx.inner_hash, tx.fee_source) {
            out.serialize_entry("fee_bump_transaction", &HashOnly { hash: &hash })?;
            out.serialize_entry(
                "inner_transaction",
                &HashOnly {
                    hash: &hex::encode(inner),
                },
            )?;
        }
        out.end()
    }
}

/// Renders a transaction as Horizon's transaction resource, as a JSON tree (see
/// [`TransactionResource`] to serialise without one).
pub fn transaction_json(tx: &TransactionContext, links: &LinkBase) -> Value {
    serde_json::to_value(TransactionResource::new(tx, links)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(format_time(1_595_884_371), "2020-07-27T21:12:51Z");
    }

    #[test]
    fn u256_to_decimal() {
        let mut n = [0u8; 32];
        assert_eq!(u256_decimal(&n), "0");
        n[31] = 255;
        n[30] = 1;
        assert_eq!(u256_decimal(&n), "511");
        assert_eq!(
            u256_decimal(&[0xff; 32]),
            "115792089237316195423570985008687907853269984665640564039457584007913129639935"
        );
    }
}
