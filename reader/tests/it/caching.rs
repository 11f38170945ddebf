//! The response cache, ETags and 304s, and Cache-Control per route: a repeated request
//! at an unchanged tip touches no database; conditional requests are answered without
//! reading payment rows; a new ledger refreshes what it changes and nothing else.

use std::time::Duration;

use crate::support::{TestReader, World};
use serde_json::Value;

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The response's one `Vary` header starts with the page's own fields (the CORS
/// layer's, merged into it, follow).
fn assert_page_vary(r: &reqwest::Response) {
    let all: Vec<&str> = r
        .headers()
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(all.len(), 1, "one Vary header: {all:?}");
    assert!(all[0].starts_with("Accept, Accept-Encoding"), "{all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_etags_and_cache_control() {
    let world = World::start(10, true).await;
    world.wait_replica();
    // Pods behind one load balancer share a public URL (links are part of the body).
    let public = ["--public-url", "https://payments.test"];
    let reader = TestReader::over(&world, &public).await;
    let tip = world.latest();

    // Head-of-chain feed: a miss, then hits that touch no database.
    let first = reader.get("/payments?order=desc&limit=5").await;
    assert_eq!(first.status(), 200);
    let etag = header(&first, "etag").expect("etag");
    let cache_control = header(&first, "cache-control").expect("cache-control");
    assert_eq!(cache_control, "public, max-age=5, stale-while-revalidate=5");
    assert_page_vary(&first);
    assert_eq!(
        header(&first, "content-type").as_deref(),
        Some("application/hal+json; charset=utf-8")
    );
    let body: Value = first.json().await.expect("json");
    let before = reader.db_queries();
    let again = reader.get("/payments?order=desc&limit=5").await;
    assert_eq!(header(&again, "etag").as_deref(), Some(etag.as_str()));
    assert_eq!(again.json::<Value>().await.expect("json"), body);
    assert_eq!(reader.db_queries(), before, "a cache hit reads nothing");
    // Other spellings of the same request: the same page and the same ETag (tags are
    // built from the normalised request); each spelling is its own cache entry (keys
    // follow the request as sent), read once and then a hit.
    for spelling in [
        "/payments?limit=5&order=desc",
        "/payments?limit=5&order=desc&include_failed=false&unknown=1",
    ] {
        for _ in 0..2 {
            let again = reader.get(spelling).await;
            assert_eq!(header(&again, "etag").as_deref(), Some(etag.as_str()));
            assert_eq!(again.json::<Value>().await.expect("json"), body);
        }
        let after_first = reader.db_queries();
        let again = reader.get(spelling).await;
        assert_eq!(header(&again, "etag").as_deref(), Some(etag.as_str()));
        assert_eq!(reader.db_queries(), after_first, "{spelling}: a cache hit");
    }
    let before = reader.db_queries();

    // If-None-Match: 304 with the same ETag and Cache-Control, nothing read.
    let not_modified = reader
        .get_with("/payments?order=desc&limit=5", &[("if-none-match", &etag)])
        .await;
    assert_eq!(not_modified.status(), 304);
    assert_eq!(
        header(&not_modified, "etag").as_deref(),
        Some(etag.as_str())
    );
    assert_eq!(
        header(&not_modified, "cache-control").as_deref(),
        Some(cache_control.as_str())
    );
    assert_eq!(
        header(&not_modified, "latest-ledger"),
        Some(tip.to_string())
    );
    assert_eq!(reader.db_queries(), before);
    let other = reader
        .get_with(
            "/payments?order=desc&limit=5",
            &[("if-none-match", "\"something-else\"")],
        )
        .await;
    assert_eq!(other.status(), 200);

    // A closed ledger's payments: immutable, and 304 without any read, even on a
    // reader that never served it.
    let ledger = reader.get(&format!("/ledgers/{}/payments", tip - 2)).await;
    let ledger_tag = header(&ledger, "etag").expect("etag");
    assert_eq!(
        header(&ledger, "cache-control").as_deref(),
        Some("public, max-age=31536000, immutable")
    );
    let fresh = TestReader::over(&world, &public).await;
    let reads = fresh.db_queries();
    let r = fresh
        .get_with(
            &format!("/ledgers/{}/payments", tip - 2),
            &[("if-none-match", &ledger_tag)],
        )
        .await;
    assert_eq!(r.status(), 304);
    assert_eq!(fresh.db_queries(), reads);
    fresh.stop().await;

    // A full ascending page wholly below the tip is immutable; the page at the head
    // is not.
    let full = reader.get("/payments?limit=3&cursor=0").await;
    assert_eq!(
        header(&full, "cache-control").as_deref(),
        Some("public, max-age=31536000, immutable")
    );
    let head = reader.get("/payments?limit=200&cursor=now").await;
    assert_eq!(
        header(&head, "cache-control").as_deref(),
        Some("public, max-age=5, stale-while-revalidate=5")
    );

    // Accounts: one active in the next ledger, one not.
    let next_ledger = &world.ledgers[10];
    let next_accounts: Vec<String> = next_ledger
        .payments
        .iter()
        .filter(|p| p.successful())
        .flat_map(|p| p.participants())
        .map(|p| p.address.to_strkey())
        .collect();
    let earlier: Vec<String> = world
        .records_through(tip)
        .iter()
        .filter(|p| p.successful())
        .flat_map(|p| p.participants())
        .map(|p| p.address.to_strkey())
        .collect();
    let quiet = earlier
        .iter()
        .find(|a| !next_accounts.contains(a))
        .expect("an account quiet in the next ledger")
        .clone();
    let busy = next_accounts
        .iter()
        .find(|a| earlier.contains(a))
        .cloned()
        .unwrap_or_else(|| next_accounts[0].clone());
    let quiet_path = format!("/accounts/{quiet}/payments?order=desc");
    let busy_path = format!("/accounts/{busy}/payments?order=desc&limit=200");
    let quiet_first = reader.get(&quiet_path).await;
    assert_eq!(
        header(&quiet_first, "cache-control").as_deref(),
        Some("public, no-cache")
    );
    let quiet_tag = header(&quiet_first, "etag").expect("etag");
    let busy_first = reader.get(&busy_path).await;
    let busy_tag = header(&busy_first, "etag").expect("etag");
    let busy_body: Value = busy_first.json().await.expect("json");
    let top_before = reader.json("/payments?order=desc&limit=1").await;
    // A closed ledger's page from `cursor=now`: its scope is fixed, but `now` names
    // a position at the tip, so its links must follow the tip (its cache key too).
    let ledger_now = format!("/ledgers/{}/payments?cursor=now", tip - 2);
    let now_before = reader.json(&ledger_now).await;
    assert_eq!(reader.json(&ledger_now).await, now_before);

    // A new ledger lands.
    let new_tip = world.close_next().await;
    world.wait_replica();
    reader.wait_tip(new_tip).await;
    // `/` reports the best tip of all sources; pages come from the replica, whose tip
    // the reader learns on its next poll: wait until a page is served at the new tip.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = reader.get("/payments?order=desc&limit=2").await;
        if header(&r, "latest-ledger") == Some(new_tip.to_string()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no page at the new tip"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let now_after = reader.json(&ledger_now).await;
    let next_cursor = |page: &Value| -> i64 {
        let href = page["_links"]["next"]["href"].as_str().expect("next");
        let cursor = href
            .split(['?', '&'])
            .find_map(|p| p.strip_prefix("cursor="));
        cursor
            .and_then(|c| c.parse().ok())
            .expect("a numeric cursor")
    };
    assert_eq!(next_cursor(&now_before) >> 32, i64::from(tip));
    assert_eq!(next_cursor(&now_after) >> 32, i64::from(new_tip));

    // The quiet account still answers 304 (one activity lookup, no payment rows).
    let reads = reader.db_queries();
    let r = reader
        .get_with(&quiet_path, &[("if-none-match", &quiet_tag)])
        .await;
    assert_eq!(r.status(), 304, "quiet account unchanged");
    assert_eq!(header(&r, "latest-ledger"), Some(new_tip.to_string()));
    assert_eq!(reader.db_queries(), reads + 1);
    // The busy one has changed.
    let r = reader
        .get_with(&busy_path, &[("if-none-match", &busy_tag)])
        .await;
    assert_eq!(r.status(), 200, "busy account changed");
    assert_ne!(header(&r, "etag"), Some(busy_tag));
    let body: Value = r.json().await.expect("json");
    assert_ne!(body, busy_body);
    // The head of the global feed shows the new ledger.
    let top_after = reader.json("/payments?order=desc&limit=1").await;
    if next_ledger.payments.iter().any(|p| p.successful()) {
        assert_ne!(top_after, top_before);
        let id: i64 = top_after["_embedded"]["records"][0]["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("id");
        assert_eq!((id >> 32) as u32, new_tip);
    }
    let r = reader
        .get_with("/payments?order=desc&limit=5", &[("if-none-match", &etag)])
        .await;
    assert_eq!(r.status(), 200, "the global feed's tag follows the tip");

    reader.stop().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_control_policy_is_hot_reloaded() {
    let world = World::start(4, false).await;
    world.wait_replica();
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("cache-control.toml");
    std::fs::write(&policy, reader::policy::DEFAULT_POLICY).expect("write policy");
    let policy_arg = policy.display().to_string();
    let reader = TestReader::over(&world, &["--cache-control-policy", &policy_arg]).await;
    let get_head = || async {
        let r = reader.get("/payments?order=desc").await;
        header(&r, "cache-control")
    };
    assert_eq!(
        get_head().await.as_deref(),
        Some("public, max-age=5, stale-while-revalidate=5")
    );
    std::fs::write(
        &policy,
        "[[rule]]\nroute = \"/payments\"\nclass = \"head\"\nvalue = \"public, max-age=2\"\n",
    )
    .expect("write policy");
    let mut reloaded = false;
    for _ in 0..60 {
        if get_head().await.as_deref() == Some("public, max-age=2") {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reloaded, "the new policy is in force");
    // A broken file is refused and the policy in force stays.
    std::fs::write(&policy, "this is not toml [[[").expect("write policy");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(get_head().await.as_deref(), Some("public, max-age=2"));
    reader.stop().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_only_over_complete_history() {
    let world = World::start(8, false).await;
    world.wait_replica();
    let reader = TestReader::over(&world, &[]).await;
    let record = world.ledgers[4]
        .payments
        .first()
        .expect("a payment in the fifth ledger");
    let path = format!(
        "/payments?include_failed=true&limit=1&cursor={}",
        record.id.to_i64() - 1
    );
    let immutable = Some("public, max-age=31536000, immutable".to_owned());
    let r = reader.get(&path).await;
    assert_eq!(header(&r, "cache-control"), immutable, "complete history");

    // A ledger before the page goes missing (a gap a backfill could still fill), and a
    // backfill range lands elsewhere (a new generation).
    let port = world.pg.primary_port();
    crate::support::blocking(|| {
        world.pg.psql(
            port,
            "payments",
            &format!(
                "DELETE FROM ledgers WHERE sequence = {}; \
                 INSERT INTO backfill_ranges (start_ledger, end_ledger) VALUES (1, 1)",
                crate::support::FIRST + 1
            ),
        )
    })
    .expect("gap");
    world.wait_replica();
    let mut seen = None;
    for _ in 0..200 {
        let r = reader.get(&path).await;
        assert_eq!(r.status(), 200);
        seen = header(&r, "cache-control");
        if seen != immutable {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        seen.as_deref(),
        Some("public, max-age=5, stale-while-revalidate=5"),
        "a page after a gap revalidates"
    );
    reader.stop().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_per_accept_encoding_with_their_own_etags() {
    use std::io::Read as _;

    let world = World::start(6, false).await;
    world.wait_replica();
    let reader = TestReader::over(&world, &[]).await;
    let path = "/payments?limit=200&include_failed=true&join=transactions";
    let plain = reader.get(path).await;
    let tag = header(&plain, "etag").expect("etag");
    assert_eq!(header(&plain, "content-encoding"), None);
    let body = plain.bytes().await.expect("body");
    let reads = reader.db_queries();
    let mut tags = vec![tag.clone()];
    for (coding, accept) in [
        ("gzip", "gzip, deflate"),
        ("br", "gzip, deflate, br"),
        ("zstd", "br, gzip, zstd"),
        ("br", "zstd;q=0.5, br, gzip;q=0.8"),
    ] {
        let r = reader.get_with(path, &[("accept-encoding", accept)]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-encoding").as_deref(), Some(coding));
        assert_page_vary(&r);
        let coded_tag = header(&r, "etag").expect("etag");
        assert!(coded_tag.ends_with(&format!("-{coding}\"")), "{coded_tag}");
        if tags.contains(&coded_tag) {
            // Asked again (other q-values): the same coding and tag as before.
            assert_eq!(coding, "br");
        } else {
            tags.push(coded_tag.clone());
        }
        let compressed = r.bytes().await.expect("body");
        assert!(
            compressed.len() * 3 < body.len(),
            "{coding}: {} of {}",
            compressed.len(),
            body.len()
        );
        let mut decoded = Vec::new();
        match coding {
            "gzip" => {
                flate2::read::GzDecoder::new(&compressed[..])
                    .read_to_end(&mut decoded)
                    .expect("gunzip");
            }
            "br" => {
                brotli::Decompressor::new(&compressed[..], 4096)
                    .read_to_end(&mut decoded)
                    .expect("unbrotli");
            }
            _ => decoded = zstd::decode_all(&compressed[..]).expect("unzstd"),
        }
        assert_eq!(decoded, body.to_vec(), "{coding} decodes to the same page");
        // Served again from the cached compressed body: the same bytes.
        let again = reader.get_with(path, &[("accept-encoding", accept)]).await;
        assert_eq!(again.bytes().await.expect("body"), compressed);
        // The encoded tag revalidates.
        let r = reader
            .get_with(
                path,
                &[("accept-encoding", accept), ("if-none-match", &coded_tag)],
            )
            .await;
        assert_eq!(r.status(), 304);
        assert_eq!(header(&r, "etag").as_deref(), Some(coded_tag.as_str()));
    }
    assert_eq!(
        reader.db_queries(),
        reads,
        "every encoding came from the cache"
    );
    let r = reader
        .get_with(path, &[("accept-encoding", "gzip;q=0, identity")])
        .await;
    assert_eq!(header(&r, "content-encoding"), None);
    assert_eq!(header(&r, "etag"), Some(tag));
    assert_eq!(
        tags.len(),
        4,
        "identity, gzip, br and zstd tags differ: {tags:?}"
    );
    reader.stop().await;
    world.stop().await;
}

/// Without a public URL, links follow the request's Host and `X-Forwarded-Proto`, and
/// each base is its own cache entry: a page rendered for one host or scheme is never
/// served to another, and a hit answers only the base it was rendered for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_follow_the_request_host_and_scheme() {
    let world = World::start(4, false).await;
    world.wait_replica();
    let reader = TestReader::over(&world, &[]).await;
    let path = "/payments?limit=2";
    let hrefs = |body: &Value| {
        let page = body["_links"]["self"]["href"]
            .as_str()
            .expect("self")
            .to_owned();
        let record = body["_embedded"]["records"][0]["_links"]["self"]["href"]
            .as_str()
            .expect("record self")
            .to_owned();
        (page, record)
    };
    let fetch = |headers: Vec<(&'static str, &'static str)>| {
        let reader = &reader;
        async move {
            let before = reader.db_queries();
            let r = reader.get_with(path, &headers).await;
            assert_eq!(r.status(), 200, "{headers:?}");
            let body: Value = r.json().await.expect("json");
            (hrefs(&body), reader.db_queries() - before)
        }
    };

    // Each base once from the database, then from the cache.
    let cases: [(Vec<(&str, &str)>, &str); 5] = [
        (vec![("host", "a.test")], "http://a.test/"),
        (
            vec![("host", "a.test"), ("x-forwarded-proto", "https")],
            "https://a.test/",
        ),
        (vec![("host", "b.test:8000")], "http://b.test:8000/"),
        (vec![("host", "[::1]:8000")], "http://[::1]:8000/"),
        // Not a plain host name: relative links.
        (vec![("host", "a.test@evil")], "/"),
    ];
    for (headers, prefix) in &cases {
        for round in 0..2 {
            let ((page, record), queries) = fetch(headers.clone()).await;
            assert!(page.starts_with(prefix), "{headers:?}: page link {page}");
            assert!(
                record.starts_with(&format!("{prefix}operations/")),
                "{headers:?}: record link {record}"
            );
            if *prefix == "/" {
                assert!(!page.starts_with("//"), "{page}");
            }
            assert_eq!(
                queries,
                u64::from(round == 0),
                "{headers:?}: round {round} read the database {queries} times"
            );
        }
    }
    // A scheme other than http or https is ignored: the http page, already cached.
    let ((page, _), queries) =
        fetch(vec![("host", "a.test"), ("x-forwarded-proto", "gopher")]).await;
    assert!(page.starts_with("http://a.test/"), "{page}");
    assert_eq!(queries, 0, "the http entry answers");
    reader.stop().await;
    world.stop().await;
}
