//! Replica handling: a lagging replica (WAL replay paused) is skipped for the primary
//! fallback; with no fresh source at all requests get 503 stale_history; a replica
//! killed under traffic fails no request while the primary remains, and is used again
//! once it is back; a busy replica (pool exhausted, too many connections, recovery
//! conflicts) is retried elsewhere without being marked down, and its tip probe (on a
//! connection of its own) keeps working; a history that goes backwards (a restore) is
//! followed, with nothing served from the old one, and never fails readiness.

use std::time::{Duration, Instant};

use crate::support::{blocking, reader_args, TestReader, World, FIRST};
use serde_json::Value;

async fn latest_ledger(reader: &TestReader, path: &str) -> (u16, Option<u32>) {
    let r = reader.get(path).await;
    let tip = r
        .headers()
        .get("latest-ledger")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (r.status().as_u16(), tip)
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_replica_is_avoided_and_all_stale_is_503() {
    let world = World::start(5, true).await;
    world.wait_replica();
    let redis = world.redis.as_ref().expect("redis").url();
    let replica = world.pg.replica_url().expect("replica");
    // With the primary as fallback.
    let with_primary = TestReader::over(&world, &["--max-lag-ledgers", "1"]).await;
    // Replica only: the newest tip comes from the writer's Redis announcement.
    let replica_only = TestReader::start(reader_args(&[
        "--replica-url",
        &replica,
        "--redis-url",
        &redis,
        "--max-lag-ledgers",
        "1",
    ]))
    .await;
    replica_only.wait_tip(world.latest()).await;

    let port = world.pg.replica_port().expect("replica port");
    blocking(|| {
        world
            .pg
            .psql(port, "payments", "SELECT pg_wal_replay_pause()")
    })
    .expect("pause");
    let mut tip = 0;
    for _ in 0..3 {
        tip = world.close_next().await;
    }

    // The lagging replica is skipped: answers come from the primary, at the new tip.
    eventually("primary fallback serves the new tip", async || {
        latest_ledger(&with_primary, "/payments?order=desc").await == (200, Some(tip))
    })
    .await;
    let page = with_primary
        .json("/payments?order=desc&limit=200&include_failed=true")
        .await;
    let newest: i64 = page["_embedded"]["records"][0]["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!((newest >> 32) as u32 <= tip);
    let metrics = with_primary
        .get("/metrics")
        .await
        .text()
        .await
        .expect("metrics");
    assert!(with_primary.state().sources.fallbacks() > 0);
    assert!(
        metric(&metrics, "reader_primary_fallbacks_total") > 0.0,
        "{metrics}"
    );
    assert!(metrics.contains("reader_source_lag_ledgers{source=\"replica-0\"}"));
    assert_eq!(with_primary.get("/health/ready").await.status(), 200);

    // Without a fallback, every source is stale: 503 stale_history. Readiness holds
    // (reporting it): a stale history is the same on every pod, and failing readiness
    // would take the whole fleet out at once.
    eventually("stale history", async || {
        replica_only.get("/payments").await.status() == 503
    })
    .await;
    let r = replica_only.get("/payments").await;
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    assert!(r.headers().contains_key("retry-after"));
    let doc: Value = r.json().await.expect("problem");
    assert_eq!(
        doc["type"],
        "https://stellar.org/horizon-errors/stale_history"
    );
    assert_eq!(doc["extras"]["newest_ledger"], tip);
    let ready = replica_only.get("/health/ready").await;
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.expect("json");
    assert_eq!(ready["status"], "degraded");
    assert_eq!(ready["sources"][0]["lag"], 3);
    assert_eq!(replica_only.get("/health").await.status(), 200);

    // Replay resumes: the replica serves again.
    blocking(|| {
        world
            .pg
            .psql(port, "payments", "SELECT pg_wal_replay_resume()")
    })
    .expect("resume");
    eventually("replica fresh again", async || {
        latest_ledger(&replica_only, "/payments").await == (200, Some(tip))
    })
    .await;
    assert_eq!(replica_only.get("/health/ready").await.status(), 200);

    with_primary.stop().await;
    replica_only.stop().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_killed_under_traffic_fails_no_request() {
    let mut world = World::start(6, false).await;
    world.wait_replica();
    let reader = TestReader::over(&world, &[]).await;
    let ids: Vec<i64> = world
        .records_through(world.latest())
        .iter()
        .map(|r| r.id.to_i64())
        .collect();

    // Sequential uncached requests (each cursor is a distinct request) on two tasks.
    let traffic = |offset: usize| {
        let client = reader.client.clone();
        let base = reader.base.clone();
        let ids = ids.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..400 {
                let cursor = ids[(i * 7 + offset) % ids.len()];
                let r = client
                    .get(format!(
                        "{base}/payments?cursor={cursor}&limit={}",
                        1 + i % 50
                    ))
                    .send()
                    .await
                    .expect("request");
                statuses.push(r.status().as_u16());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            statuses
        })
    };
    let a = traffic(0);
    let b = traffic(3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocking(|| world.pg.kill_replica()).expect("kill replica");
    let statuses: Vec<u16> = [a.await.expect("task"), b.await.expect("task")].concat();
    let failed: Vec<&u16> = statuses.iter().filter(|s| **s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        statuses.len()
    );
    let overview = reader.state().sources.overview();
    assert!(
        !overview.sources[0].reachable,
        "the dead replica is marked down"
    );

    // Back again: used again.
    blocking(|| world.pg.start_replica()).expect("restart replica");
    eventually("replica usable again", async || {
        reader.state().sources.overview().sources[0].usable
    })
    .await;
    assert!(
        reader.state().sources.fallbacks() > 0,
        "the primary took over"
    );
    let before = reader.state().sources.fallbacks();
    for id in ids.iter().take(20) {
        assert_eq!(
            reader.get(&format!("/payments?cursor={id}")).await.status(),
            200
        );
    }
    assert_eq!(
        reader.state().sources.fallbacks(),
        before,
        "served by the replica again"
    );
    reader.stop().await;
    world.stop().await;
}

/// The replica's entry in `/health/ready`.
async fn replica_report(reader: &TestReader) -> Value {
    let ready: Value = reader
        .get("/health/ready")
        .await
        .json()
        .await
        .expect("json");
    ready["sources"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "replica-0").cloned())
        .expect("replica-0 reported")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_replica_is_not_a_dead_one() {
    use reader::sources::{classify, Failure};

    let world = World::start(3, false).await;
    world.wait_replica();

    // Real errors raised by Postgres: busy ones keep the source, connection ones not.
    let primary = sqlx::PgPool::connect(&world.pg.primary_url())
        .await
        .expect("connect");
    let cases = [
        (
            "40001",
            "canceling statement due to conflict with recovery",
            Some(Failure::Busy("recovery_conflict")),
        ),
        (
            "40P01",
            "canceling statement due to conflict with recovery",
            Some(Failure::Busy("recovery_conflict")),
        ),
        (
            "53300",
            "sorry, too many clients already",
            Some(Failure::Busy("too_many_connections")),
        ),
        ("08006", "connection failure", Some(Failure::Down)),
        (
            "57P01",
            "terminating connection due to administrator command",
            Some(Failure::Down),
        ),
        ("22023", "invalid parameter value", None),
    ];
    for (code, message, expected) in cases {
        let sql =
            format!("DO $$ BEGIN RAISE EXCEPTION '{message}' USING ERRCODE = '{code}'; END $$");
        let error = sqlx::query(&sql)
            .execute(&primary)
            .await
            .expect_err("raises");
        assert_eq!(classify(&error), expected, "{code} {message}");
    }
    assert_eq!(
        classify(&sqlx::Error::PoolTimedOut),
        Some(Failure::Busy("pool_timeout"))
    );

    // One connection per pool, and the test holds the replica's: its pool is saturated.
    let reader = TestReader::over(
        &world,
        &["--pool-size", "1", "--statement-timeout-ms", "500"],
    )
    .await;
    let replica = reader
        .state()
        .sources
        .all()
        .iter()
        .find(|s| s.name == "replica-0")
        .cloned()
        .expect("replica");
    let held = replica.pool.acquire().await.expect("the only connection");
    // Requests are answered (retried on the primary after the pool timeout) ...
    for limit in 5..8 {
        let path = format!("/payments?limit={limit}");
        assert_eq!(reader.get(&path).await.status(), 200, "{path}");
    }
    let metrics = reader.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metric(&metrics, "reader_source_busy_total") >= 3.0,
        "{metrics}"
    );
    // ... and the replica stays in rotation, its tip still probed on its own connection
    // while its pool is exhausted.
    let report = replica_report(&reader).await;
    assert_eq!(report["reachable"], true, "{report}");
    assert_eq!(report["usable"], true, "{report}");
    let tip = world.close_next().await;
    world.wait_replica();
    eventually(
        "the probe sees the new tip on the busy replica",
        async || {
            let report = replica_report(&reader).await;
            report["tip"] == tip && report["reachable"] == true
        },
    )
    .await;
    drop(held);
    reader.stop().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tip_that_goes_backwards_is_followed() {
    let mut world = World::start(10, true).await;
    world.wait_replica();
    let tip = world.latest();
    let redis = world.redis.as_ref().expect("redis").url();
    let replica = world.pg.replica_url().expect("replica");
    let both = TestReader::over(&world, &["--max-lag-ledgers", "2"]).await;
    let replica_only = TestReader::start(reader_args(&[
        "--replica-url",
        &replica,
        "--redis-url",
        &redis,
        "--max-lag-ledgers",
        "2",
    ]))
    .await;
    replica_only.wait_tip(tip).await;
    // Cached at the old tip.
    let newest_ledger = |page: &Value| {
        page["_embedded"]["records"][0]["id"]
            .as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .map(|id| (id >> 32) as u32)
    };
    let path = "/payments?order=desc&limit=5";
    assert_eq!(newest_ledger(&both.json(path).await), Some(tip));

    // A restore: the database goes back 5 ledgers (the replica follows), while the
    // writer's last announcement in Redis still says the old tip.
    world.stop_writer().await;
    let back = FIRST + 4;
    assert!(tip > back + 2);
    let sql = format!(
        "BEGIN; \
         DELETE FROM payments WHERE ledger_sequence > {back}; \
         DELETE FROM transactions WHERE ledger_sequence > {back}; \
         DELETE FROM ledgers WHERE sequence > {back}; \
         UPDATE ingest_cursor SET last_ledger = {back}; \
         COMMIT;"
    );
    let port = world.pg.primary_port();
    blocking(|| world.pg.psql(port, "payments", &sql)).expect("roll back");
    world.wait_replica();

    // Both readers follow the lower tip (one learns it from the primary, the other
    // from its replica going backwards), serve nothing cached under the old history,
    // and stay ready throughout.
    for reader in [&both, &replica_only] {
        eventually("the lower tip is served", async || {
            latest_ledger(reader, path).await == (200, Some(back))
        })
        .await;
        let root = reader.json("/").await;
        assert_eq!(root["history_latest_ledger"], back);
        assert_eq!(newest_ledger(&reader.json(path).await), Some(back));
        let ready = reader.get("/health/ready").await;
        assert_eq!(ready.status(), 200);
        let ready: Value = ready.json().await.expect("json");
        assert_eq!(ready["status"], "ready", "{ready}");
        let metrics = reader.get("/metrics").await.text().await.expect("metrics");
        assert!(
            metric(&metrics, "reader_tip_regressions_total") >= 1.0,
            "{metrics}"
        );
    }
    both.stop().await;
    replica_only.stop().await;
    world.stop().await;
}
