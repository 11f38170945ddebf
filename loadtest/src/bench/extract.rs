//! `loadtest bench extract`: what payment extraction costs on top of XDR decoding.
//!
//! The ceiling is bare `LedgerCloseMeta` decoding of the same bytes, measured in the same
//! process in interleaved rounds. Two ratios to it are printed: the production path
//! (`extract_xdr`, which scans instead of fully decoding, so it can beat the ceiling) and
//! full decoding followed by extraction, which isolates what the extraction logic itself
//! costs. Plus the absolute ledgers/s of the production path on one core.

use std::hint::black_box;
use std::time::Duration;

use anyhow::Context as _;
use shared::ledger_file::read_ledger_xdr;
use shared::{decode_ledger, Extractor, Network};

use super::{median, rate};
use crate::cli::ExtractBenchArgs;

/// Target: extraction adds at most 25% to decoding.
pub const TARGET_RATIO: f64 = 0.8;
/// Target: ledgers per second on one core.
pub const TARGET_LEDGERS_PER_SECOND: f64 = 300.0;

/// Runs the benchmark and prints its figures.
pub fn run(args: &ExtractBenchArgs) -> anyhow::Result<()> {
    let network = match args.network.as_str() {
        "pubnet" => Network::pubnet(),
        "testnet" => Network::testnet(),
        other => Network::new(other),
    };
    let blobs = read_ledger_xdr(&args.ledger)?;
    let bytes = blobs.first().context("the ledger file holds no ledger")?;
    let mut extractor = Extractor::new(network);
    let sample = extractor.extract_xdr(bytes)?;

    let budget = Duration::from_millis(args.round_ms);
    // Warm caches and the allocator before measuring.
    rate(budget / 2, || {
        drop(black_box(decode_ledger(black_box(bytes))))
    });
    rate(budget / 2, || {
        drop(black_box(extractor.extract_xdr(black_box(bytes))))
    });

    let mut decode_rates = Vec::new();
    let mut extract_rates = Vec::new();
    let mut full_rates = Vec::new();
    let mut ratios = Vec::new();
    let mut full_ratios = Vec::new();
    for round in 0..args.rounds.max(1) {
        let decode = || rate(budget, || drop(black_box(decode_ledger(black_box(bytes)))));
        let fast =
            |x: &mut Extractor| rate(budget, || drop(black_box(x.extract_xdr(black_box(bytes)))));
        let full = |x: &mut Extractor| {
            rate(budget, || {
                if let Ok(meta) = decode_ledger(black_box(bytes)) {
                    drop(black_box(x.extract(&meta)));
                }
            })
        };
        // Alternate the order so drift in machine speed hits every variant alike.
        let (d, e, f) = if round.is_multiple_of(2) {
            let d = decode();
            let e = fast(&mut extractor);
            (d, e, full(&mut extractor))
        } else {
            let f = full(&mut extractor);
            let e = fast(&mut extractor);
            (decode(), e, f)
        };
        decode_rates.push(d);
        extract_rates.push(e);
        full_rates.push(f);
        ratios.push(e / d);
        full_ratios.push(f / d);
    }
    let decode = median(&mut decode_rates);
    let extract = median(&mut extract_rates);
    let full = median(&mut full_rates);
    let ratio = median(&mut ratios);
    let full_ratio = median(&mut full_ratios);

    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "benchmark": "extract",
                "ledger": sample.ledger.sequence,
                "bytes": bytes.len(),
                "transactions": sample.stats.transactions,
                "payments": sample.payments.len(),
                "decode_ledgers_per_s": decode,
                "decode_extract_ledgers_per_s": extract,
                "ratio": ratio,
                "full_decode_extract_ledgers_per_s": full,
                "full_ratio": full_ratio,
                "target_ratio": TARGET_RATIO,
                "target_ledgers_per_s": TARGET_LEDGERS_PER_SECOND,
                "rounds": args.rounds,
            })
        );
    } else {
        println!(
            "ledger {} ({} bytes of XDR, {} transactions, {} payment records), {} rounds of {} ms each",
            sample.ledger.sequence,
            bytes.len(),
            sample.stats.transactions,
            sample.payments.len(),
            args.rounds,
            args.round_ms
        );
        println!("full decode only (ceiling):      {decode:>8.1} ledgers/s");
        println!("scan + extract (production path): {extract:>7.1} ledgers/s");
        println!("full decode + extract:           {full:>8.1} ledgers/s");
        println!(
            "ratio production/ceiling:        {ratio:>8.3}   (target >= {TARGET_RATIO}: {})",
            verdict(ratio >= TARGET_RATIO)
        );
        println!(
            "ratio full decode+extract/ceiling:{full_ratio:>8.3}   (the extraction logic alone: target >= {TARGET_RATIO}: {})",
            verdict(full_ratio >= TARGET_RATIO)
        );
        println!(
            "one core, production path:       {extract:>8.1} ledgers/s (target >= {TARGET_LEDGERS_PER_SECOND}: {})",
            verdict(extract >= TARGET_LEDGERS_PER_SECOND)
        );
    }
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}
