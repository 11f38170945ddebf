//! Tests of the synthetic chain generator: the extractor (both its full-decode and its
//! fast path) finds exactly the records the generator intended, ledgers chain by hash,
//! the mix holds every case the indexer must handle, the data lake writer round-trips
//! through `shared::datalake`, and simnet serves recorded ledgers continued by synthetic
//! ones as one chain.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};
use shared::address::Address;
use shared::datalake::DataLake;
use shared::payment::{
    BalanceChangeKind, HostFunction, Memo, PathPaymentStrictness, PaymentKind, PaymentRecord,
};
use shared::{Extractor, Network};
use stellar_xdr::{
    GeneralizedTransactionSet, LedgerCloseMeta, Limits, ReadXdr, TransactionEnvelope,
    TransactionPhase, TxSetComponent, WriteXdr,
};

use loadtest::simnet::{self, chain::header_entry, Simnet, SimnetConfig, SyntheticTail};
use loadtest::synth::{generate, write_datalake, SynthConfig, SyntheticLedger};

fn fixtures() -> PathBuf {
    shared::testkit::fixtures::dir()
}

fn config(seed: u64, ledgers: u32, payments: u32, accounts: u32) -> SynthConfig {
    SynthConfig {
        first_seq: 1_000,
        ledgers,
        payments_per_ledger: payments,
        accounts,
        seed,
        ..SynthConfig::default()
    }
}

fn seq(meta: &LedgerCloseMeta) -> u32 {
    header_entry(meta).header.ledger_seq
}

fn v2(meta: &LedgerCloseMeta) -> &stellar_xdr::LedgerCloseMetaV2 {
    match meta {
        LedgerCloseMeta::V2(m) => m,
        _ => panic!("synthetic ledgers are LedgerCloseMeta::V2"),
    }
}

fn envelopes(meta: &LedgerCloseMeta) -> Vec<&TransactionEnvelope> {
    let GeneralizedTransactionSet::V1(set) = &v2(meta).tx_set;
    let mut out = Vec::new();
    for phase in set.phases.iter() {
        match phase {
            TransactionPhase::V0(components) => {
                for TxSetComponent::TxsetCompTxsMaybeDiscountedFee(c) in components.iter() {
                    out.extend(c.txs.iter());
                }
            }
            TransactionPhase::V1(parallel) => {
                for stage in parallel.execution_stages.iter() {
                    for cluster in stage.0.iter() {
                        out.extend(cluster.0.iter());
                    }
                }
            }
        }
    }
    out
}

/// Equal record lists, reporting the first difference readably.
fn assert_records(got: &[PaymentRecord], expected: &[PaymentRecord], what: &str) {
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert_eq!(g, e, "{what}: record #{i} differs");
    }
    assert_eq!(got.len(), expected.len(), "{what}: record count");
}

/// What a chain holds, counted from its expected records.
#[derive(Debug, Default)]
struct Mix {
    kinds: BTreeMap<&'static str, u32>,
}

impl Mix {
    fn add(&mut self, what: &'static str) {
        *self.kinds.entry(what).or_default() += 1;
    }

