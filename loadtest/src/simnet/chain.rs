//! Turning recorded ledgers into one contiguous chain.
//!
//! The recorded ledgers are far apart on the real network (30820015, 51000294, ...), but a
//! consumer that follows a chain checks that each ledger's `previous_ledger_hash` is the
//! hash of the ledger before it, and that sequences have no gaps; and it checks that each
//! ledger's contents hash to what its header says. [`rechain`] renumbers the ledgers
//! consecutively and rewrites the hash links (header, transaction set) and every hash that
//! depends on them (`scpValue.txSetHash`, `txSetResultHash`, the header hash) so they form
//! a verifiable chain; everything else (transactions, results, meta, close times) is left
//! exactly as recorded, so extraction results do not change beyond the ledger sequence.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use stellar_xdr::{
    GeneralizedTransactionSet, Hash, LedgerCloseMeta, LedgerHeader, LedgerHeaderHistoryEntry,
    Limits, WriteXdr,
};

/// Why a chain could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The directory could not be listed.
    #[error("cannot list {}: {error}", dir.display())]
    ListDir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        error: std::io::Error,
    },
    /// A ledger file could not be read.
    #[error(transparent)]
    File(#[from] shared::ledger_file::LedgerFileError),
    /// The directory holds no ledger.
    #[error("no ledger files in {}", .0.display())]
    Empty(PathBuf),
    /// A ledger header could not be encoded (should not happen for decoded ledgers).
    #[error("cannot encode ledger header: {0}")]
    Encode(#[from] stellar_xdr::Error),
    /// Renumbering from `first_seq` would overflow `u32`.
    #[error("chain of {len} ledgers starting at {first_seq} overflows the sequence space")]
    Overflow {
        /// The requested first sequence.
        first_seq: u32,
        /// The number of ledgers.
        len: usize,
    },
}

/// The header history entry of a ledger.
pub fn header_entry(meta: &LedgerCloseMeta) -> &LedgerHeaderHistoryEntry {
    match meta {
        LedgerCloseMeta::V0(m) => &m.ledger_header,
        LedgerCloseMeta::V1(m) => &m.ledger_header,
        LedgerCloseMeta::V2(m) => &m.ledger_header,
    }
}

/// The header history entry of a ledger, to change it.
pub fn header_entry_mut(meta: &mut LedgerCloseMeta) -> &mut LedgerHeaderHistoryEntry {
    match meta {
        LedgerCloseMeta::V0(m) => &mut m.ledger_header,
        LedgerCloseMeta::V1(m) => &mut m.ledger_header,
        LedgerCloseMeta::V2(m) => &mut m.ledger_header,
    }
}

fn set_tx_set_previous_hash(meta: &mut LedgerCloseMeta, hash: &Hash) {
    match meta {
        LedgerCloseMeta::V0(m) => m.tx_set.previous_ledger_hash = hash.clone(),
        LedgerCloseMeta::V1(m) => match &mut m.tx_set {
            GeneralizedTransactionSet::V1(set) => set.previous_ledger_hash = hash.clone(),
        },
        LedgerCloseMeta::V2(m) => match &mut m.tx_set {
            GeneralizedTransactionSet::V1(set) => set.previous_ledger_hash = hash.clone(),
        },
    }
}

/// The hash of a ledger header as the network computes it: SHA-256 of its XDR.
pub fn header_hash(header: &LedgerHeader) -> Result<Hash, stellar_xdr::Error> {
    let xdr = header.to_xdr(Limits::none())?;
    Ok(Hash(Sha256::digest(&xdr).into()))
}

/// Recomputes `scpValue.txSetHash` and `txSetResultHash` from the ledger's contents.
fn rehash_contents(meta: &mut LedgerCloseMeta) {
    use shared::extract::verify::{classic_tx_set_hash, generalized_tx_set_hash, result_set_hash};
    let (tx_set, results) = match &*meta {
        LedgerCloseMeta::V0(m) => (
            classic_tx_set_hash(&m.tx_set),
            result_set_hash(m.tx_processing.iter().map(|t| &t.result)),
        ),
        LedgerCloseMeta::V1(m) => (
            generalized_tx_set_hash(&m.tx_set),
            result_set_hash(m.tx_processing.iter().map(|t| &t.result)),
        ),
        LedgerCloseMeta::V2(m) => (
            generalized_tx_set_hash(&m.tx_set),
            result_set_hash(m.tx_processing.iter().map(|t| &t.result)),
        ),
    };
    let header = &mut header_entry_mut(meta).header;
    header.scp_value.tx_set_hash = Hash(tx_set);
    header.tx_set_result_hash = Hash(results);
}

/// Renumbers `ledgers` into one contiguous chain starting at `first_seq`.
///
/// Ledgers are sorted by their recorded sequence and duplicates (same recorded sequence)
/// dropped. The i-th ledger gets sequence `first_seq + i`; every ledger but the first
/// gets the previous one's (recomputed) hash as `previous_ledger_hash`, in its header and
/// in its transaction set; the transaction set hash and result set hash are recomputed
/// from the contents, and each header hash as SHA-256 of the patched header's XDR.
/// Nothing else changes.
pub fn rechain(
    mut ledgers: Vec<LedgerCloseMeta>,
    first_seq: u32,
) -> Result<Vec<LedgerCloseMeta>, ChainError> {
    ledgers.sort_by_key(|l| header_entry(l).header.ledger_seq);
    ledgers.dedup_by_key(|l| header_entry(l).header.ledger_seq);
    let len = ledgers.len();
    let fits = u32::try_from(len.saturating_sub(1))
        .ok()
        .and_then(|last_offset| first_seq.checked_add(last_offset))
        .is_some();
    if !fits {
        return Err(ChainError::Overflow { first_seq, len });
    }
    let mut previous: Option<Hash> = None;
    for (i, ledger) in ledgers.iter_mut().enumerate() {
        if let Some(prev) = &previous {
            set_tx_set_previous_hash(ledger, prev);
        }
        rehash_contents(ledger);
        let entry = header_entry_mut(ledger);
        entry.header.ledger_seq = first_seq + i as u32;
        if let Some(prev) = &previous {
            entry.header.previous_ledger_hash = prev.clone();
        }
        entry.hash = header_hash(&entry.header)?;
        previous = Some(entry.hash.clone());
    }
    Ok(ledgers)
}

/// The recorded pubnet ledgers of the fixtures folder (six single ledgers, the five early
/// base64 ones and the data-lake batch) re-chained from `first_seq`: 12 contiguous
/// ledgers with meta V0, V1 and V2, protocols 2 to 26.
pub fn recorded_fixture_chain(
    fixtures: &Path,
    first_seq: u32,
) -> Result<Vec<LedgerCloseMeta>, ChainError> {
    let mut files: Vec<PathBuf> = [30820015, 51000294, 57500008, 63092988, 63092990, 63092996]
        .iter()
        .map(|seq| fixtures.join(format!("ledgers/pubnet/ledger-{seq}.xdr.gz")))
        .collect();
    files.push(fixtures.join("ledgers/pubnet-early/ledgers-base64.txt.gz"));
    files.push(fixtures.join("datalake/pubnet/FCD285FF--53312000.xdr.zstd"));
    let mut ledgers = Vec::new();
    for file in &files {
        ledgers.extend(shared::ledger_file::read_ledger_file(file)?);
    }
    rechain(ledgers, first_seq)
}

/// Reads every ledger file of `dir` (any format [`shared::ledger_file`] reads) and
/// re-chains them from `first_seq`, by default the lowest recorded sequence.
pub fn load_chain(dir: &Path, first_seq: Option<u32>) -> Result<Vec<LedgerCloseMeta>, ChainError> {
    let files = shared::ledger_file::ledger_files_in(dir).map_err(|error| ChainError::ListDir {
        dir: dir.to_owned(),
        error,
    })?;
    let mut ledgers = Vec::new();
    for file in &files {
        ledgers.extend(shared::ledger_file::read_ledger_file(file)?);
    }
    let lowest = ledgers
        .iter()
        .map(|l| header_entry(l).header.ledger_seq)
        .min()
        .ok_or_else(|| ChainError::Empty(dir.to_owned()))?;
    rechain(ledgers, first_seq.unwrap_or(lowest))
}
