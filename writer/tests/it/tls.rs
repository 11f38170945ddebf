//! TLS to Postgres and Redis: against a TLS-only Postgres (hostssl pg_hba) and a TLS-only
//! Redis from the test kit, the writer migrates, commits ledgers and announces its tip
//! with `sslmode=verify-full` and `rediss://` trusting the test CA; `verify-full` refuses
//! another CA and another host name by name, `require` encrypts without a CA, and a
//! plain connection is refused by both servers (so TLS cannot have been silently off).

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{connect, fixture_chain, run_args, simnet, write_lake, InProcessWriter};
use shared::redistls::RedisCa;
use shared::testkit::{PostgresCluster, RedisServer, TestCa};
use tokio_util::sync::CancellationToken;

const FIRST: u32 = 1_000_000;

/// `postgres://postgres@HOST:PORT/DATABASE?PARAMS`.
fn url(host: &str, port: u16, database: &str, params: &str) -> String {
    format!("postgres://postgres@{host}:{port}/{database}?{params}")
}

fn verify_full(port: u16, database: &str, ca: &TestCa) -> String {
    url(
        "localhost",
        port,
        database,
        &format!("sslmode=verify-full&sslrootcert={}", ca.ca_file().display()),
    )
}

/// Whether the session of `url` is encrypted, as the server sees it.
async fn session_encrypted(url: &str) -> bool {
    connect(url)
        .await
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0)
}

