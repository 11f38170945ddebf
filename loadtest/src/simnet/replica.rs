//! Pubnet-sized chains: copies of one recorded ledger, each a distinct ledger.
//!
//! Real pubnet ledgers are 1-3 MB of XDR with hundreds of transactions; the synthetic
//! generator's ledgers are far smaller. [`replicate`] copies a recorded ledger (ledger
//! 51000294 of the fixtures: 1.45 MB, 541 transactions) as many times as needed. What
//! must hold for every copy:
//!
//! - every transaction has a fresh hash: each envelope's sequence number moves by the
//!   copy's number (the inner transaction's, for a fee bump), so no two copies share a
//!   transaction;
//! - results stay paired: each result pair (and a fee bump's inner result pair) carries
//!   the new hash of its transaction;
//! - the header is consistent: sequence, close time, previous-ledger hash chain,
//!   `scpValue.txSetHash`, `txSetResultHash` and the header hash are recomputed (by
//!   [`super::rechain`]), so the copies pass the same hash verification as real ledgers.
//!
//! Nothing else changes, so each copy extracts to the template's payments under its own
//! ledger sequence and transaction hashes.

use std::collections::HashMap;

use shared::hashing::{envelope_hash, inner_hash};
use shared::Network;
use stellar_xdr::{
    FeeBumpTransactionInnerTx, GeneralizedTransactionSet, Hash, LedgerCloseMeta,
    TransactionEnvelope, TransactionPhase, TransactionResultResult, TxSetComponent,
};

use super::chain::{header_entry, rechain, ChainError};

/// Seconds between the copies' close times (pubnet's cadence).
pub const CLOSE_INTERVAL_SECS: u64 = 5;

fn envelopes_mut(meta: &mut LedgerCloseMeta) -> Vec<&mut TransactionEnvelope> {
    let set = match meta {
        LedgerCloseMeta::V0(m) => return m.tx_set.txs.iter_mut().collect(),
        LedgerCloseMeta::V1(m) => &mut m.tx_set,
        LedgerCloseMeta::V2(m) => &mut m.tx_set,
    };
    let GeneralizedTransactionSet::V1(set) = set;
    let mut out = Vec::new();
    for phase in set.phases.iter_mut() {
        match phase {
            TransactionPhase::V0(components) => {
                for TxSetComponent::TxsetCompTxsMaybeDiscountedFee(c) in components.iter_mut() {
                    out.extend(c.txs.iter_mut());
                }
            }
            TransactionPhase::V1(parallel) => {
                for stage in parallel.execution_stages.iter_mut() {
                    for cluster in stage.0.iter_mut() {
                        out.extend(cluster.0.iter_mut());
                    }
                }
            }
        }
    }
    out
}

fn results_mut(meta: &mut LedgerCloseMeta) -> Vec<&mut stellar_xdr::TransactionResultPair> {
    match meta {
        LedgerCloseMeta::V0(m) => m.tx_processing.iter_mut().map(|t| &mut t.result).collect(),
        LedgerCloseMeta::V1(m) => m.tx_processing.iter_mut().map(|t| &mut t.result).collect(),
        LedgerCloseMeta::V2(m) => m.tx_processing.iter_mut().map(|t| &mut t.result).collect(),
    }
}

/// Moves an envelope's sequence number by `shift`; returns its (old, new) outer hashes
/// and, for a fee bump, its (old, new) inner hashes.
type Rehash = (([u8; 32], [u8; 32]), Option<([u8; 32], [u8; 32])>);

