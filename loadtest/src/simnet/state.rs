//! The simulated chain's state: the ledgers in the encodings the RPC serves, how many of
//! them are closed so far, the fault knobs, and the newest ledger a `getLedgers` answer
//! has held (how far clients have fetched).
//!
//! Every ledger is encoded once at start-up (base64 header, header entry and meta, hex
//! hash), so that requests only copy strings: the simulator must not be the bottleneck of
//! a load test. The decoded `LedgerCloseMeta` is dropped after encoding.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};

use base64::Engine as _;
use stellar_xdr::{LedgerCloseMeta, Limits, WriteXdr};

use super::chain::header_entry;
use super::Faults;

/// One ledger, encoded the way the RPC serves it.
#[derive(Debug)]
pub(crate) struct ServedLedger {
    pub(crate) sequence: u32,
    /// Lower-case hex of the header hash.
    pub(crate) hash: String,
    /// Close time, unix seconds.
    pub(crate) close_time: u64,
    pub(crate) protocol_version: u32,
    /// base64 `LedgerHeaderHistoryEntry` (what `getLedgers` serves as `headerXdr`).
    pub(crate) header_entry_xdr: String,
    /// base64 bare `LedgerHeader` (what `getLatestLedger` serves as `headerXdr`).
    pub(crate) header_xdr: String,
    /// base64 `LedgerCloseMeta`.
    pub(crate) metadata_xdr: String,
}

impl ServedLedger {
    /// Encodes a ledger.
    pub(crate) fn encode(meta: &LedgerCloseMeta) -> Result<Self, stellar_xdr::Error> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let entry = header_entry(meta);
        Ok(Self {
            sequence: entry.header.ledger_seq,
            hash: hex::encode(entry.hash.0),
            close_time: entry.header.scp_value.close_time.0,
            protocol_version: entry.header.ledger_version,
            header_entry_xdr: b64.encode(entry.to_xdr(Limits::none())?),
            header_xdr: b64.encode(entry.header.to_xdr(Limits::none())?),
            metadata_xdr: b64.encode(meta.to_xdr(Limits::none())?),
        })
    }

    /// Close time as the RPC's signed field.
    pub(crate) fn close_time_i64(&self) -> i64 {
        i64::try_from(self.close_time).unwrap_or(i64::MAX)
    }
}

/// The whole server state, shared by the HTTP handlers, the closer task and [`super::Simnet`].
#[derive(Debug)]
pub(crate) struct State {
    /// Contiguous ledgers: `ledgers[i].sequence == ledgers[0].sequence + i`. Never empty.
    pub(crate) ledgers: Vec<ServedLedger>,
    /// How many ledgers are closed (served), in `1..=ledgers.len()`.
    closed: AtomicUsize,
    pub(crate) network_passphrase: String,
    faults: RwLock<Faults>,
    rng: AtomicU64,
    /// Injected request failures so far, to alternate between their two kinds.
    failures: AtomicU64,
    /// The newest ledger put in a `getLedgers` answer so far (0: none yet).
    served: AtomicU32,
}

/// A closed range of served ledgers, as indices into [`State::ledgers`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub(crate) oldest: usize,
    pub(crate) latest: usize,
}

impl State {
    pub(crate) fn new(
        ledgers: Vec<ServedLedger>,
        network_passphrase: String,
        initially_closed: usize,
        faults: Faults,
        seed: u64,
    ) -> Self {
        let closed = initially_closed.clamp(1, ledgers.len().max(1));
        Self {
            ledgers,
            closed: AtomicUsize::new(closed),
            network_passphrase,
            faults: RwLock::new(faults.sanitized()),
            rng: AtomicU64::new(seed),
            failures: AtomicU64::new(0),
            served: AtomicU32::new(0),
        }
    }

    /// The current fault settings.
    pub(crate) fn faults(&self) -> Faults {
        self.faults
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the fault settings (sanitised).
    pub(crate) fn set_faults(&self, faults: Faults) {
        *self.faults.write().unwrap_or_else(PoisonError::into_inner) = faults.sanitized();
    }

    /// Closes one more ledger; returns its sequence, or `None` if all are closed.
    pub(crate) fn close_next(&self) -> Option<u32> {
        let total = self.ledgers.len();
        let previous = self
            .closed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |closed| {
                (closed < total).then_some(closed + 1)
            })
            .ok()?;
        let sequence = self.ledgers.get(previous).map(|l| l.sequence);
        if let Some(sequence) = sequence {
            tracing::debug!(sequence, "ledger closed");
        }
        sequence
    }

    /// The served window: latest closed ledger and the oldest one retention keeps.
    pub(crate) fn window(&self) -> Window {
        let closed = self.closed.load(Ordering::Acquire).max(1);
        let latest = closed - 1;
        let kept = match self.faults().retention {
            Some(retention) => (retention.max(1) as usize).min(closed),
            None => closed,
        };
        Window {
            oldest: closed - kept,
            latest,
        }
    }

    /// The ledger at an index of the chain.
    pub(crate) fn ledger(&self, index: usize) -> &ServedLedger {
        &self.ledgers[index.min(self.ledgers.len() - 1)]
    }

    /// Index of a sequence in the chain, if it is part of it.
    pub(crate) fn index_of(&self, sequence: u32) -> Option<usize> {
        let first = self.ledgers.first()?.sequence;
        let index = sequence.checked_sub(first)? as usize;
        (index < self.ledgers.len()).then_some(index)
    }

    /// True with probability `rate` (splitmix64 over an atomic counter: cheap, lock-free,
    /// reproducible from the seed for a single-threaded caller).
    pub(crate) fn chance(&self, rate: f64) -> bool {
        if rate <= 0.0 {
            return false;
        }
        if rate >= 1.0 {
            return true;
        }
        let mut z = self
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
        unit < rate
    }

    /// Records that a `getLedgers` answer holds ledgers up to `sequence`.
    pub(crate) fn note_served(&self, sequence: u32) {
        self.served.fetch_max(sequence, Ordering::AcqRel);
    }

    /// The newest ledger put in a `getLedgers` answer, if any.
    pub(crate) fn served(&self) -> Option<u32> {
        Some(self.served.load(Ordering::Acquire)).filter(|s| *s > 0)
    }

    /// Counts an injected failure; returns its ordinal (0, 1, 2, ...).
    pub(crate) fn next_failure(&self) -> u64 {
        self.failures.fetch_add(1, Ordering::Relaxed)
    }
}
