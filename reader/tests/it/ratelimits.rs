//! Rate limits and quotas in real Redis, shared by three readers: exact request limits
//! (N allowed, N+1 refused) across pods, byte quotas, credits, window reset, trusted
//! proxies, Cloudflare's ranges and spoofed forwarding headers, IPv6 clients per /64,
//! unknown keys, Redis killed and restarted in
//! the middle (fail open per pod, then back to Redis), and concurrent decisions sharing
//! Redis round trips while staying exact across pods (and failing open together).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::support::{blocking, TestReader, World};
use serde_json::Value;

const LIMITS: &str = r#"
prefix = "test:rl:"
expected_pods = 3
redis_budget_ms = 500
trusted_proxies = ["127.0.0.2/32"]
# Stands in for Cloudflare's edge.
cloudflare_ranges = ["127.0.0.4/32"]

[tiers.anonymous]
requests = 6
burst = 6
window_seconds = 60

[tiers.partner]
requests = 1000
burst = 1000
window_seconds = 60
credits = 12

[tiers.metered]
requests = 1000
burst = 1000
window_seconds = 60
bytes = 3000

[tiers.brief]
requests = 2
burst = 2
window_seconds = 2

[tiers.spaced]
requests = 60
burst = 5
window_seconds = 60

[costs]
default = 1
large_page_limit = 50
large_page = 5
stream = 20

[tiers.crowd]
requests = 100
burst = 100
window_seconds = 86400

[[keys]]
key = "partner-key"
tier = "partner"

[[keys]]
key = "crowd-key"
tier = "crowd"

[[keys]]
key = "metered-key"
tier = "metered"

[[keys]]
key = "brief-key"
tier = "brief"

[[keys]]
key = "spaced-key"
tier = "spaced"

[[keys]]
key = "stream-metered-key"
tier = "metered"
"#;

/// A client whose connections come from `local` (any 127.0.0.0/8 address).
fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(local.parse::<IpAddr>().expect("ip"))
        .build()
        .expect("client")
}

