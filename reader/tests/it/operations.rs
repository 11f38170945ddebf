//! Operations: health and readiness, metrics, the OpenAPI document, saturation and
//! statement timeouts as problem documents, and graceful shutdown.

use std::time::Duration;

use crate::support::{reader_args, TestReader, World};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_openapi() {
    let world = World::start(4, false).await;
    world.wait_replica();
    let reader = TestReader::over(&world, &[]).await;
    assert_eq!(reader.json("/health").await["status"], "ok");
    let ready = reader.json("/health/ready").await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["sources"].as_array().map(Vec::len), Some(2));

    reader.json("/payments?limit=2").await;
    reader.json("/payments?limit=2").await;
    let _ = reader.get("/payments?limit=0").await;
    let metrics = reader.get("/metrics").await.text().await.expect("metrics");
    for needle in [
        "reader_requests_total{route=\"/payments\",status=\"200\"}",
        "reader_requests_total{route=\"/payments\",status=\"400\"}",
        "reader_request_duration_seconds_bucket{route=\"/payments\"",
        "reader_cache_total{outcome=\"hit\"}",
        "reader_cache_total{outcome=\"miss\"}",
        "reader_source_lag_ledgers{source=\"replica-0\"}",
        "reader_source_up{source=\"primary\"}",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }

    let doc = reader.json("/openapi.json").await;
    assert!(doc["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1")));
    let paths = doc["paths"].as_object().expect("paths");
    for route in [
        "/",
        "/payments",
        "/accounts/{account_id}/payments",
        "/ledgers/{sequence}/payments",
        "/transactions/{hash}/payments",
        "/health",
        "/health/ready",
    ] {
        assert!(paths.contains_key(route), "{route} documented");
    }
    for route in [
        "/payments",
        "/accounts/{account_id}/payments",
        "/ledgers/{sequence}/payments",
        "/transactions/{hash}/payments",
    ] {
        let op = &doc["paths"][route]["get"];
        let names: Vec<&str> = op["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        for p in [
            "cursor",
            "order",
            "limit",
            "include_failed",
            "join",
            "asset",
            "from_time",
            "to_time",
        ] {
            assert!(names.contains(&p), "{route} documents {p}");
        }
        for status in ["200", "304", "400", "503"] {
            assert!(
                op["responses"][status].is_object(),
                "{route} documents {status}"
            );
        }
    }
    assert!(
        doc["paths"]["/accounts/{account_id}/payments"]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .any(|p| p["name"] == "direction")
    );
    assert!(doc["components"]["schemas"]["ProblemDocument"].is_object());
    reader.stop().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturation_and_statement_timeouts_are_problems() {
    let world = World::start(4, false).await;
    let primary = world.pg.primary_url();
    let reader = TestReader::start(reader_args(&[
        "--primary-url",
        &primary,
        "--max-in-flight",
        "1",
        "--statement-timeout-ms",
        "1500",
    ]))
    .await;
    reader.wait_tip(world.latest()).await;

    // Hold a lock every page query waits on.
    let pool = sqlx::PgPool::connect(&primary).await.expect("connect");
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE payments IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .expect("lock");
    let blocked = {
        let client = reader.client.clone();
        let url = format!("{}/payments?limit=3", reader.base);
        tokio::spawn(async move { client.get(url).send().await.expect("request") })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The only slot is taken: shed at once.
    let shed = reader.get("/payments?limit=4").await;
    assert_eq!(shed.status(), 503);
    let doc: Value = shed.json().await.expect("problem");
    assert_eq!(
        doc["type"],
        "https://stellar.org/horizon-errors/service_unavailable"
    );
    // The blocked query hits the statement timeout: 504, a problem document.
    let timed_out = blocked.await.expect("task");
    assert_eq!(timed_out.status(), 504);
    let doc: Value = timed_out.json().await.expect("problem");
    assert_eq!(doc["type"], "https://stellar.org/horizon-errors/timeout");
    tx.rollback().await.expect("unlock");
    assert_eq!(reader.get("/payments?limit=3").await.status(), 200);
    reader.stop().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_fails_readiness_first() {
    let world = World::start(4, false).await;
    world.wait_replica();
    let replica = world.pg.replica_url().expect("replica");
    let reader = TestReader::start(reader_args(&[
        "--replica-url",
        &replica,
        "--shutdown-drain-ms",
        "1500",
    ]))
    .await;
    reader.wait_tip(world.latest()).await;
    let client = reader.client.clone();
    let base = reader.base.clone();
    let state = reader.state().clone();
    let stopping = tokio::spawn(reader.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Draining: readiness fails, requests are still served.
    assert!(!state.ready.load(std::sync::atomic::Ordering::Relaxed));
    let ready = client
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .expect("request");
    assert_eq!(ready.status(), 503);
    let in_flight: Vec<_> = (0..10)
        .map(|i| {
            let client = client.clone();
            let url = format!("{base}/payments?limit={}", i + 1);
            tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    for r in in_flight {
        assert_eq!(r.await.expect("task").expect("served"), 200);
    }
    stopping.await.expect("stopped");
    // Then the listener is gone.
    assert!(client.get(format!("{base}/health")).send().await.is_err());
    world.stop().await;
}
