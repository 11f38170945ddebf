//! Recorded ledgers followed by synthetic ones, as one chain.
//!
//! The recorded ledgers are real but few; a load test that must run for hours needs the
//! chain to keep growing. [`recorded_then_synthetic`] re-chains the recorded ledgers
//! and continues them with [`crate::synth`] ledgers: the first synthetic ledger has the
//! next sequence, links to the last recorded ledger's hash and closes five seconds after
//! it, so a follower sees one unbroken chain across the seam. [`synthetic_chain`] is the
//! chain without any recorded ledger.

use shared::Network;
use stellar_xdr::LedgerCloseMeta;

use super::chain::{header_entry, rechain, ChainError};
use crate::synth::{generate, SynthConfig, CLOSE_INTERVAL_SECS};

/// What the synthetic part of a chain looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyntheticTail {
    /// Payment records per ledger.
    pub payments_per_ledger: u32,
    /// Accounts in the synthetic world.
    pub accounts: u32,
    /// Seed of the generator.
    pub seed: u64,
}

impl Default for SyntheticTail {
    /// 100 payments per ledger over 10 000 accounts, seed 1.
    fn default() -> Self {
        Self {
            payments_per_ledger: 100,
            accounts: 10_000,
            seed: 1,
        }
    }
}

/// Re-chains `recorded` (from its lowest sequence; a chain that is already contiguous
/// comes out unchanged) and appends `synthetic` generated ledgers after it. With no
/// recorded ledger, the chain is purely synthetic from ledger 2.
pub fn recorded_then_synthetic(
    recorded: Vec<LedgerCloseMeta>,
    synthetic: u32,
    payments_per_ledger: u32,
    accounts: u32,
    seed: u64,
    network: Network,
) -> Result<Vec<LedgerCloseMeta>, ChainError> {
    let tail = SyntheticTail {
        payments_per_ledger,
        accounts,
        seed,
    };
    let Some(lowest) = recorded
        .iter()
        .map(|l| header_entry(l).header.ledger_seq)
        .min()
    else {
        return synthetic_chain(2, synthetic, tail, network);
    };
    let mut chain = rechain(recorded, lowest)?;
    let Some(last) = chain.last() else {
        return Ok(chain);
    };
    let entry = header_entry(last);
    let first_seq = entry.header.ledger_seq.checked_add(1);
    let config = SynthConfig {
        first_seq: first_seq.unwrap_or(u32::MAX),
        ledgers: synthetic,
        payments_per_ledger: tail.payments_per_ledger,
        accounts: tail.accounts,
        seed: tail.seed,
        network,
        first_close_time: i64::try_from(entry.header.scp_value.close_time.0)
            .unwrap_or(i64::MAX - CLOSE_INTERVAL_SECS)
            + CLOSE_INTERVAL_SECS,
        previous_hash: entry.hash.0,
        zipf_exponent: 1.0,
    };
    check_room(config.first_seq, synthetic, first_seq.is_some())?;
    chain.reserve(synthetic as usize);
    chain.extend(generate(config).map(|l| l.meta));
    Ok(chain)
}

/// A purely synthetic chain of `ledgers` ledgers from `first_seq`.
pub fn synthetic_chain(
    first_seq: u32,
    ledgers: u32,
    tail: SyntheticTail,
    network: Network,
) -> Result<Vec<LedgerCloseMeta>, ChainError> {
    check_room(first_seq, ledgers, first_seq > 0)?;
    let config = SynthConfig {
        first_seq,
        ledgers,
        payments_per_ledger: tail.payments_per_ledger,
        accounts: tail.accounts,
        seed: tail.seed,
        network,
        ..SynthConfig::default()
    };
    Ok(generate(config).map(|l| l.meta).collect())
}

/// Synthetic ledgers carry TOIDs: their sequences must stay within 31 bits.
fn check_room(first_seq: u32, ledgers: u32, valid_start: bool) -> Result<(), ChainError> {
    let end = u64::from(first_seq) + u64::from(ledgers);
    if !valid_start || (ledgers > 0 && end - 1 > i32::MAX as u64) {
        return Err(ChainError::Overflow {
            first_seq,
            len: ledgers as usize,
        });
    }
    Ok(())
}
