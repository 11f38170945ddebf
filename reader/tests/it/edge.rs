//! Readers behind the real edge (nginx through the test kit, with the shipped
//! `deploy/nginx/edge-locations.conf`): the shared cache honours the readers' headers and
//! never serves another client's RateLimit headers, client-sent forwarding headers do
//! not reach the readers, operational routes stay off the public port, concurrent
//! requests for a page the edge never stores do not wait on each other, and traffic moves
//! between a blue and a green pair, and ingestion from the blue to the green writer,
//! under steady load with no failed request and no missing or duplicated ledger.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loadtest::edge::{Colour, Colours, Edge};

use crate::support::{blocking, TestReader, World};

/// Generous limits, so the edge's own address is one client whose budget every request
/// through the edge spends.
const LIMITS: &str = r#"
prefix = "test:edge:"
expected_pods = 4
redis_budget_ms = 500
trusted_proxies = ["127.0.0.1/32"]

[tiers.anonymous]
requests = 100000
burst = 100000
window_seconds = 864000

[costs]
default = 1
large_page_limit = 50
large_page = 4
stream = 20
"#;

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The `r` (remaining) of the `requests` item of a `RateLimit` header.
fn remaining_requests(value: &str) -> u64 {
    value
        .split(',')
        .find(|item| item.trim_start().starts_with("\"requests\""))
        .and_then(|item| item.split(';').find_map(|p| p.trim().strip_prefix("r=")))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no requests remaining in {value:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_caches_strips_and_switches_colours_without_a_failed_request() {
    let world = World::start(8, true).await;
    world.wait_replica();
    let limits = tempfile::NamedTempFile::new().expect("limits file");
    std::fs::write(limits.path(), LIMITS).expect("write limits");
    let limits_path = limits.path().display().to_string();
    let mut readers = Vec::new();
    for colour in ["blue", "blue", "green", "green"] {
        // Each colour names itself in the links it renders: that shows who served. (The
        // two readers of a colour share it, as pods behind one address do, so their
        // bodies and ETags agree.)
        let public = format!("http://{colour}.test");
        let args = [
            "--rate-limits",
            limits_path.as_str(),
            "--public-url",
            &public,
        ];
        readers.push(TestReader::over(&world, &args).await);
    }
    let address = |r: &TestReader| r.running.as_ref().expect("running").address;
    let colours = Colours {
        blue: readers[..2].iter().map(address).collect(),
        green: readers[2..].iter().map(address).collect(),
    };
    let edge = blocking(|| Edge::start(colours, Colour::Blue)).expect("edge");
    let base = edge.url();
    let client = reqwest::Client::new();
    let tip = world.latest();

    // A closed ledger's page: stored once, then a hit. RateLimit only on the answer a
    // reader made for this client, never on the stored copy.
    let path = format!("{base}/ledgers/{}/payments", tip - 2);
    let miss = client.get(&path).send().await.expect("request");
    assert_eq!(miss.status(), 200);
    assert_eq!(header(&miss, "x-cache-status").as_deref(), Some("MISS"));
    assert!(
        header(&miss, "ratelimit").is_some(),
        "the reader's own answer"
    );
    let miss_body = miss.text().await.expect("body");
    let hit = client.get(&path).send().await.expect("request");
    assert_eq!(header(&hit, "x-cache-status").as_deref(), Some("HIT"));
    assert_eq!(
        header(&hit, "ratelimit"),
        None,
        "no other client's RateLimit"
    );
    assert_eq!(header(&hit, "ratelimit-policy"), None);
    assert!(header(&hit, "etag").is_some());
    assert_eq!(hit.text().await.expect("body"), miss_body);

    // Operational routes are not public.
    for route in ["/metrics", "/health", "/health/ready"] {
        let r = client
            .get(format!("{base}{route}"))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 404, "{route} through the edge");
    }

    // Spoofed forwarding headers: every request is the edge's one client, whatever the
    // client claims, so the shared budget goes down by one each time.
    let account_route = format!(
        "{base}/accounts/{}/payments?limit=1",
        world
            .ledgers
            .iter()
            .flat_map(|l| &l.payments)
            .next()
            .expect("a payment")
            .source
            .account
    );
    let mut budgets = Vec::new();
    for (i, spoof) in ["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"]
        .iter()
        .enumerate()
    {
        let r = client
            .get(format!("{account_route}&n={i}"))
            .header("x-forwarded-for", *spoof)
            .header("cf-connecting-ip", *spoof)
            .header("forwarded", format!("for={spoof}"))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200);
        budgets.push(remaining_requests(
            &header(&r, "ratelimit").expect("ratelimit"),
        ));
    }
    // Four fresh clients would each show a full budget; one client spends it (the slow
    // refill may give back at most one in between).
    assert!(
        budgets[0] - budgets[3] >= 2,
        "spoofed addresses got budgets of their own: {budgets:?}"
    );

    // An account history is never stored (`no-cache`), yet a client holding its ETag
    // still gets a 304 through the edge.
    let fresh = client.get(&account_route).send().await.expect("request");
    assert_eq!(fresh.status(), 200);
    let tag = header(&fresh, "etag").expect("etag");
    let again = client
        .get(&account_route)
        .header("if-none-match", &tag)
        .send()
        .await
        .expect("request");
    assert_eq!(again.status(), 304, "a revalidated account history");
    assert_eq!(header(&again, "etag").as_deref(), Some(tag.as_str()));

    // Steady load through the edge while traffic moves to green and back.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for worker in 0..4u32 {
        let (client, base, stop) = (client.clone(), base.clone(), stop.clone());
        let routes = [
            "/payments?limit=5&order=desc".to_owned(),
            format!("/ledgers/{}/payments", tip - 1 - worker % 3),
            account_route.trim_start_matches(&base).to_owned(),
            "/payments?limit=200".to_owned(),
        ];
        load.push(tokio::spawn(async move {
            let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let route = &routes[i % routes.len()];
                i += 1;
                // An idle keep-alive connection that a reloading worker closes can race a
                // request sent on it; clients retry such an idempotent request once, as
                // browsers and Cloudflare do (RFC 9112, 9.3.1). Counted apart.
                let url = format!("{base}{route}");
                let sent = match client.get(&url).send().await {
                    Err(e) if !e.is_timeout() => {
                        *statuses
                            .entry("retried after a closed connection".into())
                            .or_default() += 1;
                        client.get(&url).send().await
                    }
                    other => other,
                };
                let outcome = match sent {
                    Ok(r) => {
                        let status = r.status().as_u16().to_string();
                        // The whole body must arrive too.
                        match r.bytes().await {
                            Ok(_) => status,
                            Err(e) => format!("body error: {e}"),
                        }
                    }
                    Err(e) => format!("connection error: {e}"),
                };
                *statuses.entry(outcome).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            statuses
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut edge = edge;
    let mut reports = Vec::new();
    let mut handover = None;
    for (round, to) in [Colour::Green, Colour::Blue].into_iter().enumerate() {
        let (back, report) = blocking(move || {
            let report = edge.switch(to, Duration::from_secs(10), Duration::from_secs(15));
            (edge, report)
        });
        edge = back;
        reports.push(report.expect("switch"));
        assert_eq!(edge.live(), to);
        // Requests the edge has not stored reach the live colour only.
        for i in 0..4 {
            let fresh = format!("{base}/payments?limit={}", 20 + round * 4 + i);
            let page: serde_json::Value = client
                .get(&fresh)
                .send()
                .await
                .expect("request")
                .json()
                .await
                .expect("json");
            let by = page["_links"]["self"]["href"].as_str().unwrap_or_default();
            assert!(
                by.starts_with(&format!("http://{to}.test/")),
                "{fresh} served by {by}"
            );
        }
        if round == 0 {
            // Ingestion moves to the other writer between the two reader switches; the
            // chain stays whole, and pages through the edge show ledgers closed after.
            handover = Some(world.hand_over_writer().await.expect("writer handover"));
            let next = world.close_next().await;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let root: serde_json::Value = client
                    .get(format!("{base}/"))
                    .send()
                    .await
                    .expect("request")
                    .json()
                    .await
                    .expect("json");
                if root["history_latest_ledger"].as_u64() >= Some(u64::from(next)) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the edge never showed ledger {next} after the handover: {root}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // Each reader of the pair follows the tip on its own poll: the page is
            // served once the one that answers has seen the ledger too.
            loop {
                let page = client
                    .get(format!("{base}/ledgers/{next}/payments"))
                    .send()
                    .await
                    .expect("request");
                if page.status() == 200 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "ledger {next} through the edge: {}",
                    page.status()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    for worker in load {
        for (status, n) in worker.await.expect("load worker") {
            *statuses.entry(status).or_default() += n;
        }
    }
    let total: u64 = statuses
        .iter()
        .filter(|(status, _)| !status.starts_with("retried"))
        .map(|(_, n)| n)
        .sum();
    let failed: u64 = statuses
        .iter()
        .filter(|(status, _)| {
            !matches!(
                status.as_str(),
                "200" | "304" | "429" | "retried after a closed connection"
            )
        })
        .map(|(_, n)| n)
        .sum();
    eprintln!(
        "through the edge across two switches and a writer handover: {statuses:?}; \
         switches: {reports:?}; handover: {handover:?}"
    );
    assert!(total > 100, "the load ran ({total} requests)");
    assert_eq!(
        failed, 0,
        "failed requests across the switches: {statuses:?}"
    );
    // Every ledger closed so far stored once, with every payment the extractor made of
    // it, and nothing else.
    let handover = handover.expect("a handover ran");
    assert_eq!(handover.active, "green");
    let tip = world.latest();
    let stored = |sql: &str| -> i64 {
        blocking(|| world.pg.psql(world.pg.primary_port(), "payments", sql))
            .expect("psql")
            .trim()
            .parse()
            .expect("a count")
    };
    assert_eq!(
        stored("SELECT count(DISTINCT sequence) FROM ledgers"),
        i64::from(tip - crate::support::FIRST + 1)
    );
    assert_eq!(stored("SELECT max(sequence) FROM ledgers"), i64::from(tip));
    assert_eq!(
        stored("SELECT count(*) FROM payments"),
        world.records_through(tip).len() as i64
    );

    // Concurrent requests for one account's history (never stored: `no-cache`) do not
    // queue behind each other at the edge. With nginx's cache lock on, all but the
    // first waited for the lock's 500 ms polls, only to be passed through. The slowest
    // of eight concurrent requests stays under one poll in at least one of three rounds
    // (a stalled machine may slow a round, but not cause all three).
    let mut slowest = Vec::new();
    for round in 0..3 {
        let url = format!("{account_route}&round={round}");
        let started = Instant::now();
        let answered = futures_util::future::join_all((0..8).map(|_| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let r = client.get(&url).send().await.expect("request");
                assert_eq!(r.status(), 200);
                assert_eq!(header(&r, "x-cache-status").as_deref(), Some("MISS"));
                r.bytes().await.expect("body");
                started.elapsed()
            }
        }))
        .await;
        slowest.push(answered.into_iter().max().expect("eight answers"));
    }
    assert!(
        slowest.iter().min().expect("three rounds") < &Duration::from_millis(450),
        "concurrent requests for one account waited at the edge: slowest per round {slowest:?}"
    );

    // A colour that is not ready is not switched to.
    let green = readers.pop().expect("a green reader");
    green.stop().await;
    let started = Instant::now();
    let (edge, refused) = blocking(move || {
        let mut edge = edge;
        let refused = edge.switch(
            Colour::Green,
            Duration::from_millis(500),
            Duration::from_secs(5),
        );
        (edge, refused)
    });
    assert!(refused.is_err(), "switched to a colour with a dead reader");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(edge.live(), Colour::Blue);
    let still = client
        .get(format!("{base}/payments?limit=1"))
        .send()
        .await
        .expect("request");
    assert_eq!(still.status(), 200);

    drop(edge);
    for reader in readers {
        reader.stop().await;
    }
    world.stop().await;
}
