//! Horizon-compatible JSON for payment records and their transactions: the shape the
//! API serves and `writer extract` prints, so that existing Stellar SDKs read it as is.
//! Amounts are seven-place decimal strings, muxed accounts appear as the base `G...`
//! address plus `*_muxed` (`M...`) and `*_muxed_id` fields, ids are decimal strings.

use base64::Engine as _;
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::address::{Address, MuxedAccountId};
use crate::amount::format_stroops;
use crate::asset::Asset;
use crate::payment::{HostFunction, Memo, PaymentKind, PaymentRecord, TransactionContext};

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
    fn href(&self, path: &str) -> Value {
        json!({ "href": format!("{}{}", self.0.trim_end_matches('/'), path) })
    }
}

fn put_muxed(out: &mut Map<String, Value>, field: &str, account: &MuxedAccountId) {
    out.insert(field.to_owned(), Value::String(account.account.to_strkey()));
    if let (Some(muxed), Some(id)) = (account.muxed_strkey(), account.muxed_id) {
        out.insert(format!("{field}_muxed"), Value::String(muxed));
        out.insert(format!("{field}_muxed_id"), Value::String(id.to_string()));
    }
}

fn put_asset(out: &mut Map<String, Value>, prefix: &str, asset: &Asset) {
    out.insert(
        format!("{prefix}asset_type"),
        Value::from(asset.type_name()),
    );
    if let (Some(code), Some(issuer)) = (asset.code(), asset.issuer()) {
        out.insert(format!("{prefix}asset_code"), Value::from(code.to_string()));
        out.insert(
            format!("{prefix}asset_issuer"),
            Value::from(issuer.to_strkey()),
        );
    }
}

fn asset_object(asset: &Asset) -> Value {
    let mut out = Map::new();
    put_asset(&mut out, "", asset);
    Value::Object(out)
}

fn address_text(address: &Address) -> String {
    address.to_strkey()
}

/// Renders one payment record as Horizon's operation resource for its type, with
/// `transaction_successful`. `transaction`, when given, is embedded (`join=transactions`).
pub fn payment_json(record: &PaymentRecord, links: &LinkBase, embed_transaction: bool) -> Value {
    let id = record.id.to_string();
    let tx = &record.transaction;
    let tx_hash = hex::encode(tx.hash);
    let payment_type = record.payment_type();
    let mut out = Map::new();
    out.insert(
        "_links".into(),
        json!({
            "self": links.href(&format!("/operations/{id}")),
            "transaction": links.href(&format!("/transactions/{tx_hash}")),
        }),
    );
    out.insert("id".into(), Value::String(id.clone()));
    out.insert("paging_token".into(), Value::String(id));
    out.insert("transaction_successful".into(), Value::Bool(tx.successful));
    put_muxed(&mut out, "source_account", &record.source);
    out.insert("type".into(), Value::from(payment_type.as_str()));
    out.insert("type_i".into(), Value::from(payment_type.type_i()));
    out.insert(
        "created_at".into(),
        Value::String(format_time(tx.closed_at)),
    );
    out.insert("transaction_hash".into(), Value::String(tx_hash));

    match &record.kind {
        PaymentKind::CreateAccount {
            account,
            starting_balance,
        } => {
            out.insert(
                "starting_balance".into(),
                format_stroops((*starting_balance).into()).into(),
            );
            put_muxed(&mut out, "funder", &record.source);
            out.insert("account".into(), Value::String(account.to_strkey()));
        }
        PaymentKind::Payment { to, asset, amount } => {
            put_asset(&mut out, "", asset);
            put_muxed(&mut out, "from", &record.source);
            put_muxed(&mut out, "to", to);
            out.insert("amount".into(), format_stroops((*amount).into()).into());
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
            put_asset(&mut out, "", asset);
            put_muxed(&mut out, "from", &record.source);
            put_muxed(&mut out, "to", to);
            out.insert("amount".into(), format_stroops((*amount).into()).into());
            out.insert(
                "path".into(),
                Value::Array(path.iter().map(asset_object).collect()),
            );
            out.insert(
                "source_amount".into(),
                format_stroops((*source_amount).into()).into(),
            );
            let limit_field = match strict {
                crate::payment::PathPaymentStrictness::StrictReceive => "source_max",
                crate::payment::PathPaymentStrictness::StrictSend => "destination_min",
            };
            out.insert(limit_field.into(), format_stroops((*limit).into()).into());
            put_asset(&mut out, "source_", source_asset);
        }
        PaymentKind::AccountMerge { into, amount } => {
            put_muxed(&mut out, "account", &record.source);
            put_muxed(&mut out, "into", into);
            if let Some(amount) = amount {
                out.insert("amount".into(), format_stroops((*amount).into()).into());
            }
        }
        PaymentKind::InvokeHostFunction {
            function,
            balance_changes,
        } => {
            out.insert("function".into(), Value::from(function.horizon_name()));
            let (parameters, address, salt) = host_function_fields(function);
            out.insert("parameters".into(), parameters);
            out.insert("address".into(), Value::String(address));
            out.insert("salt".into(), Value::String(salt));
            let changes = balance_changes
                .iter()
                .map(|change| {
                    let mut c = Map::new();
                    put_asset(&mut c, "", &change.asset);
                    c.insert("type".into(), Value::from(change.kind.as_str()));
                    if let Some(from) = &change.from {
                        c.insert("from".into(), Value::String(address_text(from)));
                    }
                    if let Some(to) = &change.to {
                        c.insert("to".into(), Value::String(address_text(to)));
                    }
                    c.insert(
                        "amount".into(),
                        Value::String(format_stroops(change.amount)),
                    );
                    if let Some(Address::Account(MuxedAccountId {
                        muxed_id: Some(id), ..
                    })) = &change.to
                    {
                        c.insert("destination_muxed_id".into(), Value::String(id.to_string()));
                    }
                    Value::Object(c)
                })
                .collect();
            out.insert("asset_balance_changes".into(), Value::Array(changes));
        }
    }
    if embed_transaction {
        out.insert("transaction".into(), transaction_json(tx, links));
    }
    Value::Object(out)
}

