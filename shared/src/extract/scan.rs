//! A selective `LedgerCloseMeta` decoder for the hot path.
//!
//! Decoding a whole ledger with `stellar-xdr` materialises every ledger-entry change,
//! which is most of the bytes and nothing payments need; on a 2-core machine it caps a
//! large pubnet ledger at under 200 ledgers/s. This scanner walks the same XDR, decodes
//! with `stellar-xdr` only what extraction reads (header, transaction set, result pairs,
//! operation events) and steps over the rest without allocating. The parts it steps over
//! are still validated: lengths, discriminants, padding, depth. Any shape it does not
//! hand-skip (rare entry kinds, config settings, SCP history) is decoded with
//! `stellar-xdr` from the same position, so nothing is accepted blindly. Tests check
//! that both paths extract identical records from every fixture, and that the skips
//! consume exactly as many bytes as `stellar-xdr` does on arbitrary values.

use sha2::{Digest, Sha256};

use super::verify::{classic_tx_set_hash, ContentHashes};
use crate::hashing::xdr_sha256;
use stellar_xdr::{
    ContractEvent, Error, GeneralizedTransactionSet, LedgerHeaderHistoryEntry, Limits, ReadXdr,
    TransactionResultPair, TransactionSet,
};

type Result<T> = std::result::Result<T, Error>;

/// The parts of a ledger that extraction reads.
#[derive(Debug)]
pub(crate) struct ScannedLedger {
    pub header: LedgerHeaderHistoryEntry,
    /// What the transaction set, the results and the header hash to, computed from the
    /// bytes as they were read.
    pub hashes: ContentHashes,
    pub meta_version: u8,
    pub tx_set: ScannedTxSet,
    pub applied: Vec<AppliedTx>,
}

/// The transaction set, in whichever form the ledger carries.
#[derive(Debug)]
pub(crate) enum ScannedTxSet {
    Classic(TransactionSet),
    Generalized(GeneralizedTransactionSet),
}

/// One entry of `tx_processing`: its result and the contract events of its operations.
#[derive(Debug)]
pub(crate) struct AppliedTx {
    pub result: TransactionResultPair,
    pub events: TxEvents,
}

/// Where a transaction's contract events are, by meta version.
#[derive(Debug)]
pub(crate) enum TxEvents {
    /// Meta V0-V2: no events.
    None,
    /// Meta V3: the Soroban events of the only operation.
    Soroban(Vec<ContractEvent>),
    /// Meta V4: events per operation.
    PerOperation(Vec<Vec<ContractEvent>>),
}

impl TxEvents {
    pub fn for_operation(&self, op_offset: usize) -> &[ContractEvent] {
        match self {
            Self::None => &[],
            Self::Soroban(events) if op_offset == 0 => events,
            Self::Soroban(_) => &[],
            Self::PerOperation(ops) => ops.get(op_offset).map_or(&[], Vec::as_slice),
        }
    }
}

/// Scans one `LedgerCloseMeta`; `Ok((ledger, consumed))` where `consumed` is its length.
/// A failure comes with the ledger sequence when the header was read before it.
pub(crate) fn scan_ledger(
    bytes: &[u8],
    max_depth: u32,
) -> std::result::Result<(ScannedLedger, usize), (Error, Option<u32>)> {
    let mut s = Scanner {
        buf: bytes,
        pos: 0,
        depth: 0,
        max_depth,
        ledger_seq: None,
    };
    match s.ledger_close_meta() {
        Ok(ledger) => Ok((ledger, s.pos)),
        Err(e) => Err((e, s.ledger_seq)),
    }
}

/// A cursor over XDR bytes.
pub(crate) struct Scanner<'a> {
    buf: &'a [u8],
    pos: usize,
    depth: u32,
    max_depth: u32,
    ledger_seq: Option<u32>,
}