fn shift_envelope(
    envelope: &mut TransactionEnvelope,
    shift: i64,
    network_id: &[u8; 32],
) -> Result<Rehash, stellar_xdr::Error> {
    let old = envelope_hash(envelope, network_id)?;
    let old_inner = match &*envelope {
        TransactionEnvelope::TxFeeBump(fb) => match &fb.tx.inner_tx {
            FeeBumpTransactionInnerTx::Tx(inner) => Some(inner_hash(inner, network_id)?),
        },
        _ => None,
    };
    match envelope {
        TransactionEnvelope::TxV0(v0) => v0.tx.seq_num.0 = v0.tx.seq_num.0.wrapping_add(shift),
        TransactionEnvelope::Tx(v1) => v1.tx.seq_num.0 = v1.tx.seq_num.0.wrapping_add(shift),
        TransactionEnvelope::TxFeeBump(fb) => match &mut fb.tx.inner_tx {
            FeeBumpTransactionInnerTx::Tx(inner) => {
                inner.tx.seq_num.0 = inner.tx.seq_num.0.wrapping_add(shift);
            }
        },
    }
    let new = envelope_hash(envelope, network_id)?;
    let inner = match (&*envelope, old_inner) {
        (TransactionEnvelope::TxFeeBump(fb), Some(old_inner)) => match &fb.tx.inner_tx {
            FeeBumpTransactionInnerTx::Tx(inner) => {
                Some((old_inner, inner_hash(inner, network_id)?))
            }
        },
        _ => None,
    };
    Ok(((old, new), inner))
}

/// One copy of `template` whose transactions are all moved by `shift` (not 0), with its
/// results re-paired; the header is left for [`rechain`] to fix.
pub fn fresh_copy(
    template: &LedgerCloseMeta,
    shift: i64,
    network: &Network,
) -> Result<LedgerCloseMeta, ChainError> {
    let network_id = network.id();
    let mut copy = template.clone();
    let mut outer = HashMap::new();
    let mut inner = HashMap::new();
    for envelope in envelopes_mut(&mut copy) {
        let ((old, new), fee_bumped) = shift_envelope(envelope, shift, &network_id)?;
        outer.insert(old, new);
        if let Some((old, new)) = fee_bumped {
            inner.insert(old, new);
        }
    }
    for pair in results_mut(&mut copy) {
        if let Some(new) = outer.get(&pair.transaction_hash.0) {
            pair.transaction_hash = Hash(*new);
        }
        if let TransactionResultResult::TxFeeBumpInnerSuccess(p)
        | TransactionResultResult::TxFeeBumpInnerFailed(p) = &mut pair.result.result
        {
            if let Some(new) = inner.get(&p.transaction_hash.0) {
                p.transaction_hash = Hash(*new);
            }
        }
    }
    Ok(copy)
}

/// `copies` distinct copies of `template` as one contiguous chain from `first_seq`, one
/// every [`CLOSE_INTERVAL_SECS`] from the template's close time.
pub fn replicate(
    template: &LedgerCloseMeta,
    first_seq: u32,
    copies: u32,
    network: &Network,
) -> Result<Vec<LedgerCloseMeta>, ChainError> {
    let close_time = header_entry(template).header.scp_value.close_time.0;
    let mut chain = Vec::with_capacity(copies as usize);
    for i in 0..copies {
        let mut copy = fresh_copy(template, i64::from(i) + 1, network)?;
        let entry = super::chain::header_entry_mut(&mut copy);
        // `rechain` orders by recorded sequence: give the copies distinct ones first.
        entry.header.ledger_seq = first_seq.wrapping_add(i);
        entry.header.scp_value.close_time.0 = close_time + u64::from(i) * CLOSE_INTERVAL_SECS;
        chain.push(copy);
    }
    rechain(chain, first_seq)
}

/// The fixtures' pubnet ledger 51000294 (1.45 MB of XDR, 541 transactions) replicated
/// `copies` times from `first_seq`.
pub fn pubnet_replica_chain(
    fixtures: &std::path::Path,
    first_seq: u32,
    copies: u32,
) -> Result<Vec<LedgerCloseMeta>, ChainError> {
    let file = fixtures.join("ledgers/pubnet/ledger-51000294.xdr.gz");
    let template = shared::ledger_file::read_ledger_file(&file)?
        .into_iter()
        .next()
        .ok_or_else(|| ChainError::Empty(file.clone()))?;
    replicate(&template, first_seq, copies, &Network::pubnet())
}