    fn count(&mut self, record: &PaymentRecord) {
        let tx = &record.transaction;
        self.add(record.payment_type().as_str());
        if record.source.muxed_id.is_some() {
            self.add("muxed source");
        }
        if record.destination().and_then(|d| d.muxed_id).is_some() {
            self.add("muxed destination");
        }
        if tx.inner_hash.is_some() {
            self.add("fee bump");
            self.add(if tx.successful {
                "fee bump successful"
            } else {
                "fee bump failed"
            });
        }
        if !tx.successful {
            self.add("failed");
        }
        if tx.operation_count > 1 {
            self.add("multi-operation");
        }
        if record.source != tx.source {
            self.add("operation source");
        }
        if tx.time_bounds.is_some() {
            self.add("time bounds");
        }
        match &tx.memo {
            Memo::None => self.add("memo none"),
            Memo::Text(text) if std::str::from_utf8(text).is_err() => self.add("memo non-utf8"),
            Memo::Text(_) => self.add("memo text"),
            Memo::Id(_) => self.add("memo id"),
            Memo::Hash(_) => self.add("memo hash"),
            Memo::Return(_) => self.add("memo return"),
        }
        match &record.kind {
            PaymentKind::PathPayment {
                strict,
                path,
                asset,
                source_asset,
                amount,
                source_amount,
                ..
            } => {
                if !path.is_empty() {
                    self.add("path with hops");
                }
                if asset == source_asset {
                    self.add("path same asset");
                }
                match (strict, tx.successful) {
                    (PathPaymentStrictness::StrictReceive, false) => {
                        assert_eq!(*source_amount, 0);
                        self.add("failed strict receive");
                    }
                    (PathPaymentStrictness::StrictSend, false) => {
                        assert_eq!(*amount, 0);
                        self.add("failed strict send");
                    }
                    _ => {}
                }
            }
            PaymentKind::AccountMerge { amount: None, .. } => self.add("failed merge"),
            PaymentKind::Payment { asset, .. } => {
                self.add(asset.type_name());
            }
            PaymentKind::InvokeHostFunction {
                function,
                balance_changes,
            } => {
                assert!(tx.successful, "failed invocations are not payments");
                if let HostFunction::InvokeContract { function, .. } = function {
                    if function == "swap" {
                        self.add("router swap");
                    }
                }
                for change in balance_changes {
                    self.add(match change.kind {
                        BalanceChangeKind::Transfer => "SAC transfer",
                        BalanceChangeKind::Mint => "SAC mint",
                        BalanceChangeKind::Burn => "SAC burn",
                        BalanceChangeKind::Clawback => "SAC clawback",
                    });
                    if let Some(Address::Account(to)) = &change.to {
                        if to.muxed_id.is_some() {
                            self.add("SAC muxed destination");
                        }
                    }
                    if matches!(change.to, Some(Address::Contract(_))) {
                        self.add("SAC to contract");
                    }
                }
            }
            _ => {}
        }
    }
}

/// Checks a generated chain against the extractor, ledger by ledger, and returns its mix.
fn check_chain(config: SynthConfig) -> Mix {
    let network = config.network.clone();
    let (first_seq, previous, ledgers, payments) = (
        config.first_seq,
        config.previous_hash,
        config.ledgers,
        config.payments_per_ledger,
    );
    let first_close = config.first_close_time;
    let mut full = Extractor::new(network.clone());
    let mut fast = Extractor::new(network.clone());
    let mut mix = Mix::default();
    let mut previous_hash = previous;
    let mut last_id = None;
    let mut count = 0u32;
    let mut impostors = 0u32;
    for (i, SyntheticLedger { meta, expected }) in generate(config).enumerate() {
        count += 1;
        let entry = header_entry(&meta);
        let what = format!("ledger {}", entry.header.ledger_seq);
        // The chain links.
        assert_eq!(entry.header.ledger_seq, first_seq + i as u32, "{what}");
        assert_eq!(entry.header.ledger_version, 23);
        assert_eq!(entry.header.previous_ledger_hash.0, previous_hash, "{what}");
        let GeneralizedTransactionSet::V1(set) = &v2(&meta).tx_set;
        assert_eq!(set.previous_ledger_hash.0, previous_hash, "{what}");
        let header_xdr = entry.header.to_xdr(Limits::none()).expect("header");
        assert_eq!(entry.hash.0, <[u8; 32]>::from(Sha256::digest(&header_xdr)));
        let set_xdr = v2(&meta).tx_set.to_xdr(Limits::none()).expect("tx set");
        assert_eq!(
            entry.header.scp_value.tx_set_hash.0,
            <[u8; 32]>::from(Sha256::digest(&set_xdr)),
            "{what}: tx set hash"
        );
        assert_eq!(
            entry.header.scp_value.close_time.0 as i64,
            first_close + 5 * i as i64
        );
        previous_hash = entry.hash.0;
        // Every envelope's hash is its result's, by stellar-xdr's own hashing.
        let mut hashes: Vec<[u8; 32]> = envelopes(&meta)
            .iter()
            .map(|e| e.hash(network.id()).expect("hash"))
            .collect();
        let mut results: Vec<[u8; 32]> = v2(&meta)
            .tx_processing
            .iter()
            .map(|p| p.result.transaction_hash.0)
            .collect();
        hashes.sort_unstable();
        results.sort_unstable();
        assert_eq!(hashes, results, "{what}: envelope hashes");
        if envelopes(&meta)
            .iter()
            .any(|e| matches!(e, TransactionEnvelope::TxV0(_)))
        {
            mix.add("V0 envelope");
        }

        // Exactly the intended records, through both paths.
        assert_eq!(expected.len() as u32, payments, "{what}: payment count");
        let extracted = full.extract(&meta).expect("extract");
        assert_records(&extracted.payments, &expected, &what);
        let bytes = meta.to_xdr(Limits::none()).expect("encode");
        let scanned = fast.extract_xdr(&bytes).expect("extract_xdr");
        assert_records(&scanned.payments, &expected, &format!("{what} (fast path)"));
        let stats = &extracted.stats;
        let invokes = stats
            .payment_ops_successful
            .get(&shared::PaymentType::InvokeHostFunction)
            .copied()
            .unwrap_or(0);
        impostors += invokes - stats.invoke_host_function_payments;
        if stats.transactions > extracted.transactions.len() as u32 {
            mix.add("transactions without payments");
        }
        for record in &expected {
            let id = record.id.to_i64();
            assert!(last_id.is_none_or(|last| last < id), "{what}: ids increase");
            last_id = Some(id);
            assert_eq!(record.transaction.id, record.id.transaction());
            mix.count(record);
        }
    }
    assert_eq!(count, ledgers);
    if impostors > 0 {
        mix.add("non-payment invocations");
    }
    mix
}

