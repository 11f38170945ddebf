//! Exactly once under crashes and competition: a writer killed with SIGKILL at random
//! points, then restarted, ends with the same database as an uninterrupted run; two
//! writers at once never both write, and the standby takes over within five seconds of
//! the active one dying.

use std::time::{Duration, Instant};

use crate::support::{
    create_database, dump, fixture_chain, free_port, get_json, run_args, simnet, spawn_writer,
    wait_for_cursor, InProcessWriter,
};
use rand::{Rng, SeedableRng};
use shared::testkit::PostgresCluster;

const FIRST: u32 = 1_000_000;

fn sigterm(child: &std::process::Child) {
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    assert!(status.is_ok_and(|s| s.success()), "kill -TERM");
}

fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "writer did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until a writer process serves its health endpoint (its signal handlers are in
/// place by then).
async fn wait_for_health(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while get_json(&format!("http://127.0.0.1:{port}/health"))
        .await
        .is_none()
    {
        assert!(Instant::now() < deadline, "health endpoint never came up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_then_restart_equals_an_uninterrupted_run() {
    let cluster = PostgresCluster::start().expect("postgres");
    let chain = fixture_chain();
    let last = FIRST + chain.len() as u32 - 1;
    let sim = simnet(chain.clone(), chain.len()).await;
    // Slow the RPC a little so that a run spans many commit points.
    let mut faults = sim.faults();
    faults.latency_ms = 15;
    sim.set_faults(faults);

    // The reference: one uninterrupted run, timed.
    let reference_url = create_database(&cluster.primary_url(), "reference").await;
    let started = Instant::now();
    let writer =
        InProcessWriter::start(run_args(&reference_url, &sim.url(), &["--page-limit", "1"]));
    writer.wait_for(last, Duration::from_secs(60)).await;
    let full_run = started.elapsed();
    writer.stop().await.expect("clean stop");
    let reference = dump(&reference_url).await;
    assert!(reference.len() > 5000, "{} rows", reference.len());

    let seed: u64 = rand::rng().random();
    println!("kill schedule seed {seed}; an uninterrupted run takes {full_run:?}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let window = full_run.as_millis() as u64 + 300;
    for round in 0..20 {
        let url = create_database(&cluster.primary_url(), &format!("crash{round}")).await;
        // One or two SIGKILLs at random instants, from process start (connecting,
        // taking the lock, migrating) to the end of ingestion.
        for _ in 0..rng.random_range(1..=2) {
            let mut child = spawn_writer(&url, &sim.url(), "127.0.0.1:0", &["--page-limit", "1"]);
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..window))).await;
            child.kill().expect("SIGKILL");
            child.wait().expect("reaped");
        }
        // Restart and finish; SIGTERM ends it cleanly.
        let port = free_port();
        let mut child = spawn_writer(
            &url,
            &sim.url(),
            &format!("127.0.0.1:{port}"),
            &["--page-limit", "1"],
        );
        wait_for_cursor(&url, last, Duration::from_secs(60)).await;
        wait_for_health(port).await;
        sigterm(&child);
        let status = wait_exit(&mut child, Duration::from_secs(20));
        assert!(
            status.success(),
            "round {round}: SIGTERM exits 0, got {status}"
        );
        assert_eq!(dump(&url).await, reference, "round {round} (seed {seed})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_never_both_write_and_the_standby_takes_over() {
    let cluster = PostgresCluster::start().expect("postgres");
    let chain = fixture_chain();
    let last = FIRST + chain.len() as u32 - 1;
    let sim = simnet(chain.clone(), chain.len()).await;
    let reference_url = create_database(&cluster.primary_url(), "reference").await;
    let writer = InProcessWriter::start(run_args(&reference_url, &sim.url(), &[]));
    writer.wait_for(last, Duration::from_secs(60)).await;
    writer.stop().await.expect("clean stop");
    let reference = dump(&reference_url).await;

    // Now a live chain, closed step by step, with two writers racing for it.
    let live = simnet(chain.clone(), 2).await;
    let ports = [free_port(), free_port()];
    let url = cluster.primary_url();
    let mut writers: Vec<_> = ports
        .iter()
        .map(|p| {
            spawn_writer(
                &url,
                &live.url(),
                &format!("127.0.0.1:{p}"),
                &["--page-limit", "1"],
            )
        })
        .collect();
    wait_for_cursor(&url, FIRST + 1, Duration::from_secs(30)).await;

    let roles = || async {
        let mut roles = Vec::new();
        for port in ports {
            let health = get_json(&format!("http://127.0.0.1:{port}/health")).await;
            roles.push(
                health
                    .and_then(|h| h["role"].as_str().map(str::to_owned))
                    .unwrap_or_default(),
            );
        }
        roles
    };
    let current = roles().await;
    assert_eq!(
        current.iter().filter(|r| *r == "active").count(),
        1,
        "exactly one active: {current:?}"
    );
    assert_eq!(
        current.iter().filter(|r| *r == "standby").count(),
        1,
        "one standby: {current:?}"
    );
    let active = current.iter().position(|r| r == "active").expect("active");
    let standby = 1 - active;

    // Both keep running while ledgers close; then the active one dies.
    for _ in 0..3 {
        live.close_next();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    writers[active].kill().expect("SIGKILL the active writer");
    writers[active].wait().expect("reaped");
    let died = Instant::now();
    loop {
        let health = get_json(&format!("http://127.0.0.1:{}/health", ports[standby])).await;
        if health.as_ref().and_then(|h| h["role"].as_str()) == Some("active") {
            break;
        }
        assert!(
            died.elapsed() < Duration::from_secs(5),
            "standby did not take over within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let takeover = died.elapsed();
    println!("standby took over {takeover:?} after the active writer died");
    while live.close_next().is_some() {}
    wait_for_cursor(&url, last, Duration::from_secs(60)).await;
    sigterm(&writers[standby]);
    assert!(wait_exit(&mut writers[standby], Duration::from_secs(20)).success());
    assert_eq!(dump(&url).await, reference, "no duplicate, no gap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_starting_together_migrate_once() {
    let cluster = PostgresCluster::start().expect("postgres");
    let url = cluster.primary_url();
    // All four start before any is waited for.
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_writer"))
                .args(["migrate", "--database-url", &url])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawns")
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("runs"))
        .collect();
    for out in &outputs {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let applied: Vec<usize> = outputs
        .iter()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout);
            text.split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        })
        .collect();
    // One process applied every migration; the others found them applied.
    assert_eq!(applied.iter().filter(|n| **n > 0).count(), 1, "{applied:?}");
}
