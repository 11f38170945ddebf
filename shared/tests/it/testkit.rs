//! The test kit against real servers: a PostgreSQL primary with a streaming replica that
//! follows, refuses writes, dies and comes back; a Redis that dies and comes back; and
//! both leaving neither a process nor a directory behind once dropped. Needs the
//! PostgreSQL server and redis-server installed (`scripts/install-deps.sh`).

use std::io::ErrorKind;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use shared::testkit::{PostgresCluster, RedisServer, TestkitError};

const CATCH_UP: Duration = Duration::from_secs(30);

/// Whether a process exists (a zombie would count: the kit must reap what it kills).
fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn refused(port: u16) -> bool {
    matches!(
        TcpStream::connect(("127.0.0.1", port)),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused
    )
}

fn assert_cleaned_up(dir: &Path, pids: &[u32]) {
    assert!(!dir.exists(), "{} still exists", dir.display());
    for &pid in pids {
        assert!(!exists(pid), "process {pid} still exists");
    }
}

#[test]
fn replica_follows_refuses_writes_and_survives_a_kill() {
    let mut cluster = PostgresCluster::start_with_replica().expect("start primary + replica");
    let primary = cluster.primary_port();
    let replica = cluster.replica_port().expect("replica port");
    assert_ne!(primary, replica);
    assert_eq!(
        cluster.primary_url(),
        format!("postgres://postgres@127.0.0.1:{primary}/payments")
    );
    assert_eq!(
        cluster.replica_url(),
        Some(format!("postgres://postgres@127.0.0.1:{replica}/payments"))
    );

    cluster
        .psql(
            primary,
            "payments",
            "CREATE TABLE seen (id bigint PRIMARY KEY, memo text); \
             INSERT INTO seen SELECT g, 'p' || g FROM generate_series(1, 100) g",
        )
        .expect("write on the primary");
    cluster
        .wait_for_replica_replay(CATCH_UP)
        .expect("replica catches up");
    assert_eq!(
        cluster
            .psql(replica, "payments", "SELECT count(*), sum(id) FROM seen")
            .expect("read on the replica"),
        "100|5050"
    );
    assert_eq!(
        cluster
            .psql(replica, "payments", "SELECT pg_is_in_recovery()")
            .expect("ask the replica"),
        "t"
    );
    let refused_write = cluster
        .psql(replica, "payments", "INSERT INTO seen VALUES (101, 'x')")
        .expect_err("the replica must refuse writes");
    assert!(
        refused_write
            .to_string()
            .contains("cannot execute INSERT in a read-only transaction"),
        "{refused_write}"
    );

    // A dead replica: the postmaster is gone (and reaped), its port refuses connections
    // and it does not catch up.
    let first_pid = cluster.replica_pid().expect("replica pid");
    cluster.kill_replica().expect("kill the replica");
    assert_eq!(cluster.replica_pid(), None);
    assert!(
        !exists(first_pid),
        "killed postmaster {first_pid} still exists"
    );
    assert!(refused(replica), "port {replica} still accepts connections");
    cluster
        .psql(
            primary,
            "payments",
            "INSERT INTO seen VALUES (101, 'after the kill')",
        )
        .expect("write while the replica is down");
    assert!(cluster
        .wait_for_replica_replay(Duration::from_millis(500))
        .is_err());

    // Back on the same port, it catches up with what it missed.
    cluster.start_replica().expect("restart the replica");
    assert_eq!(cluster.replica_port(), Some(replica));
    assert_ne!(cluster.replica_pid(), Some(first_pid));
    cluster
        .wait_for_replica_replay(CATCH_UP)
        .expect("replica catches up after the restart");
    assert_eq!(
        cluster
            .psql(replica, "payments", "SELECT memo FROM seen WHERE id = 101")
            .expect("read on the restarted replica"),
        "after the kill"
    );

    let dir = cluster.dir().to_path_buf();
    let pids: Vec<u32> = [cluster.primary_pid(), cluster.replica_pid()]
        .into_iter()
        .map(|pid| pid.expect("both servers run"))
        .collect();
    drop(cluster);
    assert_cleaned_up(&dir, &pids);
}

#[test]
fn a_primary_alone_has_payments_and_the_settings() {
    let mut cluster = PostgresCluster::start().expect("start a primary");
    let port = cluster.primary_port();
    assert_eq!(cluster.replica_port(), None);
    assert_eq!(cluster.replica_url(), None);
    assert!(matches!(
        cluster.kill_replica(),
        Err(TestkitError::Usage(_))
    ));
    assert!(matches!(
        cluster.wait_for_replica_replay(CATCH_UP),
        Err(TestkitError::Usage(_))
    ));

    let settings = cluster
        .psql(
            port,
            "payments",
            "SELECT current_database(), current_setting('fsync'), \
             current_setting('max_connections'), current_setting('wal_level'), \
             current_setting('hot_standby_feedback'), current_setting('listen_addresses')",
        )
        .expect("query the primary");
    assert_eq!(settings, "payments|off|60|replica|on|127.0.0.1");

    let dir: PathBuf = cluster.dir().to_path_buf();
    let pid = cluster.primary_pid().expect("primary pid");
    drop(cluster);
    assert_cleaned_up(&dir, &[pid]);
    assert!(refused(port), "port {port} still accepts connections");
}