#[test]
fn extraction_finds_exactly_the_generated_records() {
    let mut total = Mix::default();
    for (seed, ledgers, payments, accounts) in
        [(1, 30, 50, 200), (7, 30, 50, 200), (42, 8, 150, 5_000)]
    {
        let mix = check_chain(config(seed, ledgers, payments, accounts));
        for (kind, n) in mix.kinds {
            *total.kinds.entry(kind).or_default() += n;
        }
    }
    println!("{:#?}", total.kinds);
    for kind in [
        "create_account",
        "payment",
        "path_payment_strict_receive",
        "path_payment_strict_send",
        "account_merge",
        "invoke_host_function",
        "native",
        "credit_alphanum4",
        "credit_alphanum12",
        "muxed source",
        "muxed destination",
        "operation source",
        "fee bump successful",
        "fee bump failed",
        "failed",
        "failed strict receive",
        "failed strict send",
        "failed merge",
        "multi-operation",
        "time bounds",
        "memo none",
        "memo text",
        "memo non-utf8",
        "memo id",
        "memo hash",
        "memo return",
        "path with hops",
        "path same asset",
        "SAC transfer",
        "SAC mint",
        "SAC burn",
        "SAC clawback",
        "SAC muxed destination",
        "SAC to contract",
        "router swap",
        "V0 envelope",
        "transactions without payments",
        "non-payment invocations",
    ] {
        assert!(total.kinds.get(kind).copied().unwrap_or(0) > 0, "no {kind}");
    }
    // About 10 % of transactions fail; records of failed transactions follow.
    let all: u32 = 30 * 50 * 2 + 8 * 150;
    let failed = total.kinds["failed"];
    assert!(
        failed > all / 25 && failed < all / 5,
        "{failed} failed of {all}"
    );
}

#[test]
fn same_seed_same_chain() {
    let last = |seed| {
        generate(config(seed, 5, 40, 300))
            .last()
            .map(|l| header_entry(&l.meta).hash.0)
            .expect("ledgers")
    };
    assert_eq!(last(3), last(3));
    assert_ne!(last(3), last(4));
    let testnet = SynthConfig {
        network: Network::testnet(),
        ..config(3, 5, 40, 300)
    };
    let mix = check_chain(testnet);
    assert!(mix.kinds["SAC transfer"] > 0, "SAC ids follow the network");
    assert_eq!(generate(config(1, 0, 10, 100)).count(), 0);
    // A ledger may hold no payment at all.
    let empty: Vec<_> = generate(config(1, 2, 0, 100)).collect();
    assert!(empty.iter().all(|l| l.expected.is_empty()));
    assert!(empty
        .iter()
        .all(|l| Extractor::new(Network::pubnet()).extract(&l.meta).is_ok()));
}

