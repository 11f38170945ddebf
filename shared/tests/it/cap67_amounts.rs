//! The amounts the extractor reads from operations and their results agree, to the
//! stroop, with the CAP-67 balance events the network emitted for the same operations
//! (all pubnet fixture ledgers carry meta V4 with classic events). The events are read
//! here independently of the extractor: net flow per (account, asset) in each operation.

use std::collections::HashMap;

use shared::ledger_file::read_ledger_file;
use shared::testkit::fixtures;
use shared::{Extractor, Network, PaymentKind};
use stellar_xdr::{ContractEventBody, LedgerCloseMeta, ScAddress, ScVal, TransactionMeta};

type Flows = HashMap<(String, String), i128>;

fn address(val: &ScVal) -> Option<String> {
    match val {
        ScVal::Address(ScAddress::Account(id)) => Some(id.to_string()),
        ScVal::Address(ScAddress::MuxedAccount(m)) => Some(
            stellar_strkey::ed25519::PublicKey(m.ed25519.0)
                .to_string()
                .as_str()
                .to_owned(),
        ),
        ScVal::Address(other) => Some(format!("{other:?}")),
        _ => None,
    }
}

/// The amount of a balance event; `None` for other contracts' events with other data.
fn amount(val: &ScVal) -> Option<i128> {
    match val {
        ScVal::I128(p) => Some((i128::from(p.hi) << 64) | i128::from(p.lo)),
        ScVal::Map(Some(m)) => m.0.iter().find_map(|e| match (&e.key, &e.val) {
            (ScVal::Symbol(k), v) if k.0.as_slice() == b"amount" => amount(v),
            _ => None,
        }),
        _ => None,
    }
}

/// Net flows per operation TOID, from the events in each transaction's meta.
fn flows_by_operation(meta: &LedgerCloseMeta) -> HashMap<i64, Flows> {
    let (seq, metas): (u32, Vec<&TransactionMeta>) = match meta {
        LedgerCloseMeta::V0(m) => (
            m.ledger_header.header.ledger_seq,
            m.tx_processing
                .iter()
                .map(|p| &p.tx_apply_processing)
                .collect(),
        ),
        LedgerCloseMeta::V1(m) => (
            m.ledger_header.header.ledger_seq,
            m.tx_processing
                .iter()
                .map(|p| &p.tx_apply_processing)
                .collect(),
        ),
        LedgerCloseMeta::V2(m) => (
            m.ledger_header.header.ledger_seq,
            m.tx_processing
                .iter()
                .map(|p| &p.tx_apply_processing)
                .collect(),
        ),
    };
    let mut out = HashMap::new();
    for (t, tx_meta) in metas.iter().enumerate() {
        let TransactionMeta::V4(v4) = tx_meta else {
            panic!("fixtures carry meta V4")
        };
        for (o, op) in v4.operations.iter().enumerate() {
            let id = (i64::from(seq) << 32) | ((t as i64 + 1) << 12) | (o as i64 + 1);
            let flows: &mut Flows = out.entry(id).or_default();
            for event in op.events.iter() {
                let ContractEventBody::V0(body) = &event.body;
                let topics = body.topics.as_slice();
                let Some(ScVal::Symbol(sym)) = topics.first() else {
                    continue;
                };
                let Some(ScVal::String(asset)) = topics.last() else {
                    continue;
                };
                let asset = String::from_utf8_lossy(asset.0.as_slice()).into_owned();
                let Some(value) = amount(&body.data) else {
                    continue;
                };
                let mut add = |who: Option<String>, delta: i128| {
                    *flows
                        .entry((who.expect("address topic"), asset.clone()))
                        .or_default() += delta;
                };
                match (sym.0.as_slice(), topics.len()) {
                    (b"transfer", 4) => {
                        add(address(&topics[1]), -value);
                        add(address(&topics[2]), value);
                    }
                    (b"mint", 3) => add(address(&topics[1]), value),
                    (b"burn", 3) | (b"clawback", 3) => add(address(&topics[1]), -value),
                    _ => {}
                }
            }
        }
    }
    out
}

#[test]
fn classic_payment_amounts_match_their_cap67_events() {
    let mut checked = 0;
    for seq in fixtures::PUBNET_LEDGERS {
        let meta = read_ledger_file(&fixtures::pubnet_ledger_path(seq))
            .expect("read")
            .remove(0);
        let ledger = Extractor::new(Network::pubnet())
            .extract(&meta)
            .expect("extract");
        let flows = flows_by_operation(&meta);
        for record in ledger.payments.iter().filter(|p| p.successful()) {
            let id = record.id.to_i64();
            let op_flows = flows.get(&id).cloned().unwrap_or_default();
            // An issuer's own asset is minted when it pays and burned when it receives:
            // CAP-67 shows no balance change on the issuer's side.
            let check = |account: &shared::address::AccountId,
                         asset: &shared::asset::Asset,
                         expected: i128,
                         what: &str| {
                if asset.issuer() == Some(account) {
                    return;
                }
                let net = op_flows
                    .get(&(account.to_strkey(), asset.canonical()))
                    .copied()
                    .unwrap_or(0);
                assert_eq!(net, expected, "operation {id}: {what}");
            };
            let source = record.source.account;
            let native = shared::asset::Asset::Native;
            match &record.kind {
                PaymentKind::CreateAccount {
                    account,
                    starting_balance,
                } => {
                    check(account, &native, i128::from(*starting_balance), "funded");
                }
                PaymentKind::Payment { to, asset, amount } if to.account != source => {
                    check(&to.account, asset, i128::from(*amount), "received");
                    check(&source, asset, -i128::from(*amount), "sent");
                }
                PaymentKind::PathPayment {
                    to,
                    asset,
                    amount,
                    source_asset,
                    source_amount,
                    ..
                } => {
                    if to.account != source {
                        check(&to.account, asset, i128::from(*amount), "received");
                        check(&source, source_asset, -i128::from(*source_amount), "sent");
                    } else if asset == source_asset {
                        check(
                            &source,
                            asset,
                            i128::from(*amount - *source_amount),
                            "round trip",
                        );
                    } else {
                        check(&source, asset, i128::from(*amount), "received");
                        check(&source, source_asset, -i128::from(*source_amount), "sent");
                    }
                }
                PaymentKind::AccountMerge { into, amount } => {
                    let amount = amount.expect("successful merge has an amount");
                    check(&into.account, &native, i128::from(amount), "merged");
                }
                _ => continue,
            }
            checked += 1;
        }
    }
    assert!(checked > 400, "checked {checked} payments");
}
