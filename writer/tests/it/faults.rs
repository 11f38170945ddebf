//! Every RPC and chain fault ends in its documented behaviour, with nothing lost:
//! transient errors and timeouts are retried until the RPC recovers; a ledger that stays
//! unusable stops ingestion with an error naming it (never skipped); a retention window
//! past the cursor is reported with the backfill to run; another network, or a chain
//! whose hashes do not link, is refused; a ledger that closes between a refused
//! `getLedgers` and the `getHealth` after it is fetched at once, not taken for a fault.

use std::time::{Duration, Instant};

use crate::support::{
    create_database, cursor, dump, fixture_chain, run_args, simnet, InProcessWriter,
};
use loadtest::simnet::{rechain, Faults};
use shared::testkit::PostgresCluster;
use writer::paging::PageBudget;
use writer::source::{Fetched, RpcSource};
use writer::status::Role;

const FIRST: u32 = 1_000_000;

async fn reference_dump(cluster: &PostgresCluster, name: &str) -> Vec<String> {
    let chain = fixture_chain();
    let last = FIRST + chain.len() as u32 - 1;
    let sim = simnet(chain, 12).await;
    let url = create_database(&cluster.primary_url(), name).await;
    let writer = InProcessWriter::start(run_args(&url, &sim.url(), &[]));
    writer.wait_for(last, Duration::from_secs(60)).await;
    writer.stop().await.expect("clean stop");
    dump(&url).await
}

