//! Synthetic Stellar chains: valid `LedgerCloseMeta` XDR, built with `stellar-xdr`, with
//! the payment records the indexer must extract from each ledger.
//!
//! Recorded ledgers are few and fixed; load tests and benchmarks need any number of
//! ledgers, with a known answer. [`generate`] streams ledgers (protocol 23,
//! `LedgerCloseMeta::V2`, generalized transaction sets with a classic and a Soroban
//! phase, `TransactionMeta::V4` with CAP-67 events) that chain by hash, from a seed:
//! the same seed always gives the same chain. Each comes with `expected`, the records
//! written from the generator's own decisions (never by running the extractor on the
//! XDR), so extraction can be checked record for record.
//!
//! The mix aims at what makes extraction hard rather than at pubnet's exact
//! proportions: Zipf-popular accounts, lumens and credit assets (alphanum4 and 12),
//! every payment operation (path payments with order-book offers across up to three
//! hops), Stellar Asset Contract `transfer`/`mint`/`burn`/`clawback` calls, a router
//! swap moving two assets, an impostor token whose `transfer` events must be ignored,
//! muxed accounts everywhere an address may be muxed, every memo type (one text memo
//! is not UTF-8), time bounds, fee bumps, multi-operation transactions mixed with
//! non-payment operations, and about 10 % failed transactions (`txFAILED` and
//! `txBAD_SEQ`, plain and fee-bumped).
//!
//! What is simplified: ledger-entry changes are empty, signatures are random bytes,
//! sequence numbers are not tracked per account, classic path payments emit no CAP-67
//! events (payments, account creation and merges do), and the header's bucket list hash
//! is derived from the seed. The transaction set and result set hashes in the header
//! are the real SHA-256 of their XDR.
//!
//! [`datalake`] writes a generated chain as a SEP-54 data lake.

pub mod datalake;
pub(crate) mod rng;
mod tx;
mod world;

use std::sync::Arc;

use sha2::{Digest, Sha256};
use shared::payment::PaymentRecord;
use shared::toid::Toid;
use shared::Network;
use stellar_xdr::{
    DependentTxCluster, GeneralizedTransactionSet, Hash, LedgerCloseMeta, LedgerCloseMetaExt,
    LedgerCloseMetaV2, LedgerHeader, LedgerHeaderExt, LedgerHeaderHistoryEntry,
    LedgerHeaderHistoryEntryExt, Limited, Limits, ParallelTxExecutionStage, ParallelTxsComponent,
    StellarValue, StellarValueExt, TimePoint, TransactionEnvelope, TransactionPhase,
    TransactionSetV1, TxSetComponent, TxSetComponentTxsMaybeDiscountedFee, VecM, WriteXdr,
};

pub use datalake::{write_datalake, write_datalake_with, DatalakeOptions, DatalakeSummary};

use shared::hashing::HashWriter;
use tx::{vecm, BuiltTx, Factory, LedgerCtx, BASE_FEE};
use world::World;

/// The protocol version of generated ledgers.
pub const PROTOCOL_VERSION: u32 = 23;
/// Seconds between generated ledgers.
pub const CLOSE_INTERVAL_SECS: i64 = 5;
/// Most payment records per ledger: keeps transaction orders well inside a TOID's
/// 20 bits.
pub const MAX_PAYMENTS_PER_LEDGER: u32 = 200_000;

/// What to generate.
#[derive(Clone, Debug)]
pub struct SynthConfig {
    /// Sequence of the first ledger (0 is taken as 1). The chain stops early rather than
    /// go past the TOID's 31-bit ledger range.
    pub first_seq: u32,
    /// Number of ledgers.
    pub ledgers: u32,
    /// Payment records per ledger (at most [`MAX_PAYMENTS_PER_LEDGER`]). Transactions
    /// without payments (non-payment operations, failed or impostor contract calls) come
    /// on top.
    pub payments_per_ledger: u32,
    /// Accounts in the world (at least 16; fewer are raised to 16).
    pub accounts: u32,
    /// The seed: the same seed and settings give the same chain.
    pub seed: u64,
    /// The network: transaction hashes and asset contract ids depend on it.
    pub network: Network,
    /// Close time of the first ledger, unix seconds (negative values are taken as 0);
    /// each next ledger closes [`CLOSE_INTERVAL_SECS`] later.
    pub first_close_time: i64,
    /// The first ledger's `previous_ledger_hash`.
    pub previous_hash: [u8; 32],
    /// Zipf exponent of account popularity (1.0 is classic Zipf, 0 uniform).
    pub zipf_exponent: f64,
}

