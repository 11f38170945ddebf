//! `loadtest stack` when a part cannot start: the processes it had already started (two
//! writers, four readers) are stopped before it exits, not left holding their ports.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

/// A base port with `n` free ports from it (checked by binding each, then released).
fn free_run(n: u16) -> u16 {
    for _ in 0..200 {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = probe.local_addr().expect("addr").port();
        drop(probe);
        if base > 60_000 {
            continue;
        }
        if (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no run of {n} free ports");
}

fn listening(port: u16) -> bool {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
}

#[test]
fn a_failed_stack_start_stops_what_it_started() {
    let data = tempfile::tempdir().expect("tempdir");
    let (edge, readers, control, health, pg, redis) = (
        free_run(1),
        free_run(4),
        free_run(1),
        free_run(2),
        free_run(2),
        free_run(1),
    );
    let port = |p: u16| p.to_string();
    // An "nginx" that refuses its configuration: the edge is the last part started.
    // Output goes to a file, not a pipe: a process left running would hold a pipe open,
    // and the test would hang instead of failing.
    let log_path = data.path().join("stack.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let status = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["stack", "--fresh", "--synthetic", "5"])
        .args(["--close-interval-ms", "600000"])
        .arg("--data-dir")
        .arg(data.path().join("stack"))
        .args(["--edge-port", &port(edge), "--reader-port", &port(readers)])
        .args([
            "--control-port",
            &port(control),
            "--health-port",
            &port(health),
        ])
        .args(["--pg-port", &port(pg), "--redis-port", &port(redis)])
        .env("TESTKIT_NGINX", "/bin/false")
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .status()
        .expect("run loadtest stack");
    let output = std::fs::read_to_string(&log_path).expect("read log");
    assert!(!status.success(), "{output}");
    assert!(output.contains("starting the nginx edge"), "{output}");
    // The readers had been listening and the writers serving /health.
    for port in (readers..readers + 4).chain(health..health + 2) {
        assert!(
            !listening(port),
            "port {port} still served after the failed start"
        );
    }
}