async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_and_timeouts_are_retried_until_the_rpc_recovers() {
    let cluster = PostgresCluster::start().expect("postgres");
    let reference = reference_dump(&cluster, "reference").await;
    let chain = fixture_chain();
    let last = FIRST + chain.len() as u32 - 1;
    let sim = simnet(chain, 12).await;
    // Half the requests fail (HTTP 503 or JSON-RPC internal errors), all are slow.
    sim.set_faults(Faults {
        error_rate: 0.5,
        latency_ms: 20,
        ..Faults::default()
    });
    let url = create_database(&cluster.primary_url(), "flaky").await;
    let writer = InProcessWriter::start(run_args(
        &url,
        &sim.url(),
        &["--page-limit", "2", "--rpc-timeout-secs", "1"],
    ));
    writer.wait_for(FIRST + 3, Duration::from_secs(60)).await;

    // Then the RPC stops answering in time: requests time out, ingestion waits.
    sim.set_faults(Faults {
        latency_ms: 2_500,
        ..Faults::default()
    });
    let status = writer.status.clone();
    wait_until("a timeout to be reported", Duration::from_secs(20), || {
        status
            .snapshot()
            .last_error
            .is_some_and(|e| e.contains("no answer within"))
    })
    .await;
    assert_eq!(status.snapshot().role, Role::Active, "still running");

    // Recovery: everything arrives, exactly once.
    sim.set_faults(Faults::default());
    writer.wait_for(last, Duration::from_secs(60)).await;
    writer.stop().await.expect("clean stop");
    assert_eq!(dump(&url).await, reference);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_that_stays_truncated_stops_ingestion_and_is_never_skipped() {
    let cluster = PostgresCluster::start().expect("postgres");
    let chain = fixture_chain();
    let sim = simnet(chain, 3).await;
    let url = cluster.primary_url();
    let writer = InProcessWriter::start(run_args(
        &url,
        &sim.url(),
        &["--max-bad-ledger-attempts", "3"],
    ));
    writer.wait_for(FIRST + 2, Duration::from_secs(30)).await;
    // From now on every ledger the RPC serves is cut short.
    sim.set_faults(Faults {
        truncate_rate: 1.0,
        ..Faults::default()
    });
    sim.close_next();
    let error = tokio::time::timeout(Duration::from_secs(30), writer.task)
        .await
        .expect("the writer stops")
        .expect("task")
        .expect_err("stops with an error");
    let message = format!("{error:#}");
    assert!(
        message.contains(&format!("ledger {} is unusable", FIRST + 3)),
        "{message}"
    );
    assert!(message.contains("after 3 fetches"), "{message}");
    assert_eq!(writer.status.snapshot().role, Role::Failed);
    assert_eq!(
        cursor(&url).await,
        Some(FIRST + 2),
        "nothing past the bad ledger was written"
    );

    // Once the RPC serves it whole again, a restart resumes right there.
    sim.set_faults(Faults::default());
    let writer = InProcessWriter::start(run_args(&url, &sim.url(), &[]));
    writer.wait_for(FIRST + 3, Duration::from_secs(30)).await;
    writer.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_window_past_the_cursor_is_reported_with_the_backfill_to_run() {
    let cluster = PostgresCluster::start().expect("postgres");
    let chain = fixture_chain();
    let sim = simnet(chain, 2).await;
    let url = cluster.primary_url();
    let writer = InProcessWriter::start(run_args(&url, &sim.url(), &[]));
    writer.wait_for(FIRST + 1, Duration::from_secs(30)).await;
    writer.stop().await.expect("clean stop");

    // While the writer is down, the chain moves on and the RPC forgets old ledgers.
    for _ in 0..6 {
        sim.close_next();
    }
    sim.set_faults(Faults {
        retention: Some(3),
        ..Faults::default()
    });
    let oldest = sim.oldest();
    assert!(oldest > FIRST + 2);

    let writer = InProcessWriter::start(run_args(&url, &sim.url(), &[]));
    let status = writer.status.clone();
    wait_until(
        "the retention gap to be reported",
        Duration::from_secs(30),
        || status.snapshot().retention_gap.is_some(),
    )
    .await;
    let gap = status.snapshot().retention_gap.expect("gap");
    assert_eq!(gap.cursor, FIRST + 1);
    assert_eq!(gap.rpc_oldest, oldest);
    assert!(
        gap.remedy.contains(&format!(
            "writer backfill --from {} --to {}",
            FIRST + 2,
            oldest - 1
        )),
        "{}",
        gap.remedy
    );
    assert_eq!(cursor(&url).await, Some(FIRST + 1), "nothing skipped");
    writer.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_network_or_a_broken_hash_chain_is_refused() {
    let cluster = PostgresCluster::start().expect("postgres");
    let chain = fixture_chain();

    // An RPC on another network.
    let mut config = loadtest::simnet::SimnetConfig::new(chain.clone());
    config.network_passphrase = shared::network::TESTNET_PASSPHRASE.to_owned();
    let testnet = loadtest::simnet::Simnet::start(config)
        .await
        .expect("simnet");
    let url = create_database(&cluster.primary_url(), "networks").await;
    let writer = InProcessWriter::start(run_args(&url, &testnet.url(), &[]));
    let error = tokio::time::timeout(Duration::from_secs(30), writer.task)
        .await
        .expect("stops")
        .expect("task");
    let message = format!("{:#}", error.expect_err("refused"));
    assert!(
        message.contains("Test SDF Network") && message.contains("expected"),
        "{message}"
    );
    assert_eq!(cursor(&url).await, None, "nothing written");

    // A chain that does not continue the stored one: ledgers 1000000-1000002 are stored
    // from one chain; the RPC then serves a different history from 1000003 on.
    let url = create_database(&cluster.primary_url(), "forks").await;
    let sim = simnet(chain.clone(), 3).await;
    let writer = InProcessWriter::start(run_args(&url, &sim.url(), &[]));
    writer.wait_for(FIRST + 2, Duration::from_secs(30)).await;
    writer.stop().await.expect("clean stop");
    let mut other = chain.clone();
    other.remove(2); // a different ledger lands at 1000002, so 1000003 links elsewhere
    let fork = simnet(rechain(other, FIRST).expect("rechain"), 6).await;
    let writer = InProcessWriter::start(run_args(&url, &fork.url(), &[]));
    let error = tokio::time::timeout(Duration::from_secs(30), writer.task)
        .await
        .expect("stops")
        .expect("task");
    let message = format!("{:#}", error.expect_err("refused"));
    assert!(
        message.contains(&format!("ledger {}: previous hash", FIRST + 3)),
        "{message}"
    );
    assert_eq!(
        cursor(&url).await,
        Some(FIRST + 2),
        "nothing past the break"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_run_before_the_retention_window_is_closed_by_the_printed_backfill() {
    let cluster = PostgresCluster::start().expect("postgres");
    let reference = reference_dump(&cluster, "reference").await;
    let chain = fixture_chain();
    let last = FIRST + chain.len() as u32 - 1;
    let sim = simnet(chain.clone(), chain.len()).await;
    sim.set_faults(Faults {
        retention: Some(4),
        ..Faults::default()
    });
    let oldest = sim.oldest();
    assert!(oldest > FIRST);
    let url = create_database(&cluster.primary_url(), "before_retention").await;
    // An empty database and `--start` older than the RPC keeps.
    let writer = InProcessWriter::start(run_args(
        &url,
        &sim.url(),
        &["--retention-recheck-ms", "200"],
    ));
    let status = writer.status.clone();
    wait_until(
        "the retention gap to be reported",
        Duration::from_secs(30),
        || status.snapshot().retention_gap.is_some(),
    )
    .await;
    let remedy = status.snapshot().retention_gap.expect("gap").remedy;

    // Run exactly the command the writer printed, against a data lake of the chain.
    let lake = crate::support::write_lake(&chain, 1, 4);
    let command = remedy
        .split('`')
        .find(|part| part.starts_with("writer backfill"))
        .unwrap_or_else(|| panic!("no backfill command in {remedy:?}"))
        .replace("DATALAKE_DIR", &lake.path().display().to_string());
    assert!(
        command.contains(&format!("--from {FIRST} --to {}", oldest - 1)),
        "{command}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_writer"))
        .args(command.split_whitespace().skip(1))
        .args(["--quiet"])
        .env("DATABASE_URL", &url)
        .output()
        .expect("backfill runs");
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The live writer follows the backfilled ledgers and goes on from the RPC.
    writer.wait_for(last, Duration::from_secs(30)).await;
    writer.stop().await.expect("clean stop");
    assert_eq!(cursor(&url).await, Some(last));
    assert_eq!(dump(&url).await, reference, "contiguous, nothing twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_that_closes_while_it_is_asked_for_is_fetched_at_once() {
    let sim = simnet(fixture_chain(), 3).await;
    let source = RpcSource::new(
        &sim.url(),
        Duration::from_secs(10),
        PageBudget::default(),
        shared::Extractor::new(shared::Network::pubnet()),
    )
    .expect("source");
    let tip = sim.latest();
    assert!(
        matches!(source.fetch(tip + 1).await, Ok(Fetched::AtTip { rpc_latest }) if rpc_latest == tip),
        "not closed yet: at the tip"
    );
    // The RPC refuses the next ledger, then closes it before the writer asks for its range.
    sim.set_faults(Faults {
        close_after_refused_tip: true,
        ..Faults::default()
    });
    match source.fetch(tip + 1).await {
        Ok(Fetched::Ledgers { ledgers, .. }) => {
            assert_eq!(ledgers.first().map(|l| l.ledger.sequence), Some(tip + 1));
        }
        other => panic!("ledger {} closed while asked for: {other:?}", tip + 1),
    }
    assert_eq!(
        sim.latest(),
        tip + 1,
        "the simulator closed it after refusing"
    );
    sim.shutdown().await;
}