#[test]
fn dropping_right_after_a_kill_cleans_up() {
    let mut cluster = PostgresCluster::start_with_replica().expect("start primary + replica");
    let dir = cluster.dir().to_path_buf();
    let pids = [cluster.primary_pid(), cluster.replica_pid()].map(|pid| pid.expect("pid"));
    // The killed postmaster's children may still be exiting (and writing) while the
    // directory is removed.
    cluster.kill_replica().expect("kill the replica");
    drop(cluster);
    assert_cleaned_up(&dir, &pids);
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn redis_serves_dies_and_comes_back_empty() {
    let mut redis = RedisServer::start().expect("start redis");
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    assert_eq!(redis_cli(port, &["SET", "cursor", "42"]), "OK");
    assert_eq!(redis_cli(port, &["GET", "cursor"]), "42");

    let first_pid = redis.pid().expect("redis pid");
    redis.kill().expect("kill redis");
    assert!(!exists(first_pid), "killed redis {first_pid} still exists");
    assert!(refused(port), "port {port} still accepts connections");

    redis.restart().expect("restart redis");
    assert_eq!(redis.port(), port);
    // Nothing was persisted.
    assert_eq!(redis_cli(port, &["GET", "cursor"]), "");
    assert_eq!(redis_cli(port, &["SET", "cursor", "43"]), "OK");
    assert_eq!(redis_cli(port, &["GET", "cursor"]), "43");

    let dir = redis.dir().to_path_buf();
    let pid = redis.pid().expect("redis pid");
    drop(redis);
    assert_cleaned_up(&dir, &[pid]);
    assert!(refused(port), "port {port} still accepts connections");
}

#[test]
fn redis_servers_run_side_by_side() {
    let a = RedisServer::start().expect("start redis a");
    let b = RedisServer::start().expect("start redis b");
    assert_ne!(a.port(), b.port());
    assert_ne!(a.dir(), b.dir());
    assert_eq!(redis_cli(a.port(), &["SET", "who", "a"]), "OK");
    assert_eq!(redis_cli(b.port(), &["GET", "who"]), "");
}

/// A port nobody listens on right now.
fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

#[test]
fn kept_servers_keep_their_data_across_restarts() {
    use std::os::unix::fs::PermissionsExt as _;
    let data = tempfile::Builder::new()
        .prefix("testkit-kept-")
        .tempdir_in("/tmp")
        .expect("data directory");
    // The postgres user must be able to walk into it, as into a user's data folder.
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (pg_dir, redis_dir) = (data.path().join("postgres"), data.path().join("redis"));
    let mut ports = [unused_port(), unused_port(), unused_port()];
    while ports[0] == ports[1] || ports[1] == ports[2] || ports[0] == ports[2] {
        ports = [unused_port(), unused_port(), unused_port()];
    }
    let [primary, replica, redis_port] = ports;

    {
        let cluster =
            PostgresCluster::open_kept(&pg_dir, primary, replica).expect("create a kept cluster");
        assert_eq!(cluster.primary_port(), primary);
        assert_eq!(cluster.replica_port(), Some(replica));
        let durable = cluster
            .psql(
                primary,
                "payments",
                "CREATE TABLE kept (n int); INSERT INTO kept VALUES (7); \
                 SELECT current_setting('fsync')",
            )
            .expect("write on the primary");
        assert_eq!(durable, "on", "kept data is written durably");
        cluster
            .wait_for_replica_replay(CATCH_UP)
            .expect("the replica follows");
        let _redis = RedisServer::open_kept(&redis_dir, redis_port).expect("create a kept redis");
        assert_eq!(redis_cli(redis_port, &["SET", "limit:a", "41"]), "OK");
        // A taken port is refused at once, by name.
        match PostgresCluster::open_kept(&data.path().join("other"), primary, unused_port()) {
            Err(TestkitError::Usage(message)) => assert!(message.contains(&primary.to_string())),
            other => panic!("expected a taken-port error, got {other:?}"),
        }
    }
    for port in ports {
        assert!(refused(port), "port {port} still accepts connections");
    }
    assert!(
        pg_dir.join("primary/PG_VERSION").is_file(),
        "the data stays"
    );

    let cluster = PostgresCluster::open_kept(&pg_dir, primary, replica).expect("reopen");
    let kept = cluster
        .psql(
            primary,
            "payments",
            "INSERT INTO kept VALUES (8); SELECT sum(n) FROM kept",
        )
        .expect("read the primary");
    assert_eq!(kept, "15");
    cluster
        .wait_for_replica_replay(CATCH_UP)
        .expect("the reopened replica follows");
    let on_replica = cluster
        .psql(replica, "payments", "SELECT sum(n) FROM kept")
        .expect("read the replica");
    assert_eq!(on_replica, "15");
    let redis = RedisServer::open_kept(&redis_dir, redis_port).expect("reopen redis");
    assert_eq!(redis_cli(redis_port, &["GET", "limit:a"]), "41");
    drop(redis);
    drop(cluster);
    assert!(pg_dir.join("replica/PG_VERSION").is_file());
}
