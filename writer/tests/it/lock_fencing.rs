//! Writes tied to the writer lock, with real writer processes, a real Postgres and the
//! RPC simulator: when the active writer's lock session is terminated, or the active
//! writer hangs (SIGSTOP: its kernel still answers TCP keepalives), the standby is active
//! within five seconds and the chain goes on; the old active writer commits nothing more
//! and steps down to standby; the stored ledgers equal an uninterrupted run's (contiguous,
//! no duplicates). Migrations wait for the writer lock.

use std::process::Child;
use std::time::{Duration, Instant};

use crate::support::{
    connect, create_database, cursor, dump, fixture_chain, free_port, get_json, run_args, simnet,
    spawn_writer, wait_for_cursor, InProcessWriter,
};
use shared::testkit::PostgresCluster;
use writer::lock::WRITER_LOCK_KEY;

const FIRST: u32 = 1_000_000;

fn signal(child: &Child, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status();
    assert!(status.is_ok_and(|s| s.success()), "kill -{name}");
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "writer did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn health(port: u16) -> Option<serde_json::Value> {
    tokio::time::timeout(
        Duration::from_secs(2),
        get_json(&format!("http://127.0.0.1:{port}/health")),
    )
    .await
    .ok()
    .flatten()
}

async fn role(port: u16) -> String {
    health(port)
        .await
        .and_then(|h| h["role"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn wait_for_role(port: u16, wanted: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if role(port).await == wanted {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "writer on port {port} not {wanted} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The database after one writer ingested the whole chain without interruption.
async fn reference(cluster: &PostgresCluster) -> Vec<String> {
    let chain = fixture_chain();
    let last = FIRST + chain.len() as u32 - 1;
    let sim = simnet(chain, 12).await;
    let url = create_database(&cluster.primary_url(), "reference").await;
    let writer = InProcessWriter::start(run_args(&url, &sim.url(), &[]));
    writer.wait_for(last, Duration::from_secs(60)).await;
    writer.stop().await.expect("clean stop");
    dump(&url).await
}

/// Two writer processes on a chain closed step by step; returns them, their health
/// ports and which one is active, once `FIRST + 3` is stored.
async fn active_and_standby(url: &str, rpc: &str) -> (Vec<Child>, [u16; 2], usize) {
    let ports = [free_port(), free_port()];
    let mut writers = Vec::new();
    for port in ports {
        writers.push(spawn_writer(
            url,
            rpc,
            &format!("127.0.0.1:{port}"),
            &["--page-limit", "1", "--lease-ttl-ms", "2000"],
        ));
        // The first one started takes the lock.
        if writers.len() == 1 {
            wait_for_cursor(url, FIRST + 1, Duration::from_secs(30)).await;
        }
    }
    wait_for_role(ports[1], "standby", Duration::from_secs(20)).await;
    assert_eq!(role(ports[0]).await, "active");
    (writers, ports, 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_the_active_writers_lock_session_hands_over_to_the_standby() {
    let cluster = PostgresCluster::start().expect("postgres");
    let reference = reference(&cluster).await;
    let chain = fixture_chain();
    let last = FIRST + chain.len() as u32 - 1;
    let live = simnet(chain, 2).await;
    let url = cluster.primary_url();
    let (mut writers, ports, active) = active_and_standby(&url, &live.url()).await;
    let standby = 1 - active;
    live.close_next();
    wait_for_cursor(&url, FIRST + 2, Duration::from_secs(30)).await;

    // The lock session of the active writer ends (a failover, an operator, a network cut).
    let admin = connect(&url).await;
    let terminated: Vec<bool> = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND classid = (($1::bigint >> 32) & 4294967295)::oid \
             AND objid = ($1::bigint & 4294967295)::oid AND objsubid = 1",
            &[&WRITER_LOCK_KEY],
        )
        .await
        .expect("terminate")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(terminated, vec![true], "one lock holder terminated");
    let takeover = wait_for_role(ports[standby], "active", Duration::from_secs(5)).await;
    println!("standby active {takeover:?} after the lock session was terminated");
    wait_for_role(ports[active], "standby", Duration::from_secs(10)).await;

    // The chain goes on, written by the new active writer.
    while live.close_next().is_some() {}
    wait_for_cursor(&url, last, Duration::from_secs(60)).await;
    for writer in &writers {
        signal(writer, "TERM");
    }
    for writer in &mut writers {
        assert!(wait_exit(writer, Duration::from_secs(20)).success());
    }
    assert_eq!(dump(&url).await, reference, "contiguous, no duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_active_writer_is_evicted_and_steps_down_when_it_resumes() {
    let cluster = PostgresCluster::start().expect("postgres");
    let reference = reference(&cluster).await;
    let chain = fixture_chain();
    let last = FIRST + chain.len() as u32 - 1;
    let live = simnet(chain, 2).await;
    let url = cluster.primary_url();
    let (mut writers, ports, active) = active_and_standby(&url, &live.url()).await;
    let standby = 1 - active;
    live.close_next();
    live.close_next();
    wait_for_cursor(&url, FIRST + 3, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let frozen_at = loop {
        let seen = health(ports[active])
            .await
            .and_then(|h| h["last_ledger"].as_u64());
        if seen == Some(u64::from(FIRST + 3)) {
            break FIRST + 3;
        }
        assert!(Instant::now() < deadline, "active writer reports {seen:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };

    // The active writer hangs: its sockets stay open and its kernel answers keepalives.
    signal(&writers[active], "STOP");
    let frozen = Instant::now();
    live.close_next();
    let takeover = wait_for_role(ports[standby], "active", Duration::from_secs(5)).await;
    println!(
        "standby active {:?} after the active writer froze",
        frozen.elapsed()
    );
    assert!(takeover <= Duration::from_secs(5));
    wait_for_cursor(&url, FIRST + 4, Duration::from_secs(10)).await;

    // Resumed, the old writer commits nothing and steps down.
    signal(&writers[active], "CONT");
    live.close_next();
    wait_for_role(ports[active], "standby", Duration::from_secs(10)).await;
    let resumed = health(ports[active]).await.expect("health");
    assert_eq!(
        resumed["last_ledger"].as_u64(),
        Some(u64::from(frozen_at)),
        "the resumed writer committed nothing: {resumed}"
    );
    while live.close_next().is_some() {}
    wait_for_cursor(&url, last, Duration::from_secs(60)).await;
    assert_eq!(role(ports[standby]).await, "active");
    for writer in &writers {
        signal(writer, "TERM");
    }
    for writer in &mut writers {
        assert!(wait_exit(writer, Duration::from_secs(20)).success());
    }
    assert_eq!(dump(&url).await, reference, "contiguous, no duplicates");
    assert_eq!(cursor(&url).await, Some(last));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_waits_while_a_writer_holds_the_lock() {
    let cluster = PostgresCluster::start().expect("postgres");
    let url = cluster.primary_url();
    // What a running (older) writer holds.
    let holder = connect(&url).await;
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&WRITER_LOCK_KEY])
        .await
        .expect("lock");
    let migrate = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_writer"))
            .args(["migrate", "--database-url", &url])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawns")
    };
    let mut waiting = migrate();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        waiting.try_wait().expect("wait").is_none(),
        "migrate must wait for the writer lock"
    );
    let schema: bool = holder
        .query_one("SELECT to_regclass('ingest_cursor') IS NULL", &[])
        .await
        .expect("query")
        .get(0);
    assert!(schema, "nothing migrated while the lock is held");

    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&WRITER_LOCK_KEY])
        .await
        .expect("unlock");
    let status = wait_exit(&mut waiting, Duration::from_secs(30));
    let out = waiting.wait_with_output().expect("output");
    assert!(status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let applied: usize = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(applied > 0, "migrations applied once the lock was free");

    // With nothing pending, migrate does not need the lock: it returns at once even while
    // a writer runs.
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&WRITER_LOCK_KEY])
        .await
        .expect("lock");
    let mut again = migrate();
    let status = wait_exit(&mut again, Duration::from_secs(20));
    let out = again.wait_with_output().expect("output");
    assert!(status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("0 migration(s) applied"));
}
