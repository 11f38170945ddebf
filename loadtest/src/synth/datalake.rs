//! Writes a synthetic chain as a SEP-54 data lake (`config.json` plus zstd
//! `LedgerCloseMetaBatch` files in partition folders), through
//! [`shared::datalake::DataLake`], so the indexer's data-lake backfill can be loaded
//! with any number of ledgers.
//!
//! Generation runs on its own thread and hands whole batches to the writer (encoding and
//! compression) over a channel of two, so both use a core and memory stays constant:
//! at most four batches exist at once, whatever the chain's length.

use std::path::Path;
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use shared::datalake::{Config, DataLake, Schema};
use stellar_xdr::{LedgerCloseMeta, LedgerCloseMetaBatch};

use super::{generate, SynthConfig};

/// How the data lake is laid out and compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatalakeOptions {
    /// Ledgers per batch file (the public data lake uses 1).
    pub ledgers_per_batch: u32,
    /// Batch files per partition folder (the public data lake uses 64 000).
    pub batches_per_partition: u32,
    /// zstd level.
    pub zstd_level: i32,
}

impl Default for DatalakeOptions {
    /// The public data lake's layout, zstd level 3.
    fn default() -> Self {
        Self {
            ledgers_per_batch: 1,
            batches_per_partition: 64_000,
            zstd_level: 3,
        }
    }
}

/// What was written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatalakeSummary {
    /// First ledger.
    pub first: u32,
    /// Last ledger (so far, in progress reports).
    pub last: u32,
    /// Ledgers written.
    pub ledgers: u64,
    /// Payment records the ledgers hold.
    pub payments: u64,
    /// Compressed bytes written.
    pub bytes: u64,
}

/// Writes `config.ledgers` synthetic ledgers (rounded up to whole batches) as a data
/// lake in `dir`, zstd level 3. `config.first_seq` must start a batch.
pub fn write_datalake(
    dir: &Path,
    config: SynthConfig,
    ledgers_per_batch: u32,
    batches_per_partition: u32,
) -> anyhow::Result<DatalakeSummary> {
    let options = DatalakeOptions {
        ledgers_per_batch,
        batches_per_partition,
        ..DatalakeOptions::default()
    };
    write_datalake_with(dir, config, options, |_| {})
}

/// [`write_datalake`] with every option, calling `progress` after each batch.
pub fn write_datalake_with(
    dir: &Path,
    mut config: SynthConfig,
    options: DatalakeOptions,
    mut progress: impl FnMut(&DatalakeSummary),
) -> anyhow::Result<DatalakeSummary> {
    let per_batch = options.ledgers_per_batch;
    if per_batch == 0 || options.batches_per_partition == 0 {
        bail!("ledgers per batch and batches per partition must be at least 1");
    }
    if config.ledgers == 0 {
        bail!("nothing to write: 0 ledgers");
    }
    let schema = Schema {
        ledgers_per_batch: per_batch,
        batches_per_partition: options.batches_per_partition,
    };
    if schema.batch_start(config.first_seq) != config.first_seq {
        bail!(
            "the first ledger {} does not start a batch of {per_batch} ledgers (try {})",
            config.first_seq,
            schema.batch_start(config.first_seq) + per_batch
        );
    }
    config.ledgers = config
        .ledgers
        .div_ceil(per_batch)
        .checked_mul(per_batch)
        .context("too many ledgers")?;
    if u64::from(config.first_seq) + u64::from(config.ledgers) > i32::MAX as u64 {
        bail!("the chain would run past the largest ledger sequence a TOID can hold");
    }
    let lake = DataLake::create(
        dir,
        Config {
            network_passphrase: config.network.passphrase().to_owned(),
            ledgers_path: String::new(),
            compression: "zstd".to_owned(),
            ledgers_per_batch: per_batch,
            batches_per_partition: options.batches_per_partition,
        },
    )?;

    let (send, receive) = mpsc::sync_channel::<(LedgerCloseMetaBatch, u64)>(2);
    let first = config.first_seq;
    let generator = std::thread::Builder::new()
        .name("synth-generate".into())
        .spawn(move || -> anyhow::Result<()> {
            let mut ledgers: Vec<LedgerCloseMeta> = Vec::with_capacity(per_batch as usize);
            let mut payments = 0u64;
            let mut start = config.first_seq;
            for ledger in generate(config) {
                payments += ledger.expected.len() as u64;
                ledgers.push(ledger.meta);
                if ledgers.len() == per_batch as usize {
                    let batch = LedgerCloseMetaBatch {
                        start_sequence: start,
                        end_sequence: start + per_batch - 1,
                        ledger_close_metas: std::mem::take(&mut ledgers)
                            .try_into()
                            .context("batch too large")?,
                    };
                    start += per_batch;
                    if send.send((batch, payments)).is_err() {
                        break; // the writer stopped; it reports why
                    }
                    payments = 0;
                }
            }
            Ok(())
        })
        .context("starting the generator thread")?;

    let mut summary = DatalakeSummary {
        first,
        last: first,
        ..DatalakeSummary::default()
    };
    let mut written = Ok(());
    for (batch, payments) in receive {
        match lake.write_batch(&batch, options.zstd_level) {
            Ok(path) => {
                summary.bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            }
            Err(error) => {
                written = Err(error);
                break;
            }
        }
        summary.last = batch.end_sequence;
        summary.ledgers += u64::from(batch.end_sequence - batch.start_sequence) + 1;
        summary.payments += payments;
        progress(&summary);
    }
    let generated = generator
        .join()
        .map_err(|_| anyhow::anyhow!("the generator thread panicked"))?;
    written?;
    generated?;
    Ok(summary)
}

/// Ledgers per second and payments per second since `started`.
pub fn rates(summary: &DatalakeSummary, started: Instant) -> (f64, f64) {
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    (
        summary.ledgers as f64 / secs,
        summary.payments as f64 / secs,
    )
}