/// Applies the migrations as `writer migrate` does; the error with its causes, as the
/// binary prints it.
async fn migrate(url: &str) -> Result<usize, String> {
    writer::db::migrate_when_unlocked(url, &CancellationToken::new(), || {})
        .await
        .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_migrates_backfills_ingests_and_announces_over_verified_tls() {
    let ca = TestCa::new().expect("test CA");
    let cluster = PostgresCluster::start_tls(&ca).expect("TLS postgres");
    let redis_server = RedisServer::start_tls(&ca).expect("TLS redis");
    let port = cluster.primary_port();
    let live_url = verify_full(port, "payments", &ca);

    // `writer migrate` as an operator runs it.
    let out = Command::new(env!("CARGO_BIN_EXE_writer"))
        .args(["migrate", "--database-url", &live_url])
        .env("RUST_LOG", "warn")
        .output()
        .expect("migrate runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(session_encrypted(&live_url).await);

    // `writer backfill` from a data lake into a second database, over the same TLS.
    cluster
        .psql(port, "postgres", "CREATE DATABASE lake")
        .expect("create lake database");
    let chain = fixture_chain();
    let lake = write_lake(&chain, 2, 2);
    let lake_url = verify_full(port, "lake", &ca);
    let out = Command::new(env!("CARGO_BIN_EXE_writer"))
        .args([
            "backfill",
            "--database-url",
            &lake_url,
            "--network",
            "pubnet",
        ])
        .args(["--source", lake.path().to_str().expect("utf-8 path")])
        .args(["--from", &FIRST.to_string()])
        .args(["--to", &(FIRST + 5).to_string(), "--quiet"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("backfill runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored: i64 = connect(&lake_url)
        .await
        .query_one("SELECT count(*) FROM ledgers", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored, 6);

    // `writer run`: pool, lock session and tip announcements, all over TLS.
    let sim = simnet(chain.clone(), 4).await;
    let ca_file = ca.ca_file().display().to_string();
    let writer = InProcessWriter::start(run_args(
        &live_url,
        &sim.url(),
        &[
            "--redis-url",
            &redis_server.url(),
            "--redis-ca-file",
            &ca_file,
        ],
    ));
    writer.wait_for(FIRST + 3, Duration::from_secs(60)).await;
    let encrypted: i64 = connect(&live_url)
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name = 'stellar-writer lock' AND s.ssl",
            &[],
        )
        .await
        .expect("lock session")
        .get(0);
    assert_eq!(encrypted, 1, "the lock session is encrypted");

    let ca_trust = RedisCa::load(Some(ca.ca_file())).expect("CA");
    let client = ca_trust.client(&redis_server.url()).expect("rediss client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("TLS connection to redis");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let tip: Option<String> = redis::cmd("GET")
            .arg("stellar-payments:tip")
            .query_async(&mut conn)
            .await
            .expect("GET");
        let sequence = tip
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["sequence"].as_u64());
        if sequence >= Some(u64::from(FIRST + 3)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no tip announced over rediss: {sequence:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    writer.stop().await.expect("clean stop");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_refuses_another_ca_and_another_host_name_by_name() {
    let ca = TestCa::new().expect("test CA");
    let other = TestCa::new().expect("another CA");
    let cluster = PostgresCluster::start_tls(&ca).expect("TLS postgres");
    let port = cluster.primary_port();
    let with = |host: &str, mode: &str, root: &TestCa| {
        url(
            host,
            port,
            "payments",
            &format!("sslmode={mode}&sslrootcert={}", root.ca_file().display()),
        )
    };

    let wrong_ca = migrate(&with("localhost", "verify-full", &other))
        .await
        .expect_err("another CA is refused");
    assert!(
        wrong_ca.contains("invalid peer certificate") && wrong_ca.contains("UnknownIssuer"),
        "{wrong_ca}"
    );
    let wrong_host = migrate(&with("127.0.0.1", "verify-full", &ca))
        .await
        .expect_err("a certificate for another name is refused");
    assert!(
        wrong_host.contains("not valid for name \"127.0.0.1\""),
        "{wrong_host}"
    );
    // No CA file: the built-in public roots do not know the test CA.
    let no_ca = migrate(&url("localhost", port, "payments", "sslmode=verify-full"))
        .await
        .expect_err("an unknown issuer is refused");
    assert!(no_ca.contains("UnknownIssuer"), "{no_ca}");
    // verify-ca checks the chain only: the same host name passes.
    migrate(&with("127.0.0.1", "verify-ca", &ca))
        .await
        .expect("verify-ca ignores the host name");
    let still_wrong_ca = migrate(&with("127.0.0.1", "verify-ca", &other))
        .await
        .expect_err("verify-ca checks the chain");
    assert!(still_wrong_ca.contains("UnknownIssuer"), "{still_wrong_ca}");

    // The binary says so too, and exits non-zero.
    let out = Command::new(env!("CARGO_BIN_EXE_writer"))
        .args(["migrate", "--database-url"])
        .arg(with("localhost", "verify-full", &other))
        .output()
        .expect("migrate runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_encrypts_without_a_ca_and_plain_connections_are_refused() {
    let ca = TestCa::new().expect("test CA");
    let cluster = PostgresCluster::start_tls(&ca).expect("TLS postgres");
    let redis_server = RedisServer::start_tls(&ca).expect("TLS redis");
    let port = cluster.primary_port();

    let require = url("127.0.0.1", port, "payments", "sslmode=require");
    migrate(&require).await.expect("require needs no CA");
    assert!(session_encrypted(&require).await);
    // The default (prefer) encrypts too when the server offers TLS.
    assert!(session_encrypted(&url("127.0.0.1", port, "payments", "")).await);

    let plain = url("127.0.0.1", port, "payments", "sslmode=disable");
    let refused = shared::pgtls::PgTarget::parse(&plain)
        .expect("parses")
        .connect()
        .await
        .err()
        .map(|e| format!("{:#}", anyhow::Error::from(e)))
        .expect("a plain connection is refused");
    assert!(refused.contains("no encryption"), "{refused}");
    let refused = migrate(&plain)
        .await
        .expect_err("the writer cannot migrate in plain");
    assert!(refused.contains("no encryption"), "{refused}");

    // Redis: the TLS port does not speak plain RESP.
    let plain_redis = format!("redis://127.0.0.1:{}", redis_server.port());
    let attempt = tokio::time::timeout(Duration::from_secs(5), async {
        let client = redis::Client::open(plain_redis.as_str()).expect("url");
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    })
    .await;
    assert!(
        !matches!(attempt, Ok(Ok(_))),
        "a plain PING was answered: {attempt:?}"
    );
    // Without the CA file, the built-in roots refuse the test CA's certificate.
    let untrusted = tokio::time::timeout(Duration::from_secs(5), async {
        let client = RedisCa::default()
            .client(&redis_server.url())
            .expect("client");
        client.get_multiplexed_async_connection().await.map(drop)
    })
    .await;
    assert!(
        !matches!(untrusted, Ok(Ok(()))),
        "an untrusted certificate was accepted"
    );
}
