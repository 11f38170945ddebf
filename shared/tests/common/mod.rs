//! Helpers shared by the fixture tests: where the recorded data lives, and loading it.
#![allow(dead_code)]

use std::path::PathBuf;

use shared::ledger_file::read_ledger_file;
use shared::{Extractor, LedgerPayments, Network};

/// `../shared/fixtures` from the workspace root, or `STELLAR_FIXTURES` when set.
pub fn fixtures_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("STELLAR_FIXTURES") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures")
}

pub const PUBNET_LEDGERS: [u32; 6] = [30820015, 51000294, 57500008, 63092988, 63092990, 63092996];

pub fn pubnet_ledger_path(seq: u32) -> PathBuf {
    fixtures_dir().join(format!("ledgers/pubnet/ledger-{seq}.xdr.gz"))
}

pub fn extract_pubnet(seq: u32) -> LedgerPayments {
    let path = pubnet_ledger_path(seq);
    let ledgers = read_ledger_file(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ledgers.len(), 1, "{} holds one ledger", path.display());
    Extractor::new(Network::pubnet())
        .extract(&ledgers[0])
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Recomputes a changed ledger's transaction set hash, result set hash and header hash,
/// so that it verifies like a ledger stellar-core closed.
pub fn reseal(meta: &mut stellar_xdr::LedgerCloseMeta) {
    use shared::extract::verify::{classic_tx_set_hash, generalized_tx_set_hash, result_set_hash};
    use stellar_xdr::{Hash, LedgerCloseMeta};
    let (entry, tx_set, results) = match meta {
        LedgerCloseMeta::V0(m) => (
            &mut m.ledger_header,
            classic_tx_set_hash(&m.tx_set),
            result_set_hash(m.tx_processing.iter().map(|t| &t.result)),
        ),
        LedgerCloseMeta::V1(m) => (
            &mut m.ledger_header,
            generalized_tx_set_hash(&m.tx_set),
            result_set_hash(m.tx_processing.iter().map(|t| &t.result)),
        ),
        LedgerCloseMeta::V2(m) => (
            &mut m.ledger_header,
            generalized_tx_set_hash(&m.tx_set),
            result_set_hash(m.tx_processing.iter().map(|t| &t.result)),
        ),
    };
    entry.header.scp_value.tx_set_hash = Hash(tx_set);
    entry.header.tx_set_result_hash = Hash(results);
    entry.hash = Hash(shared::hashing::xdr_sha256(&entry.header));
}
