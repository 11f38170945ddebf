//! The fast path (`extract_xdr`, which scans the XDR and materialises only what
//! payments need) and the full decoder (`decode_ledger` + `extract`) give identical
//! results on every recorded ledger: records, transactions, counts and header facts.

use base64::Engine as _;
use shared::ledger_file::read_ledger_xdr;
use shared::testkit::fixtures;
use shared::{decode_ledger, Extractor, Network};

fn assert_same(network: &Network, bytes: &[u8], what: &str) {
    let mut extractor = Extractor::new(network.clone());
    let fast = extractor
        .extract_xdr(bytes)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let full = extractor
        .extract(&decode_ledger(bytes).expect("decodes"))
        .expect("extracts");
    assert_eq!(fast.ledger, full.ledger, "{what}: ledger");
    assert_eq!(fast.stats, full.stats, "{what}: stats");
    assert_eq!(fast.payments, full.payments, "{what}: payments");
    assert_eq!(fast.transactions, full.transactions, "{what}: transactions");
}

#[test]
fn fast_path_equals_full_decode_on_every_fixture() {
    let dir = fixtures::dir();
    let mut files: Vec<_> = fixtures::PUBNET_LEDGERS
        .iter()
        .map(|s| fixtures::pubnet_ledger_path(*s))
        .collect();
    files.push(dir.join("ledgers/pubnet-early/ledgers-base64.txt.gz"));
    files.push(dir.join("datalake/pubnet/FCD285FF--53312000.xdr.zstd"));
    let mut ledgers = 0;
    for file in files {
        for (i, bytes) in read_ledger_xdr(&file).expect("read").iter().enumerate() {
            assert_same(
                &Network::pubnet(),
                bytes,
                &format!("{} #{i}", file.display()),
            );
            ledgers += 1;
        }
    }
    for name in [
        "getLedgers-testnet-848581.json",
        "getLatestLedger-testnet-1283415.json",
    ] {
        let text = std::fs::read_to_string(dir.join("rpc").join(name)).expect("fixture");
        let json: serde_json::Value = serde_json::from_str(&text).expect("json");
        let result = &json["result"];
        let ledgers_json = result["ledgers"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| vec![result.clone()]);
        for ledger in ledgers_json {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(ledger["metadataXdr"].as_str().expect("metadataXdr"))
                .expect("base64");
            assert_same(&Network::testnet(), &bytes, name);
            ledgers += 1;
        }
    }
    assert_eq!(ledgers, 6 + 5 + 1 + 3);
}
