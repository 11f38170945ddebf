//! TLS to Postgres and Redis: with a TLS-only primary and replica (hostssl pg_hba) and
//! a TLS-only Redis from the test kit, a reader given `sslmode=verify-full` URLs and a
//! `rediss://` URL with the test CA serves pages from the replica and counts requests
//! in Redis; the servers refuse plain connections, and a host name the certificate does
//! not name is refused.

use std::time::{Duration, Instant};

use crate::support::{blocking, reader_args, verify_full_url, TestReader, World};
use serde_json::Value;
use shared::redistls::RedisCa;
use shared::testkit::TestCa;
use sqlx::Connection as _;

const LIMITS: &str = r#"
prefix = "tls:rl:"
# The per-pod fallback without Redis would allow a third of the keyed tier.
expected_pods = 3
redis_budget_ms = 500

[tiers.anonymous]
requests = 10000
burst = 10000
window_seconds = 60

[tiers.keyed]
requests = 3
burst = 3
window_seconds = 60

[[keys]]
key = "tls-key"
tier = "keyed"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_serves_from_a_tls_only_replica_and_limits_through_rediss() {
    let ca = blocking(TestCa::new).expect("test CA");
    let world = World::start_tls(4, &ca).await;
    world.wait_replica();
    let replica_port = world.pg.replica_port().expect("replica");
    let replica = verify_full_url(replica_port, &ca);
    let primary = verify_full_url(world.pg.primary_port(), &ca);
    let redis_url = world.redis.as_ref().expect("redis").url();
    assert!(redis_url.starts_with("rediss://"), "{redis_url}");
    let ca_file = ca.ca_file().display().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = dir.path().join("limits.toml");
    std::fs::write(&limits, LIMITS).expect("write limits");
    let limits = limits.display().to_string();

    let reader = TestReader::start(reader_args(&[
        "--replica-url",
        &replica,
        "--primary-url",
        &primary,
        "--redis-url",
        &redis_url,
        "--redis-ca-file",
        &ca_file,
        "--rate-limits",
        &limits,
    ]))
    .await;
    reader.wait_tip(world.latest()).await;

    // Both sources reachable over verified TLS (a first probe may time out on a busy
    // machine: the next poll opens a new connection).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = reader.json("/health/ready").await;
        let sources = ready["sources"].as_array().expect("sources");
        assert_eq!(sources.len(), 2, "{ready}");
        if sources.iter().all(|s| s["reachable"] == Value::Bool(true)) {
            break;
        }
        assert!(Instant::now() < deadline, "{ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let records = reader.walk("/payments?limit=50").await;
    let want = world
        .records_through(world.latest())
        .into_iter()
        .filter(|r| r.successful())
        .count();
    assert_eq!(records.len(), want);
    assert!(!records.is_empty());

    // Three keyed requests pass and the fourth is refused: only decisions made in Redis
    // allow three (the per-pod fallback allows one).
    let keyed = [("x-api-key", "tls-key")];
    for n in 1..=3 {
        let r = reader.get_with("/payments?limit=1", &keyed).await;
        assert_eq!(r.status(), 200, "keyed request {n}");
    }
    let r = reader.get_with("/payments?limit=1", &keyed).await;
    assert_eq!(r.status(), 429);
    let client = RedisCa::load(Some(ca.ca_file()))
        .expect("CA")
        .client(&redis_url)
        .expect("rediss client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("TLS connection to redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("tls:rl:*")
        .query_async(&mut conn)
        .await
        .expect("keys");
    assert!(!keys.is_empty(), "the requests are counted in Redis");

    // The servers speak TLS only, and the name is checked.
    let plain = format!("postgres://postgres@127.0.0.1:{replica_port}/payments?sslmode=disable");
    let refused = sqlx::PgConnection::connect(&plain)
        .await
        .expect_err("a plain connection is refused")
        .to_string();
    assert!(refused.contains("no encryption"), "{refused}");
    let wrong_name = replica.replace("localhost", "127.0.0.1");
    let refused = sqlx::PgConnection::connect(&wrong_name)
        .await
        .expect_err("a certificate for another name is refused")
        .to_string();
    assert!(refused.contains("not valid for name"), "{refused}");
    let port = world.redis.as_ref().expect("redis").port();
    let attempt = tokio::time::timeout(Duration::from_secs(5), async move {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url");
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    })
    .await;
    assert!(
        !matches!(attempt, Ok(Ok(_))),
        "a plain PING was answered: {attempt:?}"
    );

    reader.stop().await;
    world.stop().await;
}
