//! Ledger verification: every recorded ledger (pubnet and testnet, meta V0, V1 and V2,
//! classic and generalized transaction sets, protocols 2 to 26) hashes to what its header
//! says, on both extraction paths; and a ledger whose header, transaction set or results
//! were changed is refused with an error naming the ledger and the hash that failed.

use base64::Engine as _;
use shared::extract::verify::{verify_ledger, HashCheck};
use shared::ledger_file::read_ledger_file;
use shared::testkit::fixtures;
use shared::{ExtractErrorKind, Extractor, Network};
use stellar_xdr::{LedgerCloseMeta, Limits, TransactionEnvelope, WriteXdr};

fn recorded_pubnet() -> Vec<LedgerCloseMeta> {
    let dir = fixtures::dir();
    let mut files: Vec<_> = fixtures::PUBNET_LEDGERS
        .iter()
        .map(|seq| fixtures::pubnet_ledger_path(*seq))
        .collect();
    files.push(dir.join("ledgers/pubnet-early/ledgers-base64.txt.gz"));
    files.push(dir.join("datalake/pubnet/FCD285FF--53312000.xdr.zstd"));
    files
        .iter()
        .flat_map(|f| read_ledger_file(f).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

fn recorded_testnet_xdr() -> Vec<Vec<u8>> {
    let dir = fixtures::dir().join("rpc");
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    for name in [
        "getLedgers-testnet-848581.json",
        "getLatestLedger-testnet-1283415.json",
    ] {
        let text = std::fs::read_to_string(dir.join(name)).expect("fixture");
        let json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let result = &json["result"];
        let ledgers = match result["ledgers"].as_array() {
            Some(ledgers) => ledgers.clone(),
            None => vec![result.clone()],
        };
        for ledger in ledgers {
            let text = ledger["metadataXdr"].as_str().expect("metadataXdr");
            out.push(b64.decode(text).expect("base64"));
        }
    }
    out
}

fn version(meta: &LedgerCloseMeta) -> u8 {
    match meta {
        LedgerCloseMeta::V0(_) => 0,
        LedgerCloseMeta::V1(_) => 1,
        LedgerCloseMeta::V2(_) => 2,
    }
}

#[test]
fn every_recorded_ledger_verifies_on_both_paths() {
    let mut versions = std::collections::BTreeSet::new();
    let pubnet = recorded_pubnet();
    assert_eq!(pubnet.len(), 12);
    for meta in &pubnet {
        versions.insert(version(meta));
        verify_ledger(meta).unwrap_or_else(|e| panic!("{e}"));
        let xdr = meta.to_xdr(Limits::none()).expect("encode");
        Extractor::new(Network::pubnet())
            .extract_xdr(&xdr)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let testnet = recorded_testnet_xdr();
    assert!(testnet.len() > 1);
    for xdr in &testnet {
        let meta = shared::decode_ledger(xdr).expect("decodes");
        versions.insert(version(&meta));
        verify_ledger(&meta).unwrap_or_else(|e| panic!("testnet: {e}"));
        Extractor::new(Network::testnet())
            .extract_xdr(xdr)
            .unwrap_or_else(|e| panic!("testnet: {e}"));
    }
    assert_eq!(
        versions.into_iter().collect::<Vec<_>>(),
        vec![0, 1, 2],
        "every meta version is covered"
    );
}

/// Flips a bit of the envelope's first signature: the transaction (and its hash) stays
/// the same, the envelope's XDR does not.
fn bump_fee(envelope: &mut TransactionEnvelope) {
    let signatures = match envelope {
        TransactionEnvelope::TxV0(e) => &mut e.signatures,
        TransactionEnvelope::Tx(e) => &mut e.signatures,
        TransactionEnvelope::TxFeeBump(e) => &mut e.signatures,
    };
    let signature = signatures.iter_mut().next().expect("a signature");
    let mut bytes = signature.signature.to_vec();
    bytes[0] ^= 1;
    signature.signature = bytes.try_into().expect("same length");
}

/// Changes one envelope's signature: structurally still a valid ledger.
fn bump_a_fee(meta: &mut LedgerCloseMeta) {
    let set = match meta {
        LedgerCloseMeta::V0(m) => {
            bump_fee(m.tx_set.txs.iter_mut().next().expect("a transaction"));
            return;
        }
        LedgerCloseMeta::V1(m) => &mut m.tx_set,
        LedgerCloseMeta::V2(m) => &mut m.tx_set,
    };
    let stellar_xdr::GeneralizedTransactionSet::V1(set) = set;
    for phase in set.phases.iter_mut() {
        if let stellar_xdr::TransactionPhase::V0(components) = phase {
            for stellar_xdr::TxSetComponent::TxsetCompTxsMaybeDiscountedFee(c) in
                components.iter_mut()
            {
                if let Some(envelope) = c.txs.iter_mut().next() {
                    bump_fee(envelope);
                    return;
                }
            }
        }
    }
    panic!("no classic envelope to change");
}

fn results(meta: &mut LedgerCloseMeta) -> Vec<&mut stellar_xdr::TransactionResultPair> {
    match meta {
        LedgerCloseMeta::V0(m) => m.tx_processing.iter_mut().map(|t| &mut t.result).collect(),
        LedgerCloseMeta::V1(m) => m.tx_processing.iter_mut().map(|t| &mut t.result).collect(),
        LedgerCloseMeta::V2(m) => m.tx_processing.iter_mut().map(|t| &mut t.result).collect(),
    }
}

fn header(meta: &mut LedgerCloseMeta) -> &mut stellar_xdr::LedgerHeaderHistoryEntry {
    match meta {
        LedgerCloseMeta::V0(m) => &mut m.ledger_header,
        LedgerCloseMeta::V1(m) => &mut m.ledger_header,
        LedgerCloseMeta::V2(m) => &mut m.ledger_header,
    }
}

fn refused(meta: &LedgerCloseMeta, check: HashCheck) {
    let seq = shared::ledger_file::ledger_seq(meta);
    let xdr = meta.to_xdr(Limits::none()).expect("encode");
    let errors = [
        verify_ledger(meta).expect_err("verify refuses"),
        Extractor::new(Network::pubnet())
            .extract(meta)
            .expect_err("full path refuses"),
        Extractor::new(Network::pubnet())
            .extract_xdr(&xdr)
            .expect_err("fast path refuses"),
    ];
    for error in errors {
        assert_eq!(error.ledger, Some(seq));
        assert!(
            matches!(error.kind, ExtractErrorKind::HashMismatch { check: c, .. } if c == check),
            "{error}"
        );
        assert_eq!(error.label(), check.label());
        let text = error.to_string();
        assert!(text.starts_with(&format!("ledger {seq}: ")), "{text}");
        assert!(text.contains(&check.to_string()), "{text}");
    }
}

#[test]
fn a_changed_transaction_set_result_or_header_is_refused_by_name() {
    // One classic (meta V0) and two generalized (V1, V2) ledgers.
    for seq in [30820015, 51000294, 63092996] {
        let path = fixtures::pubnet_ledger_path(seq);
        let original = read_ledger_file(&path).expect("fixture").remove(0);

        let mut meta = original.clone();
        bump_a_fee(&mut meta);
        refused(&meta, HashCheck::TxSet);

        let mut meta = original.clone();
        let pair = results(&mut meta).into_iter().next().expect("a result");
        pair.result.fee_charged += 1;
        refused(&meta, HashCheck::Results);

        let mut meta = original.clone();
        header(&mut meta).header.fee_pool += 1;
        refused(&meta, HashCheck::Header);
    }
}
