//! Group commit, aimed at directly: pages that queue behind a slow commit are committed
//! together, in one transaction. A session of the test holds the cursor table while the
//! simulator is many one-ledger pages ahead, so the committer blocks on its first page
//! while the fetcher queues the others; once the table is released, the writer's own
//! `/metrics` (a real process: its recorder holds nothing from other tests) show a batch
//! of several pages, and the stored chain is whole: every ledger once, contiguous, with
//! its payments, and the cursor at the last one. With the grouping loop removed every
//! batch is one page, and this test fails.

use std::time::{Duration, Instant};

use crate::support::{
    connect, cursor, cursor_row, extracted, fixture_chain, free_port, get_text, payment_ids,
    simnet, spawn_writer, stored_payment_ids, wait_for_cursor, Reaped,
};
use shared::testkit::PostgresCluster;

const FIRST: u32 = 1_000_000;

/// The value of the sample `name` (no labels) in Prometheus text.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_waiting_behind_a_slow_commit_are_committed_as_one_batch() {
    let cluster = PostgresCluster::start().expect("postgres");
    let url = cluster.primary_url();
    let chain = fixture_chain();
    let total = chain.len() as u32;
    let last = FIRST + total - 1;
    let expected = extracted(&chain);
    let sim = simnet(chain, 1).await;
    let port = free_port();
    // One ledger a page: each ledger the simulator is ahead by is a page of its own.
    let writer = Reaped(spawn_writer(
        &url,
        &sim.url(),
        &format!("127.0.0.1:{port}"),
        &["--page-limit", "1"],
    ));
    wait_for_cursor(&url, FIRST, Duration::from_secs(60)).await;

    // From now on a commit waits for the cursor table, which the test holds.
    let blocker = connect(&url).await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE ingest_cursor IN EXCLUSIVE MODE")
        .await
        .expect("lock the cursor table");
    while sim.close_next().is_some() {}
    assert_eq!(sim.latest(), last);
    // The committer is stuck on its first page...
    let admin = connect(&url).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE application_name = 'stellar-writer lock' AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if waiting == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the committer never waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // ...while the fetcher takes every other page from the simulator and queues it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.served() != Some(last) {
        assert!(
            Instant::now() < deadline,
            "the fetcher stopped at {:?}",
            sim.served()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        cursor(&url).await,
        Some(FIRST),
        "nothing committed meanwhile"
    );

    blocker.batch_execute("ROLLBACK").await.expect("release");
    wait_for_cursor(&url, last, Duration::from_secs(60)).await;
    // The batch metrics are recorded just after each commit: read them once they count
    // every ledger.
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let metrics = get_text(&metrics_url)
            .await
            .map(|r| r.1)
            .unwrap_or_default();
        if sample(&metrics, "writer_batch_ledgers_sum") == Some(f64::from(total)) {
            break metrics;
        }
        assert!(Instant::now() < deadline, "batch metrics:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    drop(writer);

    let pages = sample(&metrics, "writer_batch_pages_sum").expect("pages recorded");
    let batches = sample(&metrics, "writer_batch_pages_count").expect("batches recorded");
    assert_eq!(pages, f64::from(total), "one page a ledger:\n{metrics}");
    assert_eq!(
        sample(&metrics, "writer_batch_ledgers_count"),
        Some(batches),
        "every batch committed once:\n{metrics}"
    );
    assert!(
        pages > batches,
        "some batch held more than one page:\n{metrics}"
    );
    // The first ledger, the page that waited for the lock, then the pages queued behind
    // it in one batch (the last page may have been still on its way and come alone).
    assert!(
        batches <= 4.0,
        "{batches} batches for {total} pages: the queued pages were not grouped:\n{metrics}"
    );

    // Every ledger once, contiguous, as extracted, with its payments; the cursor at the end.
    let db = connect(&url).await;
    let rows = db
        .query(
            "SELECT sequence, hash, payment_count FROM ledgers ORDER BY sequence",
            &[],
        )
        .await
        .expect("ledgers");
    let sequences: Vec<u32> = rows.iter().map(|r| r.get::<_, i32>(0) as u32).collect();
    assert_eq!(sequences, (FIRST..=last).collect::<Vec<_>>());
    for (row, ledger) in rows.iter().zip(&expected) {
        assert_eq!(row.get::<_, Vec<u8>>(1), ledger.ledger.hash.to_vec());
        assert_eq!(row.get::<_, i32>(2) as usize, ledger.payments.len());
    }
    assert_eq!(
        stored_payment_ids(&db).await,
        payment_ids(&expected),
        "every payment once"
    );
    let (cursor_ledger, cursor_hash) = cursor_row(&db).await;
    assert_eq!(cursor_ledger, last);
    assert_eq!(
        cursor_hash,
        expected[expected.len() - 1].ledger.hash.to_vec()
    );
    sim.shutdown().await;
}
