//! Muxed (`M...`) accounts, fee bumps and non-UTF-8 text memos, derived from a real
//! pubnet transaction: the envelope is rewritten and its result re-keyed with the hash
//! that stellar-xdr computes itself, which also cross-checks the extractor's hashing.

use serde_json::Value;
use shared::horizon::{payment_json, transaction_json, LinkBase};
use shared::ledger_file::read_ledger_file;
use shared::payment::{Memo, ParticipantAddress};
use shared::testkit::fixtures;
use shared::{Extractor, Network, PaymentKind};
use stellar_xdr::{
    FeeBumpTransaction, FeeBumpTransactionEnvelope, FeeBumpTransactionExt,
    FeeBumpTransactionInnerTx, InnerTransactionResult, InnerTransactionResultExt,
    InnerTransactionResultPair, InnerTransactionResultResult, LedgerCloseMeta, MuxedAccount,
    MuxedAccountMed25519, OperationBody, TransactionEnvelope, TransactionResultResult,
};

/// Ledger 30820015's one successful payment (transaction #48) with `rewrite` applied to
/// its envelope and the result pair re-keyed to the new hash.
fn rewritten(
    rewrite: impl FnOnce(&mut TransactionEnvelope, &mut stellar_xdr::TransactionResult),
) -> LedgerCloseMeta {
    let mut meta = read_ledger_file(&fixtures::pubnet_ledger_path(30820015))
        .expect("read")
        .remove(0);
    let LedgerCloseMeta::V0(v0) = &mut meta else {
        panic!("V0 ledger")
    };
    let pair = &mut v0.tx_processing.iter_mut().nth(47).expect("tx #48").result;
    let mut txs = v0.tx_set.txs.to_vec();
    let position = txs
        .iter()
        .position(|e| e.hash(Network::pubnet().id()).expect("hash") == pair.transaction_hash.0)
        .expect("envelope of tx #48");
    rewrite(&mut txs[position], &mut pair.result);
    pair.transaction_hash =
        stellar_xdr::Hash(txs[position].hash(Network::pubnet().id()).expect("hash"));
    v0.tx_set.txs = txs.try_into().expect("fits");
    fixtures::reseal(&mut meta);
    meta
}

fn muxed(account: &MuxedAccount, id: u64) -> MuxedAccount {
    let key = match account {
        MuxedAccount::Ed25519(k) => k.clone(),
        MuxedAccount::MuxedEd25519(m) => m.ed25519.clone(),
    };
    MuxedAccount::MuxedEd25519(MuxedAccountMed25519 { id, ed25519: key })
}

fn as_v1(envelope: &mut TransactionEnvelope) -> &mut stellar_xdr::TransactionV1Envelope {
    if let TransactionEnvelope::TxV0(v0) = envelope {
        *envelope = TransactionEnvelope::Tx(stellar_xdr::TransactionV1Envelope {
            tx: (&v0.tx).into(),
            signatures: v0.signatures.clone(),
        });
    }
    match envelope {
        TransactionEnvelope::Tx(v1) => v1,
        _ => panic!("not a v1 envelope"),
    }
}

#[test]
fn muxed_source_and_destination_keep_base_account_and_id() {
    let meta = rewritten(|envelope, _| {
        let v1 = as_v1(envelope);
        v1.tx.source_account = muxed(&v1.tx.source_account, 7);
        let mut ops = v1.tx.operations.to_vec();
        let OperationBody::Payment(payment) = &mut ops[0].body else {
            panic!("a payment")
        };
        payment.destination = muxed(&payment.destination, 1_020_515_624);
        v1.tx.operations = ops.try_into().expect("fits");
    });
    let ledger = Extractor::new(Network::pubnet())
        .extract(&meta)
        .expect("extracts");
    let record = ledger
        .payments
        .iter()
        .find(|p| p.successful())
        .expect("the payment");
    let json = payment_json(record, &LinkBase::default(), false);
    assert_eq!(
        json["to"],
        "GAHK7EEG2WWHVKDNT4CEQFZGKF2LGDSW2IVM4S5DP42RBW3K6BTODB4A"
    );
    assert_eq!(
        json["to_muxed"],
        "MAHK7EEG2WWHVKDNT4CEQFZGKF2LGDSW2IVM4S5DP42RBW3K6BTOCAAAAAADZU6VFBOJ2"
    );
    assert_eq!(json["to_muxed_id"], "1020515624");
    assert_eq!(json["from"], json["source_account"]);
    assert_eq!(json["source_account_muxed_id"], "7");
    assert!(json["source_account_muxed"]
        .as_str()
        .expect("M address")
        .starts_with('M'));
    // History belongs to the base accounts.
    let participants: Vec<String> = record
        .participants()
        .iter()
        .map(|p| p.address.to_strkey())
        .collect();
    assert!(participants
        .contains(&"GAHK7EEG2WWHVKDNT4CEQFZGKF2LGDSW2IVM4S5DP42RBW3K6BTODB4A".to_owned()));
    assert!(record
        .participants()
        .iter()
        .all(|p| matches!(p.address, ParticipantAddress::Account(_))));
}