impl<'a> Scanner<'a> {
    #[cfg(test)]
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            depth: 0,
            max_depth: 512,
            ledger_seq: None,
        }
    }

    #[cfg(test)]
    pub fn position(&self) -> usize {
        self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or(Error::LengthLimitExceeded)?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn skip(&mut self, n: usize) -> Result<()> {
        self.take(n).map(drop)
    }

    /// A variable-length opaque or string of at most `max` bytes, with zero padding.
    fn skip_opaque(&mut self, max: u32) -> Result<()> {
        let len = self.u32()?;
        if len > max {
            return Err(Error::LengthExceedsMax);
        }
        self.skip(len as usize)?;
        let pad = (4 - (len as usize % 4)) % 4;
        if self.take(pad)?.iter().any(|b| *b != 0) {
            return Err(Error::NonZeroPadding);
        }
        Ok(())
    }

    /// An array count, checked against what the remaining bytes could hold (each element
    /// takes at least `min_size` bytes) so hostile counts cannot make long loops.
    fn count(&mut self, max: u32, min_size: usize) -> Result<u32> {
        let n = self.u32()?;
        if n > max {
            return Err(Error::LengthExceedsMax);
        }
        if (n as usize).saturating_mul(min_size) > self.buf.len() - self.pos {
            return Err(Error::LengthLimitExceeded);
        }
        Ok(n)
    }

    /// An XDR optional's flag.
    fn present(&mut self) -> Result<bool> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Error::Invalid),
        }
    }

    /// An `ExtensionPoint` or other union whose only arm is 0/void.
    fn void_ext(&mut self) -> Result<()> {
        match self.u32()? {
            0 => Ok(()),
            _ => Err(Error::Invalid),
        }
    }

    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.depth >= self.max_depth {
            return Err(Error::DepthLimitExceeded);
        }
        self.depth += 1;
        let out = f(self);
        self.depth -= 1;
        out
    }

    /// Decodes a value with `stellar-xdr` from the current position.
    pub fn decode<T: ReadXdr>(&mut self) -> Result<T> {
        let rest = &self.buf[self.pos..];
        let limits = Limits {
            depth: self.max_depth.saturating_sub(self.depth),
            len: rest.len(),
        };
        let mut reader = stellar_xdr::Limited::new(std::io::Cursor::new(rest), limits);
        let value = T::read_xdr(&mut reader)?;
        self.pos += reader.inner.position() as usize;
        Ok(value)
    }

    /// Steps over a value by decoding it with `stellar-xdr` (the exact fallback).
    fn skip_as<T: ReadXdr>(&mut self) -> Result<()> {
        self.decode::<T>().map(drop)
    }

    /// Re-reads from `start` with `stellar-xdr`: used when a hand skip meets a shape it
    /// does not know, so the full decoder has the last word.
    fn fallback<T: ReadXdr>(&mut self, start: usize) -> Result<()> {
        self.pos = start;
        self.skip_as::<T>()
    }

    // ---- the ledger ----

    fn ledger_close_meta(&mut self) -> Result<ScannedLedger> {
        let version = self.u32()?;
        match version {
            0 => {
                let header = self.header()?;
                let set = self.decode::<TransactionSet>()?;
                let tx_set_hash = classic_tx_set_hash(&set);
                let tx_set = ScannedTxSet::Classic(set);
                let (applied, results_hash) = self.tx_processing(false)?;
                self.skip_as::<stellar_xdr::VecM<stellar_xdr::UpgradeEntryMeta>>()?;
                self.skip_as::<stellar_xdr::VecM<stellar_xdr::ScpHistoryEntry>>()?;
                Ok(ScannedLedger {
                    hashes: ContentHashes {
                        header: xdr_sha256(&header.header),
                        tx_set: tx_set_hash,
                        results: results_hash,
                    },
                    header,
                    meta_version: 0,
                    tx_set,
                    applied,
                })
            }
            1 | 2 => {
                self.skip_as::<stellar_xdr::LedgerCloseMetaExt>()?;
                let header = self.header()?;
                let start = self.pos;
                let tx_set = ScannedTxSet::Generalized(self.decode::<GeneralizedTransactionSet>()?);
                let tx_set_hash: [u8; 32] = Sha256::digest(&self.buf[start..self.pos]).into();
                let (applied, results_hash) = self.tx_processing(version == 2)?;
                self.skip_as::<stellar_xdr::VecM<stellar_xdr::UpgradeEntryMeta>>()?;
                self.skip_as::<stellar_xdr::VecM<stellar_xdr::ScpHistoryEntry>>()?;
                self.skip(8)?; // total_byte_size_of_live_soroban_state
                let evicted = self.count(u32::MAX, 4)?;
                for _ in 0..evicted {
                    self.ledger_key()?;
                }
                if version == 1 {
                    // `unused`: formerly the evicted persistent entries.
                    let entries = self.count(u32::MAX, 4)?;
                    for _ in 0..entries {
                        self.ledger_entry()?;
                    }
                }
                Ok(ScannedLedger {
                    hashes: ContentHashes {
                        header: xdr_sha256(&header.header),
                        tx_set: tx_set_hash,
                        results: results_hash,
                    },
                    header,
                    meta_version: version as u8,
                    tx_set,
                    applied,
                })
            }
            _ => Err(Error::Invalid),
        }
    }

    fn header(&mut self) -> Result<LedgerHeaderHistoryEntry> {
        let header = self.decode::<LedgerHeaderHistoryEntry>()?;
        self.ledger_seq = Some(header.header.ledger_seq);
        Ok(header)
    }

    /// The applied transactions, and the hash of their `TransactionResultSet` (the count,
    /// then each result pair's bytes as read).
    fn tx_processing(&mut self, v1_entries: bool) -> Result<(Vec<AppliedTx>, [u8; 32])> {
        let n = self.count(u32::MAX, 16)?;
        let mut results = Sha256::new();
        results.update(n.to_be_bytes());
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            if v1_entries {
                self.void_ext()?;
            }
            let start = self.pos;
            let result = self.decode::<TransactionResultPair>()?;
            results.update(&self.buf[start..self.pos]);
            self.ledger_entry_changes()?; // fee_processing
            let events = self.transaction_meta()?;
            if v1_entries {
                self.ledger_entry_changes()?; // post_tx_apply_fee_processing
            }
            out.push(AppliedTx { result, events });
        }
        Ok((out, results.finalize().into()))
    }

    pub(crate) fn transaction_meta(&mut self) -> Result<TxEvents> {
        match self.u32()? {
            0 => {
                self.operation_metas()?;
                Ok(TxEvents::None)
            }
            1 => {
                self.ledger_entry_changes()?;
                self.operation_metas()?;
                Ok(TxEvents::None)
            }
            2 => {
                self.ledger_entry_changes()?;
                self.operation_metas()?;
                self.ledger_entry_changes()?;
                Ok(TxEvents::None)
            }
            3 => {
                self.void_ext()?;
                self.ledger_entry_changes()?;
                self.operation_metas()?;
                self.ledger_entry_changes()?;
                let mut events = Vec::new();
                if self.present()? {
                    self.skip_as::<stellar_xdr::SorobanTransactionMetaExt>()?;
                    events = self
                        .decode::<stellar_xdr::VecM<ContractEvent>>()?
                        .into_vec();
                    self.sc_val()?; // return value
                    self.diagnostic_events()?;
                }
                Ok(TxEvents::Soroban(events))
            }
            4 => {
                self.void_ext()?;
                self.ledger_entry_changes()?;
                let ops = self.count(u32::MAX, 12)?;
                let mut per_op = Vec::with_capacity(ops as usize);
                for _ in 0..ops {
                    self.void_ext()?;
                    self.ledger_entry_changes()?;
                    per_op.push(
                        self.decode::<stellar_xdr::VecM<ContractEvent>>()?
                            .into_vec(),
                    );
                }
                self.ledger_entry_changes()?;
                if self.present()? {
                    self.skip_as::<stellar_xdr::SorobanTransactionMetaExt>()?;
                    if self.present()? {
                        self.sc_val()?;
                    }
                }
                let tx_events = self.count(u32::MAX, 8)?;
                for _ in 0..tx_events {
                    self.u32()?; // stage
                    self.contract_event()?;
                }
                self.diagnostic_events()?;
                Ok(TxEvents::PerOperation(per_op))
            }
            _ => Err(Error::Invalid),
        }
    }

    fn operation_metas(&mut self) -> Result<()> {
        let n = self.count(u32::MAX, 4)?;
        for _ in 0..n {
            self.ledger_entry_changes()?;
        }
        Ok(())
    }

    fn diagnostic_events(&mut self) -> Result<()> {
        let n = self.count(u32::MAX, 8)?;
        for _ in 0..n {
            self.u32()?; // in_successful_contract_call
            self.contract_event()?;
        }
        Ok(())
    }

    pub(crate) fn contract_event(&mut self) -> Result<()> {
        self.void_ext()?;
        if self.present()? {
            self.skip(32)?;
        }
        if self.u32()? > 2 {
            return Err(Error::Invalid); // system, contract, diagnostic
        }
        self.void_ext()?; // body V0
        let topics = self.count(u32::MAX, 4)?;
        for _ in 0..topics {
            self.sc_val()?;
        }
        self.sc_val()
    }

    // ---- ledger entries ----

    pub fn ledger_entry_changes(&mut self) -> Result<()> {
        let n = self.count(u32::MAX, 8)?;
        for _ in 0..n {
            match self.u32()? {
                0 | 1 | 3 | 4 => self.ledger_entry()?,
                2 => self.ledger_key()?,
                _ => return Err(Error::Invalid),
            }
        }
        Ok(())
    }

    fn account_id(&mut self) -> Result<()> {
        self.void_ext()?; // PUBLIC_KEY_TYPE_ED25519
        self.skip(32)
    }

    fn optional_account_id(&mut self) -> Result<()> {
        if self.present()? {
            self.account_id()?;
        }
        Ok(())
    }

    fn asset(&mut self, pool_share: bool) -> Result<()> {
        match self.u32()? {
            0 => Ok(()),
            1 => {
                self.skip(4)?;
                self.account_id()
            }
            2 => {
                self.skip(12)?;
                self.account_id()
            }
            3 if pool_share => self.skip(32),
            _ => Err(Error::Invalid),
        }
    }

    pub fn ledger_entry(&mut self) -> Result<()> {
        let start = self.pos;
        self.skip(4)?; // last_modified_ledger_seq
        let handled = self.ledger_entry_data()?;
        if !handled {
            return self.fallback::<stellar_xdr::LedgerEntry>(start);
        }
        match self.u32()? {
            0 => Ok(()),
            1 => {
                self.optional_account_id()?; // sponsoring id
                self.void_ext()
            }
            _ => Err(Error::Invalid),
        }
    }

    /// Skips the entry body; `false` when the kind is left to the full decoder.
    fn ledger_entry_data(&mut self) -> Result<bool> {
        match self.u32()? {
            0 => self.account_entry().map(|()| true),
            1 => {
                self.account_id()?;
                self.asset(true)?;
                self.skip(20)?; // balance, limit, flags
                match self.u32()? {
                    0 => {}
                    1 => {
                        self.skip(16)?; // liabilities
                        match self.u32()? {
                            0 => {}
                            2 => {
                                self.skip(4)?; // liquidity_pool_use_count
                                self.void_ext()?;
                            }
                            _ => return Err(Error::Invalid),
                        }
                    }
                    _ => return Err(Error::Invalid),
                }
                Ok(true)
            }
            2 => {
                self.account_id()?;
                self.skip(8)?; // offer id
                self.asset(false)?;
                self.asset(false)?;
                self.skip(20)?; // amount, price, flags
                self.void_ext()?;
                Ok(true)
            }
            3 => {
                self.account_id()?;
                self.skip_opaque(64)?; // data name
                self.skip_opaque(64)?; // data value
                self.void_ext()?;
                Ok(true)
            }
            5 => {
                self.skip(32)?; // pool id
                self.void_ext()?; // constant product
                self.asset(false)?;
                self.asset(false)?;
                self.skip(4 + 32)?; // fee, reserves, shares, trustline count
                Ok(true)
            }
            6 => {
                self.void_ext()?;
                self.sc_address()?;
                self.sc_val()?;
                self.skip(4)?; // durability
                self.sc_val()?;
                Ok(true)
            }
            7 => {
                match self.u32()? {
                    0 => {}
                    1 => {
                        self.void_ext()?;
                        self.void_ext()?;
                        self.skip(40)?; // ten cost inputs
                    }
                    _ => return Err(Error::Invalid),
                }
                self.skip(32)?; // hash
                self.skip_opaque(u32::MAX)?; // code
                Ok(true)
            }
            9 => self.skip(36).map(|()| true),
            // Claimable balances (recursive predicates) and config settings are rare:
            // the full decoder reads them.
            4 | 8 => Ok(false),
            _ => Err(Error::Invalid),
        }
    }

    fn account_entry(&mut self) -> Result<()> {
        self.account_id()?;
        self.skip(20)?; // balance, seq num, num sub entries
        self.optional_account_id()?; // inflation destination
        self.skip(4)?; // flags
        self.skip_opaque(32)?; // home domain
        self.skip(4)?; // thresholds
        let signers = self.count(20, 40)?;
        for _ in 0..signers {
            match self.u32()? {
                0..=2 => self.skip(32)?,
                3 => {
                    self.skip(32)?;
                    self.skip_opaque(64)?;
                }
                _ => return Err(Error::Invalid),
            }
            self.skip(4)?; // weight
        }
        match self.u32()? {
            0 => return Ok(()),
            1 => self.skip(16)?, // liabilities
            _ => return Err(Error::Invalid),
        }
        match self.u32()? {
            0 => return Ok(()),
            2 => {
                self.skip(8)?; // num sponsored, num sponsoring
                let ids = self.count(20, 4)?;
                for _ in 0..ids {
                    self.optional_account_id()?;
                }
            }
            _ => return Err(Error::Invalid),
        }
        match self.u32()? {
            0 => Ok(()),
            3 => {
                self.void_ext()?;
                self.skip(12) // seq ledger, seq time
            }
            _ => Err(Error::Invalid),
        }
    }

    pub(crate) fn ledger_key(&mut self) -> Result<()> {
        let start = self.pos;
        match self.u32()? {
            0 => self.account_id(),
            1 => {
                self.account_id()?;
                self.asset(true)
            }
            2 => {
                self.account_id()?;
                self.skip(8)
            }
            3 => {
                self.account_id()?;
                self.skip_opaque(64)
            }
            4 => {
                self.void_ext()?; // claimable balance id v0
                self.skip(32)
            }
            5 | 7 | 9 => self.skip(32),
            6 => {
                self.sc_address()?;
                self.sc_val()?;
                self.skip(4)
            }
            8 => self.fallback::<stellar_xdr::LedgerKey>(start),
            _ => Err(Error::Invalid),
        }
    }

    // ---- contract values ----

    fn sc_address(&mut self) -> Result<()> {
        match self.u32()? {
            0 => self.account_id(),
            1 | 4 => self.skip(32),
            2 | 5 => self.skip(40),
            3 => {
                self.void_ext()?;
                self.skip(32)
            }
            _ => Err(Error::Invalid),
        }
    }

    pub fn sc_val(&mut self) -> Result<()> {
        self.nested(|s| {
            let start = s.pos;
            match s.u32()? {
                1 | 20 => Ok(()),
                0 | 3 | 4 => s.skip(4),
                5..=8 => s.skip(8),
                9 | 10 => s.skip(16),
                11 | 12 => s.skip(32),
                13 | 14 => s.skip_opaque(u32::MAX),
                15 => s.skip_opaque(32),
                16 => {
                    if s.present()? {
                        let n = s.count(u32::MAX, 4)?;
                        for _ in 0..n {
                            s.sc_val()?;
                        }
                    }
                    Ok(())
                }
                17 => {
                    if s.present()? {
                        let n = s.count(u32::MAX, 8)?;
                        for _ in 0..n {
                            s.sc_val()?;
                            s.sc_val()?;
                        }
                    }
                    Ok(())
                }
                18 => s.sc_address(),
                21 => s.skip(8),
                // Errors, contract instances and executable tags: the full decoder.
                2 | 19 | 22 => s.fallback::<stellar_xdr::ScVal>(start),
                _ => Err(Error::Invalid),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbitrary::{Arbitrary, Unstructured};
    use proptest::prelude::*;
    use stellar_xdr::WriteXdr;

    /// For a value `stellar-xdr` can write and read back, the hand skip must succeed and
    /// consume exactly its encoding.
    fn skips_exactly<T>(seed: &[u8], skip: impl Fn(&mut Scanner<'_>) -> Result<()>) -> bool
    where
        T: for<'a> Arbitrary<'a> + WriteXdr + ReadXdr,
    {
        let Ok(value) = T::arbitrary(&mut Unstructured::new(seed)) else {
            return false;
        };
        let Ok(bytes) = value.to_xdr(Limits::none()) else {
            return false;
        };
        if T::from_xdr(
            &bytes,
            Limits {
                depth: 512,
                len: bytes.len(),
            },
        )
        .is_err()
        {
            return false;
        }
        let mut scanner = Scanner::new(&bytes);
        let skipped = skip(&mut scanner);
        assert!(skipped.is_ok(), "{skipped:?} on {}", hex::encode(&bytes));
        assert_eq!(
            scanner.position(),
            bytes.len(),
            "consumed all of {}",
            hex::encode(&bytes)
        );
        true
    }

    /// Where the hand skip accepts arbitrary bytes, `stellar-xdr` accepts the same prefix.
    fn never_more_lenient<T: ReadXdr>(bytes: &[u8], skip: impl Fn(&mut Scanner<'_>) -> Result<()>) {
        let mut scanner = Scanner::new(bytes);
        if skip(&mut scanner).is_ok() {
            let prefix = &bytes[..scanner.position()];
            let decoded = T::from_xdr(
                prefix,
                Limits {
                    depth: 512,
                    len: prefix.len(),
                },
            );
            assert!(
                decoded.is_ok(),
                "scanner accepted what stellar-xdr refuses: {}",
                hex::encode(prefix)
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        #[test]
        fn entry_changes_skip_exactly(seed in proptest::collection::vec(any::<u8>(), 64..4096)) {
            skips_exactly::<stellar_xdr::LedgerEntryChanges>(&seed, |s| s.ledger_entry_changes());
        }

        #[test]
        fn entries_skip_exactly(seed in proptest::collection::vec(any::<u8>(), 64..4096)) {
            skips_exactly::<stellar_xdr::LedgerEntry>(&seed, |s| s.ledger_entry());
        }

        #[test]
        fn keys_skip_exactly(seed in proptest::collection::vec(any::<u8>(), 16..2048)) {
            skips_exactly::<stellar_xdr::LedgerKey>(&seed, |s| s.ledger_key());
        }

        #[test]
        fn contract_values_skip_exactly(seed in proptest::collection::vec(any::<u8>(), 8..2048)) {
            skips_exactly::<stellar_xdr::ScVal>(&seed, |s| s.sc_val());
        }

        #[test]
        fn contract_events_skip_exactly(seed in proptest::collection::vec(any::<u8>(), 16..2048)) {
            skips_exactly::<ContractEvent>(&seed, |s| s.contract_event());
        }

        #[test]
        fn transaction_metas_skip_exactly(seed in proptest::collection::vec(any::<u8>(), 64..8192)) {
            skips_exactly::<stellar_xdr::TransactionMeta>(&seed, |s| s.transaction_meta().map(drop));
        }

        #[test]
        fn random_bytes_are_not_accepted_more_leniently(
            kind in 0u8..4,
            mut bytes in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            // Small discriminants make random bytes reach deep into the structures.
            for b in bytes.iter_mut().step_by(4) { *b %= 4; }
            match kind {
                0 => never_more_lenient::<stellar_xdr::LedgerEntryChanges>(&bytes, |s| s.ledger_entry_changes()),
                1 => never_more_lenient::<stellar_xdr::ScVal>(&bytes, |s| s.sc_val()),
                2 => never_more_lenient::<stellar_xdr::LedgerKey>(&bytes, |s| s.ledger_key()),
                _ => never_more_lenient::<ContractEvent>(&bytes, |s| s.contract_event()),
            }
        }
    }

    /// A ledger entry of the chosen kind, from arbitrary bytes.
    fn entry_of_kind(kind: u8, seed: &[u8]) -> arbitrary::Result<stellar_xdr::LedgerEntry> {
        use stellar_xdr::LedgerEntryData as D;
        let u = &mut Unstructured::new(seed);
        let data = match kind {
            0 => D::Account(Arbitrary::arbitrary(u)?),
            1 => D::Trustline(Arbitrary::arbitrary(u)?),
            2 => D::Offer(Arbitrary::arbitrary(u)?),
            3 => D::Data(Arbitrary::arbitrary(u)?),
            4 => D::ClaimableBalance(Arbitrary::arbitrary(u)?),
            5 => D::LiquidityPool(Arbitrary::arbitrary(u)?),
            6 => D::ContractData(Arbitrary::arbitrary(u)?),
            7 => D::ContractCode(Arbitrary::arbitrary(u)?),
            8 => D::ConfigSetting(Arbitrary::arbitrary(u)?),
            _ => D::Ttl(Arbitrary::arbitrary(u)?),
        };
        Ok(stellar_xdr::LedgerEntry {
            last_modified_ledger_seq: Arbitrary::arbitrary(u)?,
            data,
            ext: Arbitrary::arbitrary(u)?,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

        #[test]
        fn every_entry_kind_skips_exactly(kind in 0u8..10, seed in proptest::collection::vec(any::<u8>(), 32..2048)) {
            let Ok(entry) = entry_of_kind(kind, &seed) else { return Ok(()) };
            let Ok(bytes) = entry.to_xdr(Limits::none()) else { return Ok(()) };
            if stellar_xdr::LedgerEntry::from_xdr(&bytes, Limits { depth: 512, len: bytes.len() }).is_err() {
                return Ok(());
            }
            let mut scanner = Scanner::new(&bytes);
            prop_assert!(scanner.ledger_entry().is_ok(), "kind {kind}: {}", hex::encode(&bytes));
            prop_assert_eq!(scanner.position(), bytes.len());
        }
    }

    #[test]
    fn deep_nesting_hits_the_depth_limit_not_the_stack() {
        // A vector inside a vector, 100k times.
        let mut bytes = Vec::new();
        for _ in 0..100_000 {
            bytes.extend_from_slice(&[0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0, 1]);
        }
        let mut scanner = Scanner::new(&bytes);
        assert!(matches!(scanner.sc_val(), Err(Error::DepthLimitExceeded)));
    }
}
