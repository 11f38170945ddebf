//! The recorded Stellar data (`testdata/` at the root of the repository): where it is,
//! and loading the pieces every test suite uses.
//!
//! What must hold: nothing outside the clone is needed. `STELLAR_FIXTURES` may point at
//! another copy (the layout of `testdata/`, described by its README), else the copy in
//! the repository is used; a missing file is a panic naming the path, since a test
//! without its data must fail rather than pass vacuously.

use std::path::PathBuf;

use stellar_xdr::LedgerCloseMeta;

use crate::ledger_file::read_ledger_file;
use crate::{Extractor, LedgerPayments, Network};

/// The single pubnet ledgers recorded in `ledgers/pubnet/`, by sequence.
pub const PUBNET_LEDGERS: [u32; 6] = [30820015, 51000294, 57500008, 63092988, 63092990, 63092996];

/// The pubnet ledger of realistic size (1.45 MB of XDR, 541 transactions).
pub const LARGE_PUBNET_LEDGER: u32 = 51000294;

/// The folder of recorded data: `$STELLAR_FIXTURES`, else the repository's `testdata/`.
pub fn dir() -> PathBuf {
    match std::env::var_os("STELLAR_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata"),
    }
}

/// A file of the recorded data, by its path inside `testdata/`.
pub fn path(relative: &str) -> PathBuf {
    dir().join(relative)
}

/// The file of one recorded pubnet ledger.
pub fn pubnet_ledger_path(seq: u32) -> PathBuf {
    path(&format!("ledgers/pubnet/ledger-{seq}.xdr.gz"))
}

/// Every ledger of a recorded file (any format [`crate::ledger_file`] reads).
pub fn ledgers(relative: &str) -> Vec<LedgerCloseMeta> {
    let file = path(relative);
    read_ledger_file(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// One recorded pubnet ledger.
pub fn pubnet_ledger(seq: u32) -> LedgerCloseMeta {
    let mut ledgers = ledgers(&format!("ledgers/pubnet/ledger-{seq}.xdr.gz"));
    assert_eq!(ledgers.len(), 1, "ledger-{seq}.xdr.gz holds one ledger");
    ledgers.remove(0)
}

/// The payments of one recorded pubnet ledger, as the extractor makes them.
pub fn extract_pubnet(seq: u32) -> LedgerPayments {
    Extractor::new(Network::pubnet())
        .extract(&pubnet_ledger(seq))
        .unwrap_or_else(|e| panic!("ledger {seq}: {e}"))
}

/// What the extractor makes of each ledger of `chain`, in order.
pub fn extract_all(chain: &[LedgerCloseMeta], network: Network) -> Vec<LedgerPayments> {
    let mut extractor = Extractor::new(network);
    chain
        .iter()
        .enumerate()
        .map(|(i, l)| {
            extractor
                .extract(l)
                .unwrap_or_else(|e| panic!("ledger {i} of the chain: {e}"))
        })
        .collect()
}

/// Recomputes a changed ledger's transaction set hash, result set hash and header hash,
/// so that it verifies like a ledger stellar-core closed (tests that edit a recorded
/// ledger must still pass the extractor's hash checks).
pub fn reseal(meta: &mut LedgerCloseMeta) {
    use crate::extract::verify::{classic_tx_set_hash, generalized_tx_set_hash, result_set_hash};
    use stellar_xdr::Hash;
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
    entry.hash = Hash(crate::hashing::xdr_sha256(&entry.header));
}
