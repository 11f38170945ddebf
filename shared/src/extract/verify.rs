//! Checks that a ledger's contents are what its header commits to, so a ledger corrupted
//! or forged between stellar-core and us (an RPC, a proxy, a data-lake file) is refused
//! instead of stored.
//!
//! The rules are stellar-core's:
//!
//! - the header entry's `hash` is SHA-256 of the `LedgerHeader` XDR;
//! - `scpValue.txSetHash` is, for a generalized transaction set (meta V1 and V2),
//!   SHA-256 of the `GeneralizedTransactionSet` XDR; for a classic `TransactionSet`
//!   (meta V0), SHA-256 of `previousLedgerHash` followed by each envelope's XDR, without
//!   the array's length (stellar-core's `computeNonGeneralizedTxSetContentsHash`), the
//!   envelopes in ascending order of their own SHA-256 (the order stellar-core hashed
//!   them in; the meta may list them otherwise);
//! - `txSetResultHash` is SHA-256 of the `TransactionResultSet` XDR: the result pairs of
//!   `tx_processing`, in application order.
//!
//! What must hold: every extraction entry point checks all three after the structural
//! checks, and a mismatch is an error naming the ledger and the hash that failed.

use sha2::{Digest, Sha256};
use stellar_xdr::{
    GeneralizedTransactionSet, LedgerCloseMeta, LedgerHeaderHistoryEntry, Limited, Limits,
    TransactionResultPair, TransactionSet, WriteXdr,
};

use super::error::{ExtractError, ExtractErrorKind};
use crate::hashing::{xdr_sha256, HashWriter};

/// Which of a ledger's hashes failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashCheck {
    /// The header entry's hash against SHA-256 of the header.
    Header,
    /// `scpValue.txSetHash` against the transaction set.
    TxSet,
    /// `txSetResultHash` against the transaction results.
    Results,
}

impl HashCheck {
    /// A short, stable label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Header => "header_hash",
            Self::TxSet => "tx_set_hash",
            Self::Results => "tx_set_result_hash",
        }
    }
}

impl std::fmt::Display for HashCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Header => "header hash (SHA-256 of the ledger header)",
            Self::TxSet => "transaction set hash (scpValue.txSetHash)",
            Self::Results => "transaction result set hash (txSetResultHash)",
        })
    }
}

/// The hashes of a ledger's contents, as computed from them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ContentHashes {
    pub header: [u8; 32],
    pub tx_set: [u8; 32],
    pub results: [u8; 32],
}

/// The hash of a classic transaction set: SHA-256 of the previous ledger hash followed by
/// the envelopes' XDR in the set's canonical order, ascending by SHA-256 of each
/// envelope's XDR (stellar-core sorted the set so before hashing; ledger close meta does
/// not always carry it in that order).
pub fn classic_tx_set_hash(set: &TransactionSet) -> [u8; 32] {
    let mut envelopes: Vec<([u8; 32], Vec<u8>)> = set
        .txs
        .iter()
        .map(|envelope| {
            let xdr = envelope.to_xdr(Limits::none()).unwrap_or_default();
            (Sha256::digest(&xdr).into(), xdr)
        })
        .collect();
    envelopes.sort_unstable_by_key(|e| e.0);
    let mut hasher = Sha256::new();
    hasher.update(set.previous_ledger_hash.0);
    for (_, xdr) in &envelopes {
        hasher.update(xdr);
    }
    hasher.finalize().into()
}

/// The hash of a generalized transaction set.
pub fn generalized_tx_set_hash(set: &GeneralizedTransactionSet) -> [u8; 32] {
    xdr_sha256(set)
}

/// The hash of a `TransactionResultSet` holding these pairs.
pub fn result_set_hash<'a>(
    pairs: impl ExactSizeIterator<Item = &'a TransactionResultPair>,
) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(u32::try_from(pairs.len()).unwrap_or(u32::MAX).to_be_bytes());
    for pair in pairs {
        let _ = pair.write_xdr(&mut Limited::new(HashWriter(&mut hasher), Limits::none()));
    }
    hasher.finalize().into()
}

/// The content hashes of a decoded ledger.
pub(crate) fn content_hashes(meta: &LedgerCloseMeta) -> ContentHashes {
    let (entry, tx_set) = match meta {
        LedgerCloseMeta::V0(m) => (&m.ledger_header, classic_tx_set_hash(&m.tx_set)),
        LedgerCloseMeta::V1(m) => (&m.ledger_header, generalized_tx_set_hash(&m.tx_set)),
        LedgerCloseMeta::V2(m) => (&m.ledger_header, generalized_tx_set_hash(&m.tx_set)),
    };
    let results = match meta {
        LedgerCloseMeta::V0(m) => result_set_hash(m.tx_processing.iter().map(|t| &t.result)),
        LedgerCloseMeta::V1(m) => result_set_hash(m.tx_processing.iter().map(|t| &t.result)),
        LedgerCloseMeta::V2(m) => result_set_hash(m.tx_processing.iter().map(|t| &t.result)),
    };
    ContentHashes {
        header: xdr_sha256(&entry.header),
        tx_set,
        results,
    }
}

/// Compares what the header says with what the contents hash to.
pub(crate) fn check(
    entry: &LedgerHeaderHistoryEntry,
    computed: &ContentHashes,
) -> Result<(), ExtractError> {
    let header = &entry.header;
    let checks = [
        (HashCheck::Header, entry.hash.0, computed.header),
        (
            HashCheck::TxSet,
            header.scp_value.tx_set_hash.0,
            computed.tx_set,
        ),
        (
            HashCheck::Results,
            header.tx_set_result_hash.0,
            computed.results,
        ),
    ];
    for (check, expected, computed) in checks {
        if expected != computed {
            return Err(ExtractError::ledger(
                header.ledger_seq,
                ExtractErrorKind::HashMismatch {
                    check,
                    expected,
                    computed,
                },
            ));
        }
    }
    Ok(())
}

/// Checks a decoded ledger's header hash, transaction set hash and result set hash.
pub fn verify_ledger(meta: &LedgerCloseMeta) -> Result<(), ExtractError> {
    let entry = match meta {
        LedgerCloseMeta::V0(m) => &m.ledger_header,
        LedgerCloseMeta::V1(m) => &m.ledger_header,
        LedgerCloseMeta::V2(m) => &m.ledger_header,
    };
    check(entry, &content_hashes(meta))
}
