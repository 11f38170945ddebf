//! `/health` tells the truth: an active writer whose commits are stalled while the RPC
//! has newer ledgers answers 503 with the reason, the last error and a lag that follows
//! the RPC (not only commits), and becomes healthy again once it commits.

use std::time::{Duration, Instant};

use crate::support::{connect, fixture_chain, get_text, run_args, simnet, InProcessWriter};
use shared::testkit::PostgresCluster;
use tokio_util::sync::CancellationToken;

const FIRST: u32 = 1_000_000;

async fn health(addr: std::net::SocketAddr) -> (u16, serde_json::Value) {
    let (code, body) = get_text(&format!("http://{addr}/health"))
        .await
        .expect("health answers");
    (code, serde_json::from_str(body.trim()).expect("JSON"))
}

async fn wait_for_health(
    addr: std::net::SocketAddr,
    timeout: Duration,
    what: &str,
    mut check: impl FnMut(u16, &serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (code, body) = health(addr).await;
        if check(code, &body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{what}: last {code} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_commits_while_the_rpc_is_ahead_are_unhealthy_with_the_reason() {
    let cluster = PostgresCluster::start().expect("postgres");
    let chain = fixture_chain();
    let sim = simnet(chain, 3).await;
    let writer = InProcessWriter::start(run_args(
        &cluster.primary_url(),
        &sim.url(),
        &["--stall-after-secs", "2"],
    ));
    let stop = CancellationToken::new();
    let addr = writer::status::serve(
        "127.0.0.1:0".parse().expect("addr"),
        writer.status.clone(),
        stop.clone(),
    )
    .await
    .expect("health server");
    writer.wait_for(FIRST + 2, Duration::from_secs(30)).await;
    let (code, body) = health(addr).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["lag_ledgers"], 0);

    // Another session holds the cursor table: no batch can commit.
    let blocker = connect(&cluster.primary_url()).await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE ingest_cursor IN EXCLUSIVE MODE")
        .await
        .expect("lock");
    for _ in 0..3 {
        sim.close_next().expect("another ledger");
    }
    // Lag follows the RPC while nothing commits...
    let body = wait_for_health(addr, Duration::from_secs(10), "lag from fetches", |_, b| {
        b["rpc_latest"] == FIRST + 5
    })
    .await;
    assert_eq!(body["last_ledger"], FIRST + 2);
    assert_eq!(body["lag_ledgers"], 3);
    assert!(body["lag_seconds"].as_i64().is_some());
    // ...and after the stall time the writer says it is unhealthy, and why.
    let body = wait_for_health(addr, Duration::from_secs(15), "503", |code, _| code == 503).await;
    assert_eq!(body["role"], "active");
    let reason = body["stalled"]["reason"].as_str().expect("a reason");
    assert!(
        reason.contains("no ledger committed for") && reason.contains("3 ledgers ahead"),
        "{reason}"
    );
    assert!(body["stalled"]["seconds_without_commit"].as_u64() >= Some(2));
    let metrics = get_text(&format!("http://{addr}/metrics"))
        .await
        .expect("metrics")
        .1;
    assert!(metrics.contains("writer_stalled 1"), "{metrics}");

    // Released: the writer commits and is healthy again.
    blocker.batch_execute("ROLLBACK").await.expect("unlock");
    writer.wait_for(FIRST + 5, Duration::from_secs(30)).await;
    let body = wait_for_health(addr, Duration::from_secs(10), "200 again", |code, _| {
        code == 200
    })
    .await;
    assert!(body["stalled"].is_null(), "{body}");
    assert_eq!(body["lag_ledgers"], 0);
    writer.stop().await.expect("clean stop");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_commits_show_the_last_error_in_the_reason() {
    let cluster = PostgresCluster::start().expect("postgres");
    let chain = fixture_chain();
    let sim = simnet(chain, 2).await;
    // A cancelled statement may be deterministic, so it gets a bounded number of
    // attempts (`--max-commit-attempts`): here enough to outlast the stall threshold.
    let writer = InProcessWriter::start(run_args(
        &cluster.primary_url(),
        &sim.url(),
        &["--stall-after-secs", "2", "--max-commit-attempts", "10000"],
    ));
    let stop = CancellationToken::new();
    let addr = writer::status::serve(
        "127.0.0.1:0".parse().expect("addr"),
        writer.status.clone(),
        stop.clone(),
    )
    .await
    .expect("health server");
    writer.wait_for(FIRST + 1, Duration::from_secs(30)).await;

    // Commits now fail on a transient error: each one waits for the cursor table and
    // is cancelled, again and again.
    let blocker = connect(&cluster.primary_url()).await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE ingest_cursor IN EXCLUSIVE MODE")
        .await
        .expect("lock");
    let canceller_stop = CancellationToken::new();
    let canceller = {
        let admin = connect(&cluster.primary_url()).await;
        let stop = canceller_stop.clone();
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let _ = admin
                    .batch_execute(
                        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
                         WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    sim.close_next().expect("another ledger");
    let body = wait_for_health(addr, Duration::from_secs(20), "503", |code, _| code == 503).await;
    let reason = body["stalled"]["reason"].as_str().expect("a reason");
    assert!(
        reason.contains("last error:") && reason.contains("canceling statement"),
        "{reason}"
    );
    assert!(body["last_error"].is_string(), "{body}");
    canceller_stop.cancel();
    canceller.await.expect("canceller");
    blocker.batch_execute("ROLLBACK").await.expect("unlock");
    writer.wait_for(FIRST + 2, Duration::from_secs(30)).await;
    wait_for_health(addr, Duration::from_secs(10), "200 again", |code, _| {
        code == 200
    })
    .await;
    writer.stop().await.expect("clean stop");
    stop.cancel();
}