fn host_function_fields(function: &HostFunction) -> (Value, String, String) {
    let param = |ty: &str, value: String| json!({ "value": value, "type": ty });
    match function {
        HostFunction::InvokeContract {
            contract,
            function,
            args,
        } => {
            // Horizon lists the contract address and the function name first, as values.
            let mut params = Vec::with_capacity(args.len() + 2);
            let address = stellar_address_scval(contract);
            params.push(param("Address", address));
            params.push(param("Sym", symbol_scval(function)));
            params.extend(args.iter().map(|(ty, value)| param(ty, value.clone())));
            (Value::Array(params), String::new(), String::new())
        }
        HostFunction::CreateContract { deployer, salt, .. } => (
            Value::Array(Vec::new()),
            deployer.as_ref().map(address_text).unwrap_or_default(),
            salt.map(|s| u256_decimal(&s)).unwrap_or_default(),
        ),
        HostFunction::UploadWasm => (Value::Array(Vec::new()), String::new(), String::new()),
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

/// Renders a transaction as Horizon's transaction resource (the fields this system keeps).
pub fn transaction_json(tx: &TransactionContext, links: &LinkBase) -> Value {
    let hash = hex::encode(tx.hash);
    let mut out = Map::new();
    out.insert(
        "_links".into(),
        json!({
            "self": links.href(&format!("/transactions/{hash}")),
            "ledger": links.href(&format!("/ledgers/{}", tx.ledger_seq)),
            "payments": links.href(&format!("/transactions/{hash}/payments")),
        }),
    );
    out.insert("id".into(), Value::String(hash.clone()));
    out.insert("paging_token".into(), Value::String(tx.id.to_string()));
    out.insert("successful".into(), Value::Bool(tx.successful));
    out.insert("hash".into(), Value::String(hash.clone()));
    out.insert("ledger".into(), Value::from(tx.ledger_seq));
    out.insert(
        "created_at".into(),
        Value::String(format_time(tx.closed_at)),
    );
    put_muxed(&mut out, "source_account", &tx.source);
    out.insert(
        "source_account_sequence".into(),
        Value::String(tx.source_sequence.to_string()),
    );
    put_muxed(
        &mut out,
        "fee_account",
        tx.fee_source.as_ref().unwrap_or(&tx.source),
    );
    out.insert(
        "fee_charged".into(),
        Value::String(tx.fee_charged.to_string()),
    );
    out.insert("max_fee".into(), Value::String(tx.max_fee.to_string()));
    out.insert("operation_count".into(), Value::from(tx.operation_count));
    out.insert("memo_type".into(), Value::from(tx.memo.type_name()));
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    match &tx.memo {
        Memo::None => {}
        Memo::Text(bytes) => {
            out.insert(
                "memo".into(),
                Value::String(String::from_utf8_lossy(bytes).into_owned()),
            );
            out.insert("memo_bytes".into(), Value::String(b64(bytes)));
        }
        Memo::Id(id) => {
            out.insert("memo".into(), Value::String(id.to_string()));
        }
        Memo::Hash(h) | Memo::Return(h) => {
            out.insert("memo".into(), Value::String(b64(h)));
        }
    }
    if let Some((min, max)) = tx.time_bounds {
        out.insert("valid_after".into(), Value::String(format_time(min as i64)));
        if max != 0 {
            out.insert(
                "valid_before".into(),
                Value::String(format_time(max as i64)),
            );
        }
        let mut bounds = json!({ "min_time": min.to_string() });
        if max != 0 {
            bounds["max_time"] = Value::String(max.to_string());
        }
        out.insert("preconditions".into(), json!({ "timebounds": bounds }));
    }
    if let (Some(inner), Some(_)) = (tx.inner_hash, tx.fee_source) {
        out.insert("fee_bump_transaction".into(), json!({ "hash": hash }));
        out.insert(
            "inner_transaction".into(),
            json!({ "hash": hex::encode(inner) }),
        );
    }
    Value::Object(out)
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