async fn get(
    client: &reqwest::Client,
    reader: &TestReader,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut r = client.get(format!("{}{path}", reader.base));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.expect("request")
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A parameter of the first (`requests`) item of a RateLimit or RateLimit-Policy header.
fn param(value: &str, name: &str) -> u64 {
    value
        .split(',')
        .next()
        .unwrap_or_default()
        .split(';')
        .find_map(|p| p.trim().strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} in {value}"))
}

async fn readers(world: &World, limits: &str, n: usize) -> Vec<TestReader> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(TestReader::over(world, &["--rate-limits", limits]).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_shared_exactly_by_three_readers() {
    let world = World::start(3, true).await;
    world.wait_replica();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("limits.toml");
    std::fs::write(&path, LIMITS).expect("write");
    let limits = path.display().to_string();
    let pods = readers(&world, &limits, 3).await;
    let proxy = client_from("127.0.0.2");
    let stranger = client_from("127.0.0.3");

    // Through the trusted proxy: the forwarded address is the client. Six requests
    // spread over three pods are allowed, the seventh is refused, wherever it lands.
    let xff = [("x-forwarded-for", "198.51.100.1")];
    for i in 0..6 {
        let r = get(&proxy, &pods[i % 3], "/payments", &xff).await;
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(header(&r, "ratelimit-policy"), "\"requests\";q=6;w=60");
        assert!(
            header(&r, "ratelimit").starts_with(&format!("\"requests\";r={};t=", 5 - i)),
            "{}",
            header(&r, "ratelimit")
        );
    }
    for pod in &pods {
        let r = get(&proxy, pod, "/payments", &xff).await;
        assert_eq!(r.status(), 429);
        assert!(header(&r, "retry-after")
            .parse::<u64>()
            .is_ok_and(|s| s >= 1));
        assert_eq!(header(&r, "content-type"), "application/problem+json");
        assert!(header(&r, "ratelimit").starts_with("\"requests\";r=0;"));
        let doc: Value = r.json().await.expect("problem");
        assert_eq!(
            doc["type"],
            "https://stellar.org/horizon-errors/rate_limit_exceeded"
        );
        assert_eq!(doc["extras"]["policy"], "requests");
    }
    // Another forwarded client has its own allowance.
    let r = get(
        &proxy,
        &pods[0],
        "/payments",
        &[("x-forwarded-for", "203.0.113.5, 198.51.100.2")],
    )
    .await;
    assert_eq!(r.status(), 200);
    // Cloudflare's header is believed when the hop before the proxy is Cloudflare...
    let r = get(
        &proxy,
        &pods[1],
        "/payments",
        &[
            ("x-forwarded-for", "127.0.0.4"),
            ("cf-connecting-ip", "198.51.100.1"),
        ],
    )
    .await;
    assert_eq!(r.status(), 429, "the same client as before");
    // ... or when Cloudflare connects itself.
    let edge = client_from("127.0.0.4");
    let r = get(
        &edge,
        &pods[2],
        "/payments",
        &[("cf-connecting-ip", "198.51.100.1")],
    )
    .await;
    assert_eq!(r.status(), 429, "the same client as before");
    // Not from the proxy's own say-so, not with a Cloudflare address forged to the
    // left of the real hop, and never from a stranger: each is a client of its own.
    let r = get(
        &proxy,
        &pods[0],
        "/payments",
        &[("cf-connecting-ip", "198.51.100.1")],
    )
    .await;
    assert_eq!(r.status(), 200, "the proxy is not Cloudflare");
    let r = get(
        &proxy,
        &pods[0],
        "/payments",
        &[
            ("x-forwarded-for", "127.0.0.4, 192.0.2.78"),
            ("cf-connecting-ip", "198.51.100.1"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200, "the hop is 192.0.2.78, not Cloudflare");
    let other = client_from("127.0.0.5");
    let r = get(
        &other,
        &pods[1],
        "/payments",
        &[("cf-connecting-ip", "198.51.100.1")],
    )
    .await;
    assert_eq!(r.status(), 200, "a stranger's CF-Connecting-IP is ignored");
    // A spoofed X-Forwarded-For sent through the proxy: the client's own entries are
    // to the left of what the proxy appended, and ignored.
    let r = get(
        &proxy,
        &pods[2],
        "/payments",
        &[("x-forwarded-for", "192.0.2.200, 198.51.100.1")],
    )
    .await;
    assert_eq!(
        r.status(),
        429,
        "the right-most untrusted hop is the client"
    );

    // IPv6 clients are limited per /64: new interface ids buy nothing.
    for i in 0..6 {
        let ip = format!("2001:db8:1:2::{:x}", i + 1);
        let r = get(
            &proxy,
            &pods[i % 3],
            "/payments",
            &[("x-forwarded-for", &ip)],
        )
        .await;
        assert_eq!(r.status(), 200, "request {i}");
    }
    let r = get(
        &proxy,
        &pods[0],
        "/payments",
        &[("x-forwarded-for", "2001:db8:1:2:ffff:ffff:ffff:ffff")],
    )
    .await;
    assert_eq!(r.status(), 429, "the same /64");
    let r = get(
        &proxy,
        &pods[0],
        "/payments",
        &[("x-forwarded-for", "2001:db8:1:3::1")],
    )
    .await;
    assert_eq!(r.status(), 200, "another /64");

    // From an untrusted peer, X-Forwarded-For is ignored: changing it buys nothing.
    for i in 0..6 {
        let spoof = format!("192.0.2.{i}");
        let r = get(
            &stranger,
            &pods[i % 3],
            "/payments",
            &[("x-forwarded-for", &spoof)],
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    let r = get(
        &stranger,
        &pods[2],
        "/payments",
        &[("x-forwarded-for", "192.0.2.99")],
    )
    .await;
    assert_eq!(
        r.status(),
        429,
        "a spoofed header does not make a new client"
    );

    // Keys: unknown is 401; a known key gets its tier, by header or parameter.
    let r = get(&stranger, &pods[0], "/payments", &[("x-api-key", "guess")]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(header(&r, "content-type"), "application/problem+json");
    // Credits: 12 per window; a page above 50 records costs 5, a small one 1.
    let partner = [("x-api-key", "partner-key")];
    // Priced from the decoded parameter: `%32%30%30` is 200, a large page.
    assert_eq!(
        get(&stranger, &pods[0], "/payments?limit=%32%30%30", &partner)
            .await
            .status(),
        200
    );
    assert_eq!(
        get(&stranger, &pods[1], "/payments?limit=100", &partner)
            .await
            .status(),
        200
    );
    let r = get(&stranger, &pods[2], "/payments?limit=200", &partner).await;
    assert_eq!(
        r.status(),
        429,
        "10 of 12 credits spent; a large page costs 5"
    );
    let doc: Value = r.json().await.expect("problem");
    assert_eq!(doc["extras"]["policy"], "credits");
    let r = get(
        &stranger,
        &pods[2],
        "/payments?limit=10&api_key=partner-key",
        &[],
    )
    .await;
    assert_eq!(r.status(), 200, "a small page still fits");
    assert!(
        header(&r, "ratelimit").contains("\"credits\";r=1;"),
        "{}",
        header(&r, "ratelimit")
    );

    // Bytes: counted on real bodies; once the quota is used up, refused.
    let metered = [("x-api-key", "metered-key")];
    let r = get(&stranger, &pods[0], "/payments?limit=20", &metered).await;
    assert_eq!(r.status(), 200);
    let size = r.bytes().await.expect("body").len();
    assert!(
        size > 3000,
        "one page is larger than the quota ({size} bytes)"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&stranger, &pods[1], "/payments?limit=1", &metered).await;
        if r.status() == 429 {
            let doc: Value = r.json().await.expect("problem");
            assert_eq!(doc["extras"]["policy"], "bytes");
            break;
        }
        assert!(Instant::now() < deadline, "the byte quota never filled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Window reset: 2 requests per 2 s.
    let brief = [("x-api-key", "brief-key")];
    assert_eq!(get(&stranger, &pods[0], "/", &brief).await.status(), 200);
    assert_eq!(get(&stranger, &pods[1], "/", &brief).await.status(), 200);
    let r = get(&stranger, &pods[2], "/", &brief).await;
    assert_eq!(r.status(), 429);
    let wait: u64 = header(&r, "retry-after").parse().expect("retry-after");
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(
        get(&stranger, &pods[2], "/", &brief).await.status(),
        200,
        "allowed again"
    );

    // RateLimit is consistent with the RateLimit-Policy it comes with: a burst of 5
    // refilled in 5 s (60 a minute), and each request spends one of the q advertised.
    let spaced = [("x-api-key", "spaced-key")];
    for n in 1..=3u64 {
        let r = get(&stranger, &pods[n as usize % 3], "/", &spaced).await;
        assert_eq!(r.status(), 200);
        let policy = header(&r, "ratelimit-policy");
        let state = header(&r, "ratelimit");
        let (q, w) = (param(&policy, "q"), param(&policy, "w"));
        let (left, reset) = (param(&state, "r"), param(&state, "t"));
        assert_eq!((q, w), (5, 5), "{policy}");
        assert_eq!(q - left, n, "{policy} / {state}");
        assert!(reset <= w, "{policy} / {state}");
    }

    // Idle keys vanish: every key has a TTL.
    let redis = redis::Client::open(world.redis.as_ref().expect("redis").url()).expect("client");
    let mut conn = redis
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("test:rl:*")
        .query_async(&mut conn)
        .await
        .expect("keys");
    assert!(!keys.is_empty());
    for key in keys {
        assert!(key.contains('{') && key.contains('}'), "hash-tagged: {key}");
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("ttl");
        assert!(ttl > 0, "{key} has a TTL");
    }

    for pod in pods {
        pod.stop().await;
    }
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_open_per_pod_and_recovers() {
    let mut world = World::start(3, true).await;
    world.wait_replica();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("limits.toml");
    std::fs::write(
        &path,
        LIMITS
            .replace("requests = 6\nburst = 6", "requests = 4\nburst = 4")
            .replace("expected_pods = 3", "expected_pods = 2"),
    )
    .expect("write");
    let limits = path.display().to_string();
    let pod = readers(&world, &limits, 1).await.remove(0);
    let proxy = client_from("127.0.0.2");
    let as_client = |ip: &'static str| [("x-forwarded-for", ip)];

    assert_eq!(
        get(&proxy, &pod, "/payments", &as_client("198.51.100.10"))
            .await
            .status(),
        200
    );
    blocking(|| world.redis.as_mut().expect("redis").kill()).expect("kill redis");

    // Fail open: served, limited per pod (4 over 2 pods = 2 here).
    let statuses: Vec<u16> = {
        let mut s = Vec::new();
        for _ in 0..4 {
            s.push(
                get(&proxy, &pod, "/payments", &as_client("198.51.100.11"))
                    .await
                    .status()
                    .as_u16(),
            );
        }
        s
    };
    assert_eq!(statuses, vec![200, 200, 429, 429]);
    assert_eq!(pod.get("/health").await.status(), 200);
    let ready = pod.get("/health/ready").await;
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.expect("json");
    assert_eq!(ready["rate_limiter"], "degraded");
    let metrics = pod.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics.contains("reader_ratelimit_decisions_total{backend=\"local\""),
        "{metrics}"
    );

    // Redis returns: decisions go back to it (4 allowed, not 2).
    blocking(|| world.redis.as_mut().expect("redis").restart()).expect("restart redis");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let _ = get(&proxy, &pod, "/", &as_client("198.51.100.99")).await;
        let ready: Value = pod.get("/health/ready").await.json().await.expect("json");
        if ready["rate_limiter"] == "ok" {
            break;
        }
        assert!(Instant::now() < deadline, "never back on Redis");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut allowed = 0;
    for _ in 0..5 {
        if get(&proxy, &pod, "/payments", &as_client("198.51.100.12"))
            .await
            .status()
            == 200
        {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 4, "the shared limit again");
    pod.stop().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_clients_batched_locally_stay_within_their_limit() {
    let world = World::start(3, true).await;
    world.wait_replica();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("limits.toml");
    std::fs::write(
        &path,
        format!(
            "hot_key_sync_ms = 50\nhot_key_threshold = 20\n{}",
            LIMITS
                .replace("requests = 6\nburst = 6", "requests = 300\nburst = 300")
                .replace("expected_pods = 3", "expected_pods = 1")
        ),
    )
    .expect("write");
    let limits = path.display().to_string();
    let pod = readers(&world, &limits, 1).await.remove(0);
    let proxy = client_from("127.0.0.2");
    let started = Instant::now();
    let mut allowed = 0u32;
    for _ in 0..400 {
        let r = get(
            &proxy,
            &pod,
            "/constant",
            &[("x-forwarded-for", "198.51.100.50")],
        )
        .await;
        if r.status() == 200 {
            allowed += 1;
        }
    }
    // 300 at once, plus what the rate (5/s) refills while the loop runs.
    let refill = (started.elapsed().as_secs_f64() * 5.0).ceil() as u32;
    assert!(
        (300..=300 + refill + 1).contains(&allowed),
        "{allowed} allowed (refill {refill})"
    );
    let metrics = pod.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics.contains("reader_ratelimit_batched_total"),
        "decisions were batched"
    );
    pod.stop().await;
    world.stop().await;
}

async fn open_stream(
    client: &reqwest::Client,
    reader: &TestReader,
    path: &str,
    key: Option<&str>,
) -> reqwest::Response {
    let mut headers = vec![("accept", "text/event-stream")];
    if let Some(key) = key {
        headers.push(("x-api-key", key));
    }
    get(client, reader, path, &headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_capped_per_client_and_their_bytes_count() {
    let world = World::start(3, true).await;
    world.wait_replica();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("limits.toml");
    std::fs::write(&path, format!("max_streams_per_client = 2\n{LIMITS}")).expect("write");
    let limits = path.display().to_string();
    let pods = readers(&world, &limits, 2).await;
    let pod = &pods[0];
    let client = client_from("127.0.0.1");

    // Two streams at the tip, on two pods, are open (each has sent its `open` event)...
    let mut first = open_stream(
        &client,
        &pods[0],
        "/payments?cursor=now",
        Some("spaced-key"),
    )
    .await;
    assert_eq!(first.status(), 200);
    assert!(first.chunk().await.expect("chunk").is_some());
    let mut second = open_stream(
        &client,
        &pods[1],
        "/payments?cursor=now",
        Some("spaced-key"),
    )
    .await;
    assert_eq!(second.status(), 200);
    assert!(second.chunk().await.expect("chunk").is_some());
    // ... a third of the same client is refused on either pod (the cap is fleet-wide),
    // another client's is not.
    for pod in &pods {
        let r = open_stream(&client, pod, "/payments?cursor=now", Some("spaced-key")).await;
        assert_eq!(r.status(), 429);
        let doc: Value = r.json().await.expect("problem");
        assert_eq!(doc["extras"]["policy"], "streams");
    }
    // (From an address of its own: the readers' start-up polled `/` from 127.0.0.1, and
    // that anonymous budget is small.)
    let other_client = client_from("127.0.0.5");
    let mut other = open_stream(&other_client, &pods[1], "/payments?cursor=now", None).await;
    assert_eq!(other.status(), 200);
    assert!(other.chunk().await.expect("chunk").is_some());
    // Once one closes, its slot is free again, on any pod.
    drop(first);
    world.close_next().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let third = loop {
        let r = open_stream(
            &client,
            &pods[1],
            "/payments?cursor=now",
            Some("spaced-key"),
        )
        .await;
        if r.status() == 200 {
            break r;
        }
        assert_eq!(r.status(), 429);
        assert!(Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop((second, third, other));

    // A stream's bytes count against the byte quota (3000 bytes): a stream from the
    // start sends more than that, is ended, and the client is then refused.
    let mut streamed = open_stream(&client, pod, "/payments", Some("stream-metered-key")).await;
    assert_eq!(streamed.status(), 200);
    let mut sent = 0usize;
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(chunk) = streamed.chunk().await.expect("chunk") {
            sent += chunk.len();
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream never ended ({sent} bytes sent)");
    assert!(sent > 3000, "{sent} bytes");
    let r = get(
        &client,
        pod,
        "/payments?limit=1",
        &[("x-api-key", "stream-metered-key")],
    )
    .await;
    assert_eq!(r.status(), 429);
    let doc: Value = r.json().await.expect("problem");
    assert_eq!(doc["extras"]["policy"], "bytes");
    let metrics = pod.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics.contains("reader_ratelimit_streams_ended_total"),
        "{metrics}"
    );

    for pod in pods {
        pod.stop().await;
    }
    world.stop().await;
}

/// A TCP relay to `upstream` that holds every new connection for `delay` before
/// connecting it through (a slow TLS or Cluster handshake, on loopback), and that cuts
/// every relayed connection when `cut` is bumped.
async fn slow_relay(
    upstream: std::net::SocketAddr,
    delay: Duration,
) -> (std::net::SocketAddr, tokio::sync::watch::Sender<u32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let (cut, _) = tokio::sync::watch::channel(0u32);
    let cuts = cut.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let mut cut = cuts.subscribe();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = cut.changed() => {}
                }
            });
        }
    });
    (address, cut)
}

/// Of five quick requests to /constant, how many are allowed.
async fn allowed(client: &reqwest::Client, pod: &TestReader) -> usize {
    let mut n = 0;
    for _ in 0..5 {
        if get(client, pod, "/constant", &[]).await.status() == 200 {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_connect_does_not_leave_the_limiter_open() {
    let redis = blocking(shared::testkit::RedisServer::start).expect("redis");
    let upstream: std::net::SocketAddr = format!("127.0.0.1:{}", redis.port())
        .parse()
        .expect("address");
    // Connecting takes 500 ms, ten times the decision budget of 50 ms.
    let (relay, cut) = slow_relay(upstream, Duration::from_millis(500)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("limits.toml");
    std::fs::write(
        &path,
        LIMITS
            .replace("redis_budget_ms = 500", "redis_budget_ms = 50")
            .replace("requests = 6\nburst = 6", "requests = 4\nburst = 4")
            .replace("expected_pods = 3", "expected_pods = 2"),
    )
    .expect("write");
    let redis_url = format!("redis://{relay}");
    // No database is needed for /constant.
    let pod = TestReader::start(crate::support::reader_args(&[
        "--replica-url",
        "postgres://reader@127.0.0.1:1/none",
        "--rate-limits",
        &path.display().to_string(),
        "--rate-limit-redis-url",
        &redis_url,
    ]))
    .await;
    // The shared limit (4), not the per-pod fallback (4 over 2 pods = 2).
    assert_eq!(
        allowed(&client_from("127.0.0.6"), &pod).await,
        4,
        "decided by Redis"
    );
    let limiter_state = || async {
        let ready: Value = pod.get("/health/ready").await.json().await.expect("json");
        ready["rate_limiter"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(limiter_state().await, "ok");

    // The connection is lost: decisions fail open at once, and the reconnection (slow
    // again) happens in the background, after which Redis decides again.
    cut.send_modify(|n| *n += 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let probe = client_from("127.0.0.7");
    let _ = get(&probe, &pod, "/constant", &[]).await;
    assert_eq!(limiter_state().await, "degraded");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = get(&probe, &pod, "/constant", &[]).await;
        if limiter_state().await == "ok" {
            break;
        }
        assert!(Instant::now() < deadline, "never back on Redis");
    }
    assert_eq!(
        allowed(&client_from("127.0.0.8"), &pod).await,
        4,
        "decided by Redis again"
    );
    pod.stop().await;
    drop(redis);
}

/// `n` requests to `/constant` sent at once, spread over `pods`, with `headers`: each
/// response's status and `RateLimit` header.
async fn at_once(
    client: &reqwest::Client,
    pods: &[TestReader],
    n: usize,
    headers: &[(&str, &str)],
) -> Vec<(u16, String)> {
    let requests = (0..n).map(|i| async move {
        let r = get(client, &pods[i % pods.len()], "/constant", headers).await;
        (r.status().as_u16(), header(&r, "ratelimit"))
    });
    futures_util::future::join_all(requests).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_decisions_share_round_trips_and_stay_exact_across_readers() {
    let world = World::start(3, true).await;
    world.wait_replica();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("limits.toml");
    std::fs::write(&path, LIMITS).expect("write");
    let limits = path.display().to_string();
    let pods = readers(&world, &limits, 2).await;
    let client = reqwest::Client::new();

    // 300 requests of one client at once over two pods, against a burst of 100 (the
    // day-long window refills nothing meanwhile): exactly 100 allowed, each told a
    // different number of requests left (99 down to 0), so each waiter got its own
    // decision, taken in order.
    let answers = at_once(&client, &pods, 300, &[("x-api-key", "crowd-key")]).await;
    let allowed: Vec<&(u16, String)> = answers.iter().filter(|(s, _)| *s == 200).collect();
    let refused = answers.iter().filter(|(s, _)| *s == 429).count();
    assert_eq!((allowed.len(), refused), (100, 200), "{answers:?}");
    let mut left: Vec<u64> = allowed.iter().map(|(_, h)| param(h, "r")).collect();
    left.sort_unstable();
    assert_eq!(left, (0..100).collect::<Vec<u64>>());

    // The pods sent fewer round trips than decisions: concurrent decisions were batched.
    let mut trips = 0;
    let mut decisions = 0;
    for pod in &pods {
        let limiter = pod.state().limiter.as_ref().expect("limiter");
        let (t, d) = limiter.decision_round_trips();
        assert!(d >= 150, "each pod decided its 150 requests in Redis: {d}");
        trips += t;
        decisions += d;
    }
    assert!(
        trips < decisions,
        "{decisions} decisions in {trips} round trips"
    );
    for pod in pods {
        pod.stop().await;
    }
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_decisions_fail_open_together_when_redis_dies() {
    let mut world = World::start(3, true).await;
    world.wait_replica();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("limits.toml");
    // The crowd's burst of 100 over 4 pods: 25 per pod while Redis is away.
    std::fs::write(
        &path,
        LIMITS.replace("expected_pods = 3", "expected_pods = 4"),
    )
    .expect("write");
    let limits = path.display().to_string();
    let pods = readers(&world, &limits, 1).await;
    let client = reqwest::Client::new();
    let key = [("x-api-key", "crowd-key")];
    let answers = at_once(&client, &pods, 10, &key).await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");

    blocking(|| world.redis.as_mut().expect("redis").kill()).expect("kill redis");
    // Every waiter of a failed batch is answered, by the per-pod limiter: the requests
    // are served up to the pod's share and refused after it, none fails.
    let answers = at_once(&client, &pods, 60, &key).await;
    let allowed = answers.iter().filter(|(s, _)| *s == 200).count();
    let refused = answers.iter().filter(|(s, _)| *s == 429).count();
    assert_eq!((allowed, refused), (25, 35), "{answers:?}");
    let metrics = pods[0].get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics.contains("reader_ratelimit_redis_errors_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("reader_ratelimit_decisions_total{backend=\"local\""),
        "{metrics}"
    );
    let ready: Value = pods[0]
        .get("/health/ready")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(ready["rate_limiter"], "degraded");
    for pod in pods {
        pod.stop().await;
    }
    world.stop().await;
}
