//! Real Stellar RPC responses (testnet): the `metadataXdr` of `getLedgers` and
//! `getLatestLedger` decode and extract, fee-bump payments keep both accounts, and the
//! recorded ledger 1283415's single payment (an account funded with 100,000,000,000 stroops) comes out exactly.

use base64::Engine as _;
use serde_json::Value;
use shared::horizon::{payment_json, LinkBase};
use shared::testkit::fixtures;
use shared::{Extractor, Network, PaymentKind};

fn response(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures::dir().join("rpc").join(name)).expect("fixture");
    serde_json::from_str(&text).expect("JSON")
}

fn metadata(ledger: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(ledger["metadataXdr"].as_str().expect("metadataXdr"))
        .expect("base64")
}

#[test]
fn get_ledgers_page_extracts_with_fee_bumps() {
    let page = response("getLedgers-testnet-848581.json");
    let mut extractor = Extractor::new(Network::testnet());
    let mut fee_bumped = 0;
    let mut failed = 0;
    for ledger in page["result"]["ledgers"].as_array().expect("ledgers") {
        let payments = extractor.extract_xdr(&metadata(ledger)).expect("extracts");
        assert_eq!(Value::from(payments.ledger.sequence), ledger["sequence"]);
        assert_eq!(
            Value::String(hex::encode(payments.ledger.hash)),
            ledger["hash"]
        );
        assert_eq!(
            payments.ledger.closed_at.to_string(),
            ledger["ledgerCloseTime"].as_str().expect("time")
        );
        for p in &payments.payments {
            let json = payment_json(p, &LinkBase::default(), true);
            if let Some(fee_source) = p.transaction.fee_source {
                fee_bumped += 1;
                assert!(p.transaction.inner_hash.is_some());
                assert_eq!(
                    json["transaction"]["fee_account"],
                    Value::String(fee_source.account.to_strkey())
                );
                assert!(json["transaction"]["inner_transaction"]["hash"].is_string());
            }
            if !p.successful() {
                failed += 1;
                assert_eq!(json["transaction_successful"], Value::Bool(false));
            }
        }
    }
    assert!(fee_bumped > 0, "the page holds fee-bump payments");
    assert!(failed > 0, "the page holds failed payments");
}

#[test]
fn latest_ledger_holds_one_native_payment() {
    let latest = response("getLatestLedger-testnet-1283415.json");
    let payments = Extractor::new(Network::testnet())
        .extract_xdr(&metadata(&latest["result"]))
        .expect("extracts");
    assert_eq!(payments.ledger.sequence, 1_283_415);
    assert_eq!(payments.ledger.protocol_version, 25);
    let successful: Vec<_> = payments
        .payments
        .iter()
        .filter(|p| p.successful())
        .collect();
    assert_eq!(successful.len(), 1);
    // A payment in Horizon's sense: an account funded with 10,000 lumens.
    match &successful[0].kind {
        PaymentKind::CreateAccount {
            starting_balance, ..
        } => assert_eq!(*starting_balance, 100_000_000_000),
        other => panic!("expected create_account, got {other:?}"),
    }
    let json = payment_json(successful[0], &LinkBase::default(), false);
    assert_eq!(json["starting_balance"], "10000.0000000");
    assert_eq!(json["funder"], json["source_account"]);
}

#[test]
fn wrong_network_cannot_join_envelopes() {
    // Hashes depend on the passphrase: extracting testnet data as pubnet must fail loudly.
    let latest = response("getLatestLedger-testnet-1283415.json");
    let err = Extractor::new(Network::pubnet())
        .extract_xdr(&metadata(&latest["result"]))
        .expect_err("must not join");
    assert_eq!(err.ledger, Some(1_283_415));
    assert!(
        matches!(err.kind, shared::ExtractErrorKind::MissingEnvelope),
        "{err}"
    );
    assert!(
        err.to_string().contains("ledger 1283415, transaction #1"),
        "{err}"
    );
}