#[test]
fn fee_bump_uses_outer_hash_and_inner_operations() {
    let mut inner_hash = [0u8; 32];
    let meta = rewritten(|envelope, result| {
        let inner = as_v1(envelope).clone();
        inner_hash = TransactionEnvelope::Tx(inner.clone())
            .hash(Network::pubnet().id())
            .expect("hash");
        let fee_source = muxed(&inner.tx.source_account, 99);
        *envelope = TransactionEnvelope::TxFeeBump(FeeBumpTransactionEnvelope {
            tx: FeeBumpTransaction {
                fee_source,
                fee: 5_000,
                inner_tx: FeeBumpTransactionInnerTx::Tx(inner),
                ext: FeeBumpTransactionExt::V0,
            },
            signatures: Default::default(),
        });
        let TransactionResultResult::TxSuccess(ops) = &result.result else {
            panic!("successful")
        };
        result.result =
            TransactionResultResult::TxFeeBumpInnerSuccess(InnerTransactionResultPair {
                transaction_hash: stellar_xdr::Hash(inner_hash),
                result: InnerTransactionResult {
                    fee_charged: 100,
                    result: InnerTransactionResultResult::TxSuccess(ops.clone()),
                    ext: InnerTransactionResultExt::V0,
                },
            });
    });
    let ledger = Extractor::new(Network::pubnet())
        .extract(&meta)
        .expect("extracts");
    let record = ledger
        .payments
        .iter()
        .find(|p| p.successful())
        .expect("the payment");
    let tx = &record.transaction;
    assert_eq!(
        tx.inner_hash,
        Some(inner_hash),
        "inner hash computed like stellar-xdr does"
    );
    assert_eq!(tx.max_fee, 5_000);
    assert_eq!(tx.fee_source.map(|f| f.muxed_id), Some(Some(99)));
    assert!(matches!(
        record.kind,
        PaymentKind::Payment {
            amount: 1_582_390_000_000,
            ..
        }
    ));
    let json = transaction_json(tx, &LinkBase("https://api.example".into()));
    assert_eq!(json["hash"], Value::String(hex::encode(tx.hash)));
    assert_eq!(
        json["inner_transaction"]["hash"],
        Value::String(hex::encode(inner_hash))
    );
    assert_eq!(json["fee_account_muxed_id"], "99");
    assert_eq!(
        json["_links"]["self"]["href"],
        format!("https://api.example/transactions/{}", hex::encode(tx.hash))
    );
}

#[test]
fn non_utf8_text_memo_keeps_its_bytes() {
    let raw = vec![0xff, 0xfe, b'h', b'i'];
    let meta = rewritten(|envelope, _| {
        as_v1(envelope).tx.memo =
            stellar_xdr::Memo::Text(raw.clone().try_into().expect("<= 28 bytes"));
    });
    let ledger = Extractor::new(Network::pubnet())
        .extract(&meta)
        .expect("extracts");
    let record = ledger
        .payments
        .iter()
        .find(|p| p.successful())
        .expect("the payment");
    assert_eq!(record.transaction.memo, Memo::Text(raw));
    let json = transaction_json(&record.transaction, &LinkBase::default());
    assert_eq!(json["memo_type"], "text");
    assert_eq!(json["memo_bytes"], "//5oaQ==");
}

#[test]
fn id_memo_is_rendered_as_decimal() {
    let ledger = fixtures::extract_pubnet(30820015);
    let record = ledger
        .payments
        .iter()
        .find(|p| p.successful())
        .expect("the payment");
    let json = transaction_json(&record.transaction, &LinkBase::default());
    assert_eq!(json["memo_type"], "id");
    assert_eq!(json["memo"], "1020515624");
}