#[test]
fn edges_stay_valid() {
    // The chain stops at the last sequence a TOID can hold.
    let near_end = SynthConfig {
        first_seq: i32::MAX as u32 - 1,
        first_close_time: -50,
        ..config(2, 5, 20, 16)
    };
    let ledgers: Vec<SyntheticLedger> = generate(near_end).collect();
    assert_eq!(ledgers.len(), 2);
    let mut extractor = Extractor::new(Network::pubnet());
    for ledger in &ledgers {
        let got = extractor.extract(&ledger.meta).expect("extract");
        assert_records(&got.payments, &ledger.expected, "near the end");
    }
    assert_eq!(
        header_entry(&ledgers[0].meta).header.scp_value.close_time.0,
        0
    );
    let beyond = SynthConfig {
        first_seq: u32::MAX,
        ..config(2, 5, 20, 16)
    };
    assert_eq!(generate(beyond).count(), 0);
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("synth-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn check_datalake(dir: &Path, first_seq: u32, ledgers: u32, per_batch: u32) {
    let config = SynthConfig {
        first_seq,
        ..config(9, ledgers, 40, 500)
    };
    let summary = write_datalake(dir, config.clone(), per_batch, 4).expect("write");
    let expected: Vec<SyntheticLedger> = generate(SynthConfig {
        ledgers: summary.ledgers as u32,
        ..config
    })
    .collect();
    assert_eq!(summary.first, first_seq);
    assert_eq!(summary.last, first_seq + expected.len() as u32 - 1);
    assert!(expected.len() as u32 >= ledgers);
    assert_eq!(
        summary.payments,
        expected
            .iter()
            .map(|l| l.expected.len() as u64)
            .sum::<u64>()
    );

    let lake = DataLake::open(dir).expect("open");
    assert_eq!(lake.config().ledgers_per_batch, per_batch);
    assert_eq!(
        lake.available_range().expect("range"),
        Some((summary.first, summary.last))
    );
    let mut extractor = Extractor::new(Network::pubnet());
    let mut next = 0usize;
    for start in (summary.first..=summary.last).step_by(per_batch as usize) {
        let bytes = lake.read_batch_xdr(start).expect("read batch");
        let batch = extractor.extract_batch_xdr(&bytes).expect("extract batch");
        assert_eq!(batch.len(), per_batch as usize);
        for ledger in batch {
            let want = &expected[next];
            assert_eq!(ledger.ledger.sequence, seq(&want.meta));
            assert_eq!(ledger.ledger.hash, header_entry(&want.meta).hash.0);
            assert_records(&ledger.payments, &want.expected, "data lake");
            next += 1;
        }
    }
    assert_eq!(next, expected.len());
}

#[test]
fn data_lake_round_trips() {
    let single = TempDir::new("lake-1");
    check_datalake(&single.0, 2, 12, 1);
    let batched = TempDir::new("lake-8");
    // 20 ledgers are rounded up to 3 batches of 8.
    check_datalake(&batched.0, 16, 20, 8);
    // Partitions of 4 batches: several folders.
    let partitions = std::fs::read_dir(&batched.0)
        .expect("list")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_dir()))
        .count();
    assert_eq!(partitions, 2, "16..=39 spans partitions 0-31 and 32-63");
    let folders = std::fs::read_dir(&single.0)
        .expect("list")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_dir()))
        .count();
    assert_eq!(folders, 4, "2..=13 spans partitions 0-3, 4-7, 8-11, 12-15");

    let misaligned = TempDir::new("lake-bad");
    let config = SynthConfig {
        first_seq: 2,
        ..config(1, 8, 10, 100)
    };
    assert!(write_datalake(&misaligned.0, config, 8, 4).is_err());
}

/// The recorded pubnet ledgers continued by 20 synthetic ones.
fn continued() -> (Vec<LedgerCloseMeta>, usize) {
    let recorded =
        simnet::load_chain(&fixtures().join("ledgers/pubnet"), None).expect("load fixtures");
    let n = recorded.len();
    let chain = simnet::recorded_then_synthetic(recorded, 20, 30, 200, 5, Network::pubnet())
        .expect("continue");
    (chain, n)
}

