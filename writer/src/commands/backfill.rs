//! `writer backfill`: ingest a closed range of history.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use shared::datalake::DataLake;
use shared::Extractor;

use crate::backfill::{self, BackfillConfig, HistorySource};
use crate::cli::BackfillArgs;
use crate::paging::PageBudget;
use crate::source::{RetryPolicy, RpcSource};

/// Runs the backfill and prints what it did.
pub async fn run(args: BackfillArgs) -> anyhow::Result<()> {
    let network = args.network.network();
    let extractor = Extractor::new(network.clone());
    let source = if args.source == "rpc" {
        let url = args
            .rpc_url
            .as_deref()
            .context("--source rpc needs --rpc-url (or STELLAR_RPC_URL)")?;
        let rpc = RpcSource::new(
            url,
            Duration::from_secs(30),
            PageBudget::default(),
            extractor.clone(),
        )?;
        rpc.check_network().await?;
        HistorySource::Rpc(Arc::new(rpc))
    } else {
        let lake = DataLake::open(Path::new(&args.source))?;
        if lake.config().network_passphrase != network.passphrase() {
            bail!(
                "the data lake holds network {:?}, not {:?}",
                lake.config().network_passphrase,
                network.passphrase()
            );
        }
        HistorySource::DataLake(lake)
    };
    let pool = crate::db::pool(&args.database.database_url, args.workers.max(1) + 1)?;
    let shutdown = shared::shutdown::stop_token()?;
    crate::db::migrate_when_unlocked(&args.database.database_url, &shutdown, || {
        eprintln!(
            "migrations are pending and a writer holds the writer lock: waiting until it stops"
        )
    })
    .await
    .context("migrations")?;
    let config = BackfillConfig {
        from: args.from,
        to: args.to,
        workers: args.workers.max(1),
        chunk_ledgers: args.chunk_ledgers.max(1),
        network_passphrase: network.passphrase().to_owned(),
        retry: RetryPolicy::default(),
        max_commit_attempts: args.max_commit_attempts,
    };
    let report = backfill::run(pool, source, extractor, config, !args.quiet, shutdown).await?;
    let seconds = report.elapsed.as_secs_f64().max(0.001);
    println!(
        "backfilled {}-{}: {} ledgers and {} payments written in {:.1}s ({:.0} ledgers/s, {:.0} payments/s); \
         {} chunks written, {} already complete",
        args.from,
        args.to,
        report.ledgers_written,
        report.payments_written,
        seconds,
        report.ledgers_written as f64 / seconds,
        report.payments_written as f64 / seconds,
        report.chunks_written,
        report.chunks_skipped
    );
    Ok(())
}
