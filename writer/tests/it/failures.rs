//! Deterministic database failures end: a unique violation from a bug, a full disk and
//! an encoding error (real Postgres errors, raised by an index or a trigger the test
//! installs) get a bounded number of attempts, then the writer stops with an error that
//! names the condition and exits non-zero, having written nothing. A failure that passes
//! by itself is retried with backoff, and SIGTERM ends that backoff at once.

use std::time::{Duration, Instant};

use crate::support::{
    connect, create_database, cursor, fixture_chain, free_port, get_json, run_args, simnet,
    spawn_writer, InProcessWriter,
};
use shared::testkit::PostgresCluster;
use tokio_util::sync::CancellationToken;
use writer::status::Role;

/// Migrates `url` and makes every insertion into `ledgers` fail with `sqlstate`.
async fn failing_ledgers(url: &str, sqlstate: &str) {
    writer::db::migrate_when_unlocked(url, &CancellationToken::new(), || {})
        .await
        .expect("migrations");
    let client = connect(url).await;
    client
        .batch_execute(&format!(
            "CREATE FUNCTION injected_failure() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN RAISE EXCEPTION 'injected failure' USING ERRCODE = '{sqlstate}'; END $$; \
             CREATE TRIGGER injected_failure BEFORE INSERT ON ledgers \
             FOR EACH ROW EXECUTE FUNCTION injected_failure();"
        ))
        .await
        .expect("trigger");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deterministic_failures_stop_after_bounded_attempts_with_a_named_error() {
    let cluster = PostgresCluster::start().expect("postgres");
    let chain = fixture_chain();
    let sim = simnet(chain, 12).await;
    let cases = [
        ("unique_bug", None, "unique_violation (23505)"),
        ("disk_full", Some("53100"), "disk_full (53100)"),
        (
            "bad_encoding",
            Some("22021"),
            "character_not_in_repertoire (22021)",
        ),
    ];
    for (name, sqlstate, condition) in cases {
        let url = create_database(&cluster.primary_url(), name).await;
        match sqlstate {
            Some(code) => failing_ledgers(&url, code).await,
            None => {
                // A bug that writes two payments under one key: here, an index that says
                // a ledger holds at most one payment.
                writer::db::migrate_when_unlocked(&url, &CancellationToken::new(), || {})
                    .await
                    .expect("migrations");
                connect(&url)
                    .await
                    .batch_execute(
                        "CREATE UNIQUE INDEX one_payment_a_ledger ON payments (ledger_sequence)",
                    )
                    .await
                    .expect("index");
            }
        }
        let writer =
            InProcessWriter::start(run_args(&url, &sim.url(), &["--max-commit-attempts", "3"]));
        let error = tokio::time::timeout(Duration::from_secs(60), writer.task)
            .await
            .expect("the writer gives up")
            .expect("task")
            .expect_err("stops with an error");
        let message = format!("{error:#}");
        assert!(message.contains("commit gave up"), "{name}: {message}");
        assert!(message.contains(condition), "{name}: {message}");
        assert!(message.contains("failed 3 times"), "{name}: {message}");
        assert_eq!(writer.status.snapshot().role, Role::Failed);
        assert_eq!(cursor(&url).await, None, "{name}: nothing written");
    }

    // The process exits non-zero.
    let url = create_database(&cluster.primary_url(), "exit_code").await;
    failing_ledgers(&url, "53100").await;
    let port = free_port();
    let mut child = spawn_writer(
        &url,
        &sim.url(),
        &format!("127.0.0.1:{port}"),
        &["--max-commit-attempts", "2"],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the writer did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "exits non-zero: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_commit_backoff_at_once() {
    let cluster = PostgresCluster::start().expect("postgres");
    let sim = simnet(fixture_chain(), 12).await;
    let url = cluster.primary_url();
    // A serialization failure passes by itself: retried for as long as it takes.
    failing_ledgers(&url, "40001").await;
    let port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_writer"))
        .args([
            "run",
            "--database-url",
            &url,
            "--rpc-url",
            &sim.url(),
            "--start",
            "1000000",
            "--poll-interval-ms",
            "100",
            "--max-backoff-ms",
            "60000",
            "--health-listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("writer starts");
    // Backoffs double from 100 ms: after 7 retries the writer sleeps 12.8 s and more.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let retries = get_json(&format!("http://127.0.0.1:{port}/health"))
            .await
            .and_then(|h| h["last_error"].as_str().map(str::to_owned));
        let metrics = crate::support::get_text(&format!("http://127.0.0.1:{port}/metrics"))
            .await
            .map(|(_, body)| body)
            .unwrap_or_default();
        let count = metrics
            .lines()
            .find(|l| l.starts_with("writer_commit_retries_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0);
        if count >= 7.0 {
            assert!(retries.is_some_and(|e| e.contains("serialization")));
            break;
        }
        assert!(Instant::now() < deadline, "no retries seen ({count})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
    let sent = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "SIGTERM not honoured during a 12 s backoff"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "a graceful stop exits 0: {status}");
    assert_eq!(cursor(&url).await, None, "nothing written");
}
