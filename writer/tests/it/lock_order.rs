//! One lock order for live batches and backfill chunks: the cursor row first, then the
//! rows. A backfill chunk behind the cursor never locks the cursor row, so it commits
//! while a live batch holds that row, and the live batch then goes on over the same
//! accounts; a live writer and a backfill over overlapping accounts run side by side
//! without a single deadlock.

use std::time::Duration;

use crate::support::{
    connect, create_database, dump, extracted, fixture_chain, run_args, simnet, write_lake,
    InProcessWriter,
};
use shared::network::PUBNET_PASSPHRASE;
use shared::testkit::PostgresCluster;
use tokio_util::sync::CancellationToken;
use writer::dictionary::Dictionaries;
use writer::store;

const FIRST: u32 = 1_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_chunk_behind_the_cursor_never_waits_on_the_cursor_row() {
    let cluster = PostgresCluster::start().expect("postgres");
    let url = cluster.primary_url();
    writer::db::migrate_when_unlocked(&url, &CancellationToken::new(), || {})
        .await
        .expect("migrations");
    let ledgers = extracted(&fixture_chain());
    let dictionaries = Dictionaries::default();

    // Live ingestion started at the seventh ledger (this session holds the lease).
    let mut live = connect(&url).await;
    live.execute(
        "INSERT INTO writer_lease VALUES (true, 1, pg_backend_pid(), 'test', now(), now() + interval '1 hour')",
        &[],
    )
    .await
    .expect("lease");
    store::commit_live_batch(
        &mut live,
        &dictionaries,
        PUBNET_PASSPHRASE,
        1,
        &ledgers[6..],
    )
    .await
    .expect("live batch");

    // The next live batch is in flight: it holds the cursor row, its first lock.
    let mut in_flight = connect(&url).await;
    let tx = in_flight.transaction().await.expect("tx");
    tx.query("SELECT last_ledger FROM ingest_cursor FOR UPDATE", &[])
        .await
        .expect("cursor locked");

    // A backfill chunk of the history behind the cursor, over the same accounts.
    let mut backfill = connect(&url).await;
    let written = tokio::time::timeout(
        Duration::from_secs(10),
        store::commit_backfill_chunk(
            &mut backfill,
            &dictionaries,
            PUBNET_PASSPHRASE,
            FIRST,
            FIRST + 5,
            &ledgers[..6],
        ),
    )
    .await
    .expect("a chunk behind the cursor does not wait on the cursor row")
    .expect("chunk committed");
    assert_eq!(written.0, 6);

    // The live batch goes on over the accounts the chunk touched, and commits.
    let touched = tokio::time::timeout(
        Duration::from_secs(10),
        tx.execute(
            "UPDATE account_last_activity SET last_ledger = last_ledger WHERE account_id IN \
             (SELECT account_id FROM account_last_activity ORDER BY account_id)",
            &[],
        ),
    )
    .await
    .expect("the live batch is not blocked")
    .expect("update");
    assert!(touched > 0);
    tx.commit().await.expect("commit");
    let gaps = store::gaps(&live, FIRST, FIRST + 11).await.expect("gaps");
    assert!(gaps.is_empty(), "{gaps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_and_backfill_side_by_side_never_deadlock() {
    let cluster = PostgresCluster::start().expect("postgres");
    let chain = fixture_chain();
    let last = FIRST + chain.len() as u32 - 1;
    let sim = simnet(chain.clone(), chain.len()).await;
    let reference_url = create_database(&cluster.primary_url(), "reference").await;
    let writer = InProcessWriter::start(run_args(&reference_url, &sim.url(), &[]));
    writer.wait_for(last, Duration::from_secs(60)).await;
    writer.stop().await.expect("clean stop");
    let reference = dump(&reference_url).await;

    let url = create_database(&cluster.primary_url(), "side_by_side").await;
    writer::db::migrate_when_unlocked(&url, &CancellationToken::new(), || {})
        .await
        .expect("migrations");
    let lake = write_lake(&chain, 1, 4);
    // The live writer takes the second half one ledger a batch, while a backfill writes
    // the first half one ledger a chunk with two workers: the recorded ledgers share
    // their busiest accounts.
    let mut args = run_args(&url, &sim.url(), &["--page-limit", "1"]);
    args.start = writer::live::StartPolicy::Ledger(FIRST + 6);
    let writer = InProcessWriter::start(args);
    let backfill = std::process::Command::new(env!("CARGO_BIN_EXE_writer"))
        .args([
            "backfill",
            "--database-url",
            &url,
            "--from",
            &FIRST.to_string(),
            "--to",
            &(FIRST + 5).to_string(),
            "--source",
            &lake.path().display().to_string(),
            "--chunk-ledgers",
            "1",
            "--workers",
            "2",
            "--quiet",
        ])
        .output()
        .expect("backfill runs");
    assert!(
        backfill.status.success(),
        "{}",
        String::from_utf8_lossy(&backfill.stderr)
    );
    writer.wait_for(last, Duration::from_secs(60)).await;
    writer.stop().await.expect("clean stop");
    assert_eq!(dump(&url).await, reference);
    // Backends report their deadlocks when they end; every session here has ended.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deadlocks: i64 = connect(&cluster.primary_url())
        .await
        .query_one(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = 'side_by_side'",
            &[],
        )
        .await
        .expect("stats")
        .get(0);
    assert_eq!(deadlocks, 0);
}