#[test]
fn recorded_ledgers_continue_with_synthetic_ones() {
    let (chain, recorded) = continued();
    assert_eq!(chain.len(), recorded + 20);
    let mut extractor = Extractor::new(Network::pubnet());
    for (i, pair) in chain.windows(2).enumerate() {
        let (a, b) = (header_entry(&pair[0]), header_entry(&pair[1]));
        assert_eq!(b.header.ledger_seq, a.header.ledger_seq + 1, "#{i}");
        assert_eq!(b.header.previous_ledger_hash, a.hash, "#{i}");
        assert!(
            b.header.scp_value.close_time.0 > a.header.scp_value.close_time.0 || i + 1 < recorded
        );
    }
    for meta in &chain {
        extractor.extract(meta).expect("every ledger extracts");
    }
    // The synthetic part is exactly what the generator makes from the seam.
    let last = header_entry(&chain[recorded - 1]);
    let tail: Vec<SyntheticLedger> = generate(SynthConfig {
        first_seq: last.header.ledger_seq + 1,
        ledgers: 20,
        payments_per_ledger: 30,
        accounts: 200,
        seed: 5,
        network: Network::pubnet(),
        first_close_time: last.header.scp_value.close_time.0 as i64 + 5,
        previous_hash: last.hash.0,
        zipf_exponent: 1.0,
    })
    .collect();
    for (meta, want) in chain[recorded..].iter().zip(&tail) {
        assert_eq!(meta, &want.meta);
        let got = extractor.extract(meta).expect("extract");
        assert_records(&got.payments, &want.expected, "synthetic tail");
    }
    // A chain that is already contiguous is not changed by continuing it with nothing.
    let again = simnet::recorded_then_synthetic(chain.clone(), 0, 1, 16, 1, Network::pubnet())
        .expect("idempotent");
    assert_eq!(again, chain);

    let pure = simnet::synthetic_chain(2, 4, SyntheticTail::default(), Network::pubnet())
        .expect("synthetic");
    assert_eq!(pure.iter().map(seq).collect::<Vec<_>>(), vec![2, 3, 4, 5]);
}

#[tokio::test]
async fn simnet_serves_across_the_seam() {
    use stellar_rpc_client::LedgerStart;

    let (chain, recorded) = continued();
    let first = seq(&chain[0]);
    let mut config = SimnetConfig::new(chain.clone());
    config.initially_closed = chain.len();
    let simnet = Simnet::start(config).await.expect("start");
    let client = stellar_rpc_client::Client::new(&simnet.url()).expect("client");
    let seam = seq(&chain[recorded - 1]);
    let page = client
        .get_ledgers(LedgerStart::Ledger(seam - 1), Some(5), None)
        .await
        .expect("getLedgers");
    let seqs: Vec<u32> = page.ledgers.iter().map(|l| l.sequence).collect();
    assert_eq!(seqs, (seam - 1..seam + 4).collect::<Vec<_>>());
    let mut previous: Option<String> = None;
    let mut extractor = Extractor::new(Network::pubnet());
    for ledger in &page.ledgers {
        let bytes = base64_decode(&ledger.metadata_xdr);
        let meta = LedgerCloseMeta::from_xdr(&bytes, Limits::none()).expect("metadataXdr");
        assert_eq!(meta, chain[(ledger.sequence - first) as usize]);
        if let Some(previous) = previous {
            assert_eq!(
                hex::encode(header_entry(&meta).header.previous_ledger_hash.0),
                previous
            );
        }
        previous = Some(ledger.hash.clone());
        extractor.extract_xdr(&bytes).expect("extracts");
    }
    let latest = client.get_latest_ledger().await.expect("latest");
    assert_eq!(latest.sequence, seq(&chain[chain.len() - 1]));
    simnet.shutdown().await;
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

/// Prints the generation speed. Large in release builds (`cargo test --release`), small
/// in debug ones so the suite stays fast.
#[test]
fn generation_speed() {
    let (ledgers, payments) = if cfg!(debug_assertions) {
        (40, 250)
    } else {
        (4_000, 250)
    };
    let started = Instant::now();
    let mut records = 0usize;
    let mut transactions = 0usize;
    for ledger in generate(config(11, ledgers, payments, 500_000)) {
        records += ledger.expected.len();
        transactions += v2(&ledger.meta).tx_processing.len();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "generated {records} payments in {transactions} transactions ({ledgers} ledgers) in \
         {secs:.2} s: {:.0} payments/s{}",
        records as f64 / secs,
        if cfg!(debug_assertions) {
            " (debug build)"
        } else {
            ""
        }
    );
    assert_eq!(records, (ledgers * payments) as usize);
}