impl Default for SynthConfig {
    /// 100 ledgers of 100 payments over 10 000 pubnet accounts from ledger 2, seed 1.
    fn default() -> Self {
        Self {
            first_seq: 2,
            ledgers: 100,
            payments_per_ledger: 100,
            accounts: 10_000,
            seed: 1,
            network: Network::pubnet(),
            first_close_time: 1_750_000_000,
            previous_hash: [0; 32],
            zipf_exponent: 1.0,
        }
    }
}

/// One generated ledger and the payment records it must yield.
#[derive(Clone, Debug)]
pub struct SyntheticLedger {
    /// The ledger.
    pub meta: LedgerCloseMeta,
    /// What the extractor must produce for it, in id order.
    pub expected: Vec<PaymentRecord>,
}

/// Streams a synthetic chain: deterministic for a seed, in constant memory (apart from
/// the world's account table, `8 × accounts` bytes plus a key cache of at most 2 MB).
pub fn generate(config: SynthConfig) -> Generator {
    Generator::new(config)
}

/// The iterator [`generate`] returns.
#[derive(Debug)]
pub struct Generator {
    factory: Factory,
    network_id: [u8; 32],
    seed: u64,
    next_seq: u32,
    remaining: u32,
    previous_hash: [u8; 32],
    close_time: i64,
    payments_per_ledger: u32,
}

impl Generator {
    fn new(config: SynthConfig) -> Self {
        let network_id = config.network.id();
        let world = World::new(
            config.seed,
            config.accounts,
            config.zipf_exponent,
            network_id,
        );
        let first_seq = config.first_seq.max(1);
        // Ledger sequences must stay within the TOID's 31 bits.
        let last_valid = i32::MAX as u32;
        let room = if first_seq > last_valid {
            0
        } else {
            last_valid - first_seq + 1
        };
        Self {
            factory: Factory::new(world, config.seed, network_id),
            network_id,
            seed: config.seed,
            next_seq: first_seq,
            remaining: config.ledgers.min(room),
            previous_hash: config.previous_hash,
            close_time: config.first_close_time.max(0),
            payments_per_ledger: config.payments_per_ledger.min(MAX_PAYMENTS_PER_LEDGER),
        }
    }

    fn ledger(&mut self) -> SyntheticLedger {
        let ctx = LedgerCtx {
            seq: self.next_seq,
            close_time: self.close_time,
        };
        let mut classic: Vec<BuiltTx> = Vec::new();
        let mut soroban: Vec<BuiltTx> = Vec::new();
        let mut made = 0u32;
        while made < self.payments_per_ledger {
            let tx = self
                .factory
                .transaction(ctx, self.payments_per_ledger - made);
            made += tx.records.len() as u32;
            if tx.soroban {
                soroban.push(tx);
            } else {
                classic.push(tx);
            }
        }

        // Application order: the classic phase, then the Soroban phase.
        let mut processing = Vec::with_capacity(classic.len() + soroban.len());
        let mut classic_set = Vec::with_capacity(classic.len());
        let mut soroban_set = Vec::with_capacity(soroban.len());
        let mut expected = Vec::with_capacity(made as usize);
        let applied = classic
            .into_iter()
            .map(|tx| (false, tx))
            .chain(soroban.into_iter().map(|tx| (true, tx)));
        for (index, (is_soroban, tx)) in applied.enumerate() {
            let BuiltTx {
                envelope,
                hash,
                processing: entry,
                mut context,
                records,
                ..
            } = tx;
            if is_soroban {
                soroban_set.push((hash, envelope));
            } else {
                classic_set.push((hash, envelope));
            }
            processing.push(entry);
            if records.is_empty() {
                continue;
            }
            let tx_order = index as u32 + 1;
            context.id.tx_order = tx_order;
            let context = Arc::new(context);
            for (op_index, source, kind) in records {
                expected.push(PaymentRecord {
                    id: Toid {
                        ledger_seq: ctx.seq,
                        tx_order,
                        op_index,
                    },
                    source,
                    kind,
                    transaction: Arc::clone(&context),
                });
            }
        }

        let tx_set = GeneralizedTransactionSet::V1(TransactionSetV1 {
            previous_ledger_hash: Hash(self.previous_hash),
            phases: vecm(vec![classic_phase(classic_set), soroban_phase(soroban_set)]),
        });
        let tx_count = processing.len() as u32;
        let tx_set_hash = tx::xdr_sha256(&tx_set);
        let result_hash = result_set_hash(&processing);
        let header = LedgerHeader {
            ledger_version: PROTOCOL_VERSION,
            previous_ledger_hash: Hash(self.previous_hash),
            scp_value: StellarValue {
                tx_set_hash: Hash(tx_set_hash),
                close_time: TimePoint(u64::try_from(ctx.close_time).unwrap_or(0)),
                upgrades: VecM::default(),
                ext: StellarValueExt::Basic,
            },
            tx_set_result_hash: Hash(result_hash),
            bucket_list_hash: Hash(bucket_list_hash(self.seed, ctx.seq)),
            ledger_seq: ctx.seq,
            total_coins: 1_054_439_020_873_472_865,
            fee_pool: 3_000_000_000_000 + i64::from(ctx.seq),
            inflation_seq: 0,
            id_pool: u64::from(ctx.seq) * 16,
            base_fee: BASE_FEE as u32,
            base_reserve: 5_000_000,
            max_tx_set_size: tx_count.max(1_000),
            skip_list: [Hash([0; 32]), Hash([0; 32]), Hash([0; 32]), Hash([0; 32])],
            ext: LedgerHeaderExt::V0,
        };
        // Encoding a header built here cannot fail; a zero hash would show if it did.
        let hash = crate::simnet::chain::header_hash(&header).unwrap_or(Hash([0; 32]));
        let meta = LedgerCloseMeta::V2(LedgerCloseMetaV2 {
            ext: LedgerCloseMetaExt::V0,
            ledger_header: LedgerHeaderHistoryEntry {
                hash: hash.clone(),
                header,
                ext: LedgerHeaderHistoryEntryExt::V0,
            },
            tx_set,
            tx_processing: vecm(processing),
            upgrades_processing: VecM::default(),
            scp_info: VecM::default(),
            total_byte_size_of_live_soroban_state: 500_000_000 + u64::from(ctx.seq),
            evicted_keys: VecM::default(),
        });
        self.previous_hash = hash.0;
        self.close_time = self.close_time.saturating_add(CLOSE_INTERVAL_SECS);
        self.next_seq += 1;
        SyntheticLedger { meta, expected }
    }

