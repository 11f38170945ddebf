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
    for route in ["/operations/{id}", "/transactions/{hash}"] {
        for status in ["200", "304", "400", "404"] {
            assert!(
                doc["paths"][route]["get"]["responses"][status].is_object(),
                "{route} documents {status}"
            );
        }
    }

    // Browsers: any origin by default, preflights answered, headers readable, on
    // pages, problems and streams alike.
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
    };
    let origin = [("origin", "https://wallet.test")];
    for path in [
        "/payments?limit=2",
        "/payments?limit=0",
        "/ledgers/5/payments",
    ] {
        let r = reader.get_with(path, &origin).await;
        assert_eq!(
            header(&r, "access-control-allow-origin").as_deref(),
            Some("*"),
            "{path}"
        );
        let exposed = header(&r, "access-control-expose-headers").unwrap_or_default();
        for name in [
            "latest-ledger",
            "etag",
            "ratelimit",
            "ratelimit-policy",
            "retry-after",
        ] {
            assert!(exposed.contains(name), "{path} exposes {name}: {exposed}");
        }
    }
    // `*` answers every origin alike: the page varies on what the route reads, not on
    // `Origin`; and without an `Origin` the same headers come back.
    let r = reader.get_with("/payments?limit=2", &origin).await;
    assert_eq!(
        header(&r, "vary").as_deref(),
        Some("accept, accept-encoding")
    );
    let r = reader.get_with("/payments?limit=2", &[]).await;
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    let preflight = reader
        .client
        .request(
            reqwest::Method::OPTIONS,
            format!(
                "{}/accounts/GAHK7EEG2WWHVKDNT4CEQFZGKF2LGDSW2IVM4S5DP42RBW3K6BTODB4A/payments",
                reader.base
            ),
        )
        .header("origin", "https://wallet.test")
        .header("access-control-request-method", "GET")
        .header(
            "access-control-request-headers",
            "if-none-match, last-event-id",
        )
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        header(&preflight, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert!(header(&preflight, "access-control-allow-methods")
        .unwrap_or_default()
        .contains("get"));
    let allowed = header(&preflight, "access-control-allow-headers").unwrap_or_default();
    assert!(
        allowed.contains("if-none-match") && allowed.contains("last-event-id"),
        "{allowed}"
    );
    let stream = reader
        .client
        .get(format!("{}/payments?cursor=now", reader.base))
        .header("origin", "https://wallet.test")
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    assert_eq!(
        header(&stream, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    drop(stream);
    reader.stop().await;

    // A configured list of origins: only those.
    let replica = world.pg.replica_url().expect("replica");
    let listed = TestReader::start(reader_args(&[
        "--replica-url",
        &replica,
        "--cors-allow-origin",
        "https://wallet.test,https://explorer.test",
    ]))
    .await;
    listed.wait_tip(world.latest()).await;
    let r = listed.get_with("/payments?limit=1", &origin).await;
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some("https://wallet.test")
    );
    let vary: Vec<String> = r
        .headers()
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
        .collect();
    // One Vary header: the route's fields and the CORS layer's, each once.
    assert_eq!(vary.len(), 1, "{vary:?}");
    let fields: Vec<&str> = vary[0].split(',').map(str::trim).collect();
    for name in ["accept", "accept-encoding", "origin"] {
        assert_eq!(
            fields.iter().filter(|f| **f == name).count(),
            1,
            "{name} in {vary:?}"
        );
    }
    let r = listed
        .get_with("/payments?limit=1", &[("origin", "https://evil.test")])
        .await;
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    listed.stop().await;
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
    // The limit is one for the process, not one per route.
    for other in ["/constant", "/ledgers/1000001/payments", "/"] {
        assert_eq!(reader.get(other).await.status(), 503, "{other}");
    }
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
    // Then the listener is gone: a new connection is refused. (A fresh client: a
    // pooled keep-alive connection would test the old connection, not the listener.)
    let fresh = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    assert!(fresh.get(format!("{base}/health")).send().await.is_err());
    world.stop().await;
}