    /// The network id the chain is generated for.
    pub fn network_id(&self) -> [u8; 32] {
        self.network_id
    }
}

impl Iterator for Generator {
    type Item = SyntheticLedger;

    fn next(&mut self) -> Option<SyntheticLedger> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        Some(self.ledger())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining as usize, Some(self.remaining as usize))
    }
}

impl ExactSizeIterator for Generator {}

/// Envelopes in hash order, as a transaction set holds them.
fn sorted(mut txs: Vec<([u8; 32], TransactionEnvelope)>) -> Vec<TransactionEnvelope> {
    txs.sort_unstable_by_key(|tx| tx.0);
    txs.into_iter().map(|(_, envelope)| envelope).collect()
}

fn classic_phase(txs: Vec<([u8; 32], TransactionEnvelope)>) -> TransactionPhase {
    if txs.is_empty() {
        return TransactionPhase::V0(VecM::default());
    }
    let component =
        TxSetComponent::TxsetCompTxsMaybeDiscountedFee(TxSetComponentTxsMaybeDiscountedFee {
            base_fee: Some(BASE_FEE),
            txs: vecm(sorted(txs)),
        });
    TransactionPhase::V0(vecm(vec![component]))
}

/// The Soroban phase in its protocol 23 form: parallel, one stage of one cluster.
fn soroban_phase(txs: Vec<([u8; 32], TransactionEnvelope)>) -> TransactionPhase {
    let stages = if txs.is_empty() {
        Vec::new()
    } else {
        let cluster = DependentTxCluster(vecm(sorted(txs)));
        vec![ParallelTxExecutionStage(vecm(vec![cluster]))]
    };
    TransactionPhase::V1(ParallelTxsComponent {
        base_fee: Some(BASE_FEE),
        execution_stages: vecm(stages),
    })
}

/// SHA-256 of the `TransactionResultSet` XDR (the result pairs in application order),
/// streamed from the processing entries without copying them.
fn result_set_hash(processing: &[stellar_xdr::TransactionResultMetaV1]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    {
        let mut out = Limited::new(HashWriter(&mut hasher), Limits::none());
        let _ = (processing.len() as u32).write_xdr(&mut out);
        for entry in processing {
            let _ = entry.result.write_xdr(&mut out);
        }
    }
    hasher.finalize().into()
}

fn bucket_list_hash(seed: u64, seq: u32) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(seed.to_le_bytes());
    hasher.update(b"bucket list");
    hasher.update(seq.to_le_bytes());
    hasher.finalize().into()
}
