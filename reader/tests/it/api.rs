//! Every route and parameter against a replica fed by the writer from the recorded
//! ledgers: records equal what the extractor made of the same ledgers (rendered by the
//! shared Horizon renderer), full pagination walks in both orders equal the data, and
//! every kind of bad input is a 4xx problem document.

use std::collections::{BTreeMap, BTreeSet};

use crate::support::{ids, TestReader, World, FIRST};
use serde_json::Value;
use shared::horizon::{payment_json, transaction_json};
use shared::payment::{PaymentRecord, PaymentType, Role};

fn expected(records: &[&PaymentRecord], reader: &TestReader, join: bool) -> Vec<Value> {
    records
        .iter()
        .map(|r| payment_json(r, &reader.links(), join))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_parameters_match_the_extractor() {
    let world = World::start(12, false).await;
    world.wait_replica();
    let reader = TestReader::over(&world, &[]).await;
    let tip = world.latest();
    let all: Vec<&PaymentRecord> = world.records_through(tip);
    let successful: Vec<&PaymentRecord> = all.iter().copied().filter(|r| r.successful()).collect();
    assert!(all.len() > 100, "the fixtures hold many payments");
    assert!(successful.len() < all.len(), "and some failed ones");

    // The global feed, both orders, with and without failed transactions.
    let asc = reader.walk("/payments?limit=37").await;
    assert_eq!(asc, expected(&successful, &reader, false));
    let mut desc = reader.walk("/payments?limit=41&order=desc").await;
    desc.reverse();
    assert_eq!(desc, asc);
    let with_failed = reader.walk("/payments?limit=200&include_failed=true").await;
    assert_eq!(with_failed, expected(&all, &reader, false));
    let mut with_failed_desc = reader
        .walk("/payments?limit=3&include_failed=true&order=desc")
        .await;
    with_failed_desc.reverse();
    assert_eq!(with_failed_desc, with_failed);

    // join=transactions embeds each record's transaction.
    let joined = reader.json("/payments?limit=5&join=transactions").await;
    for (record, want) in joined["_embedded"]["records"]
        .as_array()
        .expect("records")
        .iter()
        .zip(successful.iter())
    {
        assert_eq!(
            record["transaction"],
            transaction_json(&want.transaction, &reader.links())
        );
        assert_eq!(*record, payment_json(want, &reader.links(), true));
    }

    // The most active accounts: full walks both ways, directions, asset filter.
    let mut activity: BTreeMap<String, usize> = BTreeMap::new();
    for r in &successful {
        for p in r.participants() {
            *activity.entry(p.address.to_strkey()).or_default() += 1;
        }
    }
    let mut busiest: Vec<(String, usize)> = activity.into_iter().collect();
    busiest.sort_by_key(|b| std::cmp::Reverse(b.1));
    for (account, _) in busiest.iter().take(4) {
        let theirs = |filter: &dyn Fn(&PaymentRecord) -> bool| -> Vec<&PaymentRecord> {
            all.iter()
                .copied()
                .filter(|r| {
                    r.successful()
                        && r.participants()
                            .iter()
                            .any(|p| &p.address.to_strkey() == account)
                        && filter(r)
                })
                .collect()
        };
        let path = format!("/accounts/{account}/payments");
        let got = reader.walk(&format!("{path}?limit=4")).await;
        assert_eq!(
            got,
            expected(&theirs(&|_| true), &reader, false),
            "{account}"
        );
        let mut back = reader.walk(&format!("{path}?limit=6&order=desc")).await;
        back.reverse();
        assert_eq!(back, got);
        let role = |r: &PaymentRecord| {
            r.participants()
                .into_iter()
                .find(|p| &p.address.to_strkey() == account)
                .map(|p| p.role)
        };
        let incoming = reader
            .walk(&format!("{path}?limit=200&direction=incoming"))
            .await;
        assert_eq!(
            incoming,
            expected(
                &theirs(&|r| role(r).is_some_and(Role::is_incoming)),
                &reader,
                false
            )
        );
        let outgoing = reader
            .walk(&format!("{path}?limit=200&direction=outgoing"))
            .await;
        assert_eq!(
            outgoing,
            expected(
                &theirs(&|r| role(r).is_some_and(Role::is_outgoing)),
                &reader,
                false
            )
        );
        let asset = theirs(&|_| true)
            .iter()
            .find_map(|r| r.assets().first().cloned())
            .expect("an asset");
        let by_asset = reader
            .walk(&format!("{path}?limit=200&asset={}", asset.canonical()))
            .await;
        assert_eq!(
            by_asset,
            expected(&theirs(&|r| r.assets().contains(&asset)), &reader, false)
        );
    }
    // An account with no history: an empty page, not an error.
    let nobody = "GAAZI4TCR3TY5OJHCTJC2A4QSY6CJWJH5IAJTGKIN2ER7LBNVKOCCWN7";
    let empty = reader.json(&format!("/accounts/{nobody}/payments")).await;
    assert_eq!(empty["_embedded"]["records"], serde_json::json!([]));

    // Asset filter on the global feed.
    let mut assets: BTreeSet<String> = BTreeSet::new();
    for r in &successful {
        for a in r.assets() {
            assets.insert(a.canonical());
        }
    }
    for asset in assets.iter().take(5) {
        let got = reader
            .walk(&format!("/payments?limit=50&asset={asset}"))
            .await;
        let want: Vec<&PaymentRecord> = successful
            .iter()
            .copied()
            .filter(|r| r.assets().iter().any(|a| &a.canonical() == asset))
            .collect();
        assert_eq!(got, expected(&want, &reader, false), "asset {asset}");
    }

    // Each ledger's payments, and each ledger's payments by asset.
    for ledger in world.ledgers.iter() {
        let seq = ledger.ledger.sequence;
        let want: Vec<&PaymentRecord> = ledger.payments.iter().filter(|r| r.successful()).collect();
        let got = reader
            .walk(&format!("/ledgers/{seq}/payments?limit=200"))
            .await;
        assert_eq!(got, expected(&want, &reader, false), "ledger {seq}");
    }

    // Transactions' payments: failed ones included, as the caller named the transaction.
    let failed = all
        .iter()
        .find(|r| !r.successful())
        .expect("a failed payment");
    let mut hashes: Vec<[u8; 32]> = vec![failed.transaction.hash];
    hashes.extend(successful.iter().step_by(17).map(|r| r.transaction.hash));
    for hash in hashes {
        let want: Vec<&PaymentRecord> = all
            .iter()
            .copied()
            .filter(|r| r.transaction.hash == hash)
            .collect();
        let got = reader
            .walk(&format!(
                "/transactions/{}/payments?limit=200",
                hex::encode(hash)
            ))
            .await;
        assert_eq!(got, expected(&want, &reader, false));
        let upper = reader
            .json(&format!(
                "/transactions/{}/payments",
                hex::encode(hash).to_uppercase()
            ))
            .await;
        assert_eq!(
            upper["_embedded"]["records"].as_array().map(Vec::len),
            Some(want.len().min(10))
        );
    }

    // A fee bump is found by its own hash and by the hash of the transaction it wraps;
    // its records name the fee bump, as Horizon's do.
    let bumped: Vec<&PaymentRecord> = all
        .iter()
        .copied()
        .filter(|r| r.transaction.inner_hash.is_some())
        .collect();
    let inner = bumped
        .first()
        .and_then(|r| r.transaction.inner_hash)
        .expect("the recorded ledgers hold a fee-bump payment");
    let want: Vec<&PaymentRecord> = bumped
        .iter()
        .copied()
        .filter(|r| r.transaction.inner_hash == Some(inner))
        .collect();
    let got = reader
        .walk(&format!(
            "/transactions/{}/payments?limit=200",
            hex::encode(inner)
        ))
        .await;
    assert_eq!(got, expected(&want, &reader, false));

    // Close-time bounds select whole ledgers.
    let third = &world.ledgers[3].ledger;
    let from = shared::horizon::format_time(third.closed_at);
    let got = reader
        .walk(&format!("/payments?limit=200&from_time={from}"))
        .await;
    let want: Vec<&PaymentRecord> = successful
        .iter()
        .copied()
        .filter(|r| r.transaction.closed_at >= third.closed_at)
        .collect();
    assert_eq!(ids(&got), ids(&expected(&want, &reader, false)));
    let to = reader
        .walk(&format!("/payments?limit=200&to_time={from}"))
        .await;
    assert_eq!(to.len() + got.len(), successful.len());

    // Links: self/next/prev carry every parameter; prev goes back.
    let page = reader.json("/payments?limit=3&cursor=0&asset=native").await;
    let next = page["_links"]["next"]["href"].as_str().expect("next");
    assert!(
        next.starts_with(&reader.base) && next.contains("asset=native") && next.contains("limit=3")
    );
    let second = reader.json(&next[reader.base.len()..]).await;
    let prev = second["_links"]["prev"]["href"].as_str().expect("prev");
    assert!(prev.contains("order=desc"));
    let back = reader.json(&prev[reader.base.len()..]).await;
    let mut back_ids = ids(back["_embedded"]["records"].as_array().expect("records"));
    back_ids.reverse();
    assert_eq!(
        back_ids,
        ids(page["_embedded"]["records"].as_array().expect("records"))
    );

    // cursor=now: nothing newer yet, and the next link continues from the tip.
    let now = reader.json("/payments?cursor=now").await;
    assert_eq!(now["_embedded"]["records"], serde_json::json!([]));

    // The root document.
    let root = reader.json("/").await;
    assert_eq!(root["history_latest_ledger"], tip);
    assert_eq!(root["history_elder_ledger"], FIRST);
    assert_eq!(
        root["network_passphrase"],
        "Public Global Stellar Network ; September 2015"
    );

    // Every response carries Latest-Ledger.
    for path in [
        "/",
        "/payments",
        "/ledgers/1/payments",
        "/payments?limit=0",
        "/health",
        "/nope",
    ] {
        let r = reader.get(path).await;
        assert_eq!(
            r.headers()
                .get("latest-ledger")
                .and_then(|v| v.to_str().ok()),
            Some(tip.to_string().as_str()),
            "{path}"
        );
    }

    // One snapshot per record type, as served.
    for kind in PaymentType::ALL {
        let Some(record) = all
            .iter()
            .find(|r| r.payment_type() == kind && r.successful())
        else {
            continue;
        };
        let served = reader
            .json(&format!(
                "/transactions/{}/payments?limit=200&join=transactions",
                hex::encode(record.transaction.hash)
            ))
            .await;
        let one = served["_embedded"]["records"]
            .as_array()
            .expect("records")
            .iter()
            .find(|r| r["id"] == record.id.to_string())
            .expect("the record")
            .clone();
        let one = serde_json::from_str::<Value>(
            &one.to_string().replace(&reader.base, "http://reader.test"),
        )
        .expect("json");
        insta::assert_json_snapshot!(format!("record_{}", kind.as_str()), one);
    }

    reader.stop().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_problem_document_never_a_5xx() {
    let world = World::start(3, false).await;
    world.wait_replica();
    let reader = TestReader::over(&world, &[]).await;
    let g = "GAHK7EEG2WWHVKDNT4CEQFZGKF2LGDSW2IVM4S5DP42RBW3K6BTODB4A";
    let cases: Vec<(String, u16, &str)> = vec![
        ("/accounts/GAHK7EEG/payments".into(), 400, "account_id"),
        ("/accounts/not-an-account/payments".into(), 400, "account_id"),
        ("/accounts/MAHK7EEG2WWHVKDNT4CEQFZGKF2LGDSW2IVM4S5DP42RBW3K6BTOCAAAAAADZU6VFBOJ2/payments".into(), 400, "account_id"),
        ("/accounts/SBLT4I2Y7ZDNWC6JQD5PMOBZQRZ2RMEL5S5RRO6Q4YVWDBSBKY6L2DEH/payments".into(), 400, "account_id"),
        (format!("/accounts/{}/payments", g.to_lowercase()), 400, "account_id"),
        (format!("/accounts/{g}X/payments"), 400, "account_id"),
        ("/accounts/%ff%fe/payments".into(), 400, "account_id"),
        ("/ledgers/%ff/payments".into(), 400, "sequence"),
        ("/transactions/%c3%28/payments".into(), 400, "hash"),
        ("/ledgers/abc/payments".into(), 400, "sequence"),
        ("/ledgers/0/payments".into(), 400, "sequence"),
        ("/ledgers/-5/payments".into(), 400, "sequence"),
        ("/ledgers/99999999999/payments".into(), 400, "sequence"),
        ("/transactions/xyz/payments".into(), 400, "hash"),
        (format!("/transactions/{}/payments", "a".repeat(63)), 400, "hash"),
        (format!("/transactions/{}/payments", "g".repeat(64)), 400, "hash"),
        ("/payments?limit=0".into(), 400, "limit"),
        ("/payments?limit=201".into(), 400, "limit"),
        ("/payments?limit=-1".into(), 400, "limit"),
        ("/payments?limit=1.5".into(), 400, "limit"),
        ("/payments?order=sideways".into(), 400, "order"),
        ("/payments?order=ASC".into(), 400, "order"),
        ("/payments?cursor=abc".into(), 400, "cursor"),
        ("/payments?cursor=-7".into(), 400, "cursor"),
        ("/payments?cursor=99999999999999999999999".into(), 400, "cursor"),
        ("/payments?include_failed=maybe".into(), 400, "include_failed"),
        ("/payments?join=ledgers".into(), 400, "join"),
        ("/payments?asset=USD".into(), 400, "asset"),
        ("/payments?asset=USD:notanissuer".into(), 400, "asset"),
        ("/payments?asset=TOOLONGASSETCODE1:GAHK7EEG2WWHVKDNT4CEQFZGKF2LGDSW2IVM4S5DP42RBW3K6BTODB4A".into(), 400, "asset"),
        ("/payments?direction=incoming".into(), 400, "direction"),
        (format!("/accounts/{g}/payments?direction=sideways"), 400, "direction"),
        ("/payments?from_time=yesterday".into(), 400, "from_time"),
        ("/payments?to_time=2024-13-01T00:00:00Z".into(), 400, "to_time"),
        ("/payments?limit=+5".into(), 400, "limit"),
        ("/payments?cursor=+5".into(), 400, "cursor"),
        ("/ledgers/+5/payments".into(), 400, "sequence"),
        ("/payments?limit=5&limit=6".into(), 400, "limit"),
        ("/payments?limit=%ZZ".into(), 400, "limit"),
        ("/payments?asset=native&asset=native".into(), 400, "asset"),
        ("/ledgers/2147483647/payments".into(), 404, ""),
        ("/ledgers/5/payments".into(), 404, ""),
        (format!("/transactions/{}/payments", "ab".repeat(32)), 404, ""),
        ("/no/such/route".into(), 404, ""),
        ("/accounts".into(), 404, ""),
    ];
    assert!(cases.len() >= 30);
    for (path, status, field) in cases {
        let r = reader.get(&path).await;
        assert_eq!(r.status().as_u16(), status, "{path}");
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{path}"
        );
        assert_eq!(
            r.headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok()),
            Some("no-store"),
            "{path}"
        );
        let doc: Value = r.json().await.expect("problem json");
        assert_eq!(doc["status"], status, "{path}");
        assert!(
            doc["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("https://")),
            "{path}"
        );
        assert!(
            doc["title"].is_string() && doc["detail"].is_string(),
            "{path}"
        );
        if !field.is_empty() {
            assert_eq!(doc["extras"]["invalid_field"], field, "{path}: {doc}");
        }
    }
    // Schema-valid values are never a 400: a time window that closes before it opens is
    // empty (as the OpenAPI document says), not an error.
    let empty = reader
        .json("/payments?from_time=2024-05-02T00:00:00Z&to_time=2024-05-01T00:00:00Z")
        .await;
    assert_eq!(empty["_embedded"]["records"], serde_json::json!([]));
    // What the HTTP layer refuses is a problem document too: a method the route does
    // not answer, an over-long URI, over-large headers, a request body.
    let problem = |r: &reqwest::Response| {
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let r = reader
        .client
        .post(format!("{}/payments", reader.base))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 405);
    assert_eq!(problem(&r).as_deref(), Some("application/problem+json"));
    assert!(r.headers().contains_key("allow"));
    let long = format!("/payments?limit=5&pad={}", "x".repeat(9_000));
    let r = reader.get(&long).await;
    assert_eq!(r.status(), 414);
    assert_eq!(problem(&r).as_deref(), Some("application/problem+json"));
    let big = "y".repeat(4_000);
    let many: Vec<(String, &str)> = (0..10)
        .map(|i| (format!("x-pad-{i}"), big.as_str()))
        .collect();
    let mut request = reader.client.get(format!("{}/payments", reader.base));
    for (k, v) in &many {
        request = request.header(k.as_str(), *v);
    }
    let r = request.send().await.expect("request");
    assert_eq!(r.status(), 431);
    assert_eq!(problem(&r).as_deref(), Some("application/problem+json"));
    let r = reader
        .client
        .get(format!("{}/payments", reader.base))
        .body(vec![b'z'; 100_000])
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 413);
    assert_eq!(problem(&r).as_deref(), Some("application/problem+json"));
    let doc: Value = r.json().await.expect("problem json");
    assert_eq!(doc["status"], 413);
    reader.stop().await;
    world.stop().await;
}

/// Every `href` in a document (pages, records, embedded transactions), with the JSON
/// path it was found at; templated links are left out.
fn hrefs(doc: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match doc {
        Value::Object(map) => {
            if let (Some(Value::String(href)), false) = (
                map.get("href"),
                map.get("templated").and_then(Value::as_bool) == Some(true),
            ) {
                out.push((at.to_owned(), href.clone()));
            }
            for (k, v) in map {
                hrefs(v, &format!("{at}.{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                hrefs(v, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_link_resolves_and_single_resources_are_served() {
    let world = World::start(6, false).await;
    world.wait_replica();
    let reader = TestReader::over(&world, &[]).await;
    let tip = world.latest();
    let all = world.records_through(tip);
    let fee_bump = all
        .iter()
        .find(|r| r.transaction.inner_hash.is_some() && r.transaction.fee_source.is_some());

    // Follow every link of pages (with embedded transactions) and of what they link to.
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut queue: Vec<String> = vec![
        format!("{}/", reader.base),
        format!(
            "{}/payments?limit=50&join=transactions&include_failed=true",
            reader.base
        ),
        format!("{}/payments?limit=7&order=desc", reader.base),
        format!("{}/ledgers/{}/payments?limit=3", reader.base, FIRST + 1),
    ];
    if let Some(r) = fee_bump {
        queue.push(format!(
            "{}/transactions/{}/payments?join=transactions",
            reader.base,
            hex::encode(r.transaction.inner_hash.expect("inner"))
        ));
    }
    let mut followed = 0;
    while let Some(url) = queue.pop() {
        if !seen.insert(url.clone()) || followed > 400 {
            continue;
        }
        followed += 1;
        let r = reader.client.get(&url).send().await.expect("request");
        assert_eq!(r.status(), 200, "GET {url}");
        let doc: Value = r.json().await.expect("json");
        let mut found = Vec::new();
        hrefs(&doc, "$", &mut found);
        for (at, href) in found {
            assert!(href.starts_with(&reader.base), "{at} of {url}: {href}");
            queue.push(href);
        }
    }
    assert!(followed > 50, "followed {followed} links");

    // One operation: the record a page embeds, with an immutable ETag and 304s.
    let page = reader.json("/payments?limit=20&include_failed=true").await;
    for record in page["_embedded"]["records"].as_array().expect("records") {
        let id = record["id"].as_str().expect("id");
        let r = reader.get(&format!("/operations/{id}")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok()),
            Some("public, max-age=31536000, immutable")
        );
        let tag = r.headers()["etag"].to_str().expect("etag").to_owned();
        assert_eq!(r.json::<Value>().await.expect("json"), *record);
        // Read once: a 304, a hit and a hit under a stale tag read nothing more, and
        // all carry the same tag.
        let before = reader.db_queries();
        let again = reader
            .get_with(&format!("/operations/{id}"), &[("if-none-match", &tag)])
            .await;
        assert_eq!(again.status(), 304);
        assert_eq!(again.headers()["etag"].to_str().ok(), Some(tag.as_str()));
        for headers in [
            vec![],
            vec![("if-none-match", "\"i-000000000000000000000000\"")],
        ] {
            let hit = reader
                .get_with(&format!("/operations/{id}"), &headers)
                .await;
            assert_eq!(hit.status(), 200, "{headers:?}");
            assert_eq!(hit.headers()["etag"].to_str().ok(), Some(tag.as_str()));
            assert_eq!(hit.json::<Value>().await.expect("json"), *record);
        }
        assert_eq!(
            reader.db_queries(),
            before,
            "/operations/{id} was read again"
        );
    }
    // One transaction: what join=transactions embeds.
    let joined = reader.json("/payments?limit=20&join=transactions").await;
    for record in joined["_embedded"]["records"].as_array().expect("records") {
        let hash = record["transaction_hash"].as_str().expect("hash");
        let r = reader.get(&format!("/transactions/{hash}")).await;
        assert_eq!(r.status(), 200);
        assert!(r.headers().contains_key("etag"));
        assert_eq!(
            r.json::<Value>().await.expect("json"),
            record["transaction"]
        );
    }
    if let Some(r) = fee_bump {
        let inner = hex::encode(r.transaction.inner_hash.expect("inner"));
        let by_inner = reader.json(&format!("/transactions/{inner}")).await;
        assert_eq!(by_inner, transaction_json(&r.transaction, &reader.links()));
    }
    // Unknown or not a payment: 404 problem documents, also with If-None-Match: *.
    let not_payment = (i64::from(FIRST + 1) << 32) | (1 << 12) | 4095;
    for path in [
        format!("/operations/{not_payment}"),
        format!("/operations/{}", i64::from(tip + 5) << 32 | 1 << 12 | 1),
        format!("/transactions/{}", "ab".repeat(32)),
        "/ledgers/5/payments".to_owned(),
        format!("/ledgers/{}/payments", tip + 100),
        format!("/transactions/{}/payments", "ab".repeat(32)),
    ] {
        for headers in [vec![], vec![("if-none-match", "*")]] {
            let r = reader.get_with(&path, &headers).await;
            assert_eq!(r.status(), 404, "{path} {headers:?}");
            assert_eq!(
                r.headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok()),
                Some("application/problem+json")
            );
        }
    }
    // `*` on what exists is 304.
    let r = reader
        .get_with(
            &format!("/ledgers/{}/payments", FIRST + 1),
            &[("if-none-match", "*")],
        )
        .await;
    assert_eq!(r.status(), 304);
    for bad in [
        "/operations/abc",
        "/operations/-3",
        "/operations/0",
        "/transactions/xyz",
    ] {
        assert_eq!(reader.get(bad).await.status(), 400, "{bad}");
    }
    reader.stop().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_now_resolves_and_a_polling_loop_loses_nothing() {
    let world = World::start(8, false).await;
    world.wait_replica();
    let reader = TestReader::over(&world, &[]).await;
    let start_tip = world.latest();

    // An SDK's `payments().cursor("now").call()`: an empty page whose links carry a
    // concrete position.
    let page = reader.json("/payments?cursor=now&limit=200").await;
    assert_eq!(
        page["_embedded"]["records"].as_array().map(Vec::len),
        Some(0)
    );
    let mut next = page["_links"]["next"]["href"]
        .as_str()
        .expect("next")
        .to_owned();
    for link in ["self", "next", "prev"] {
        let href = page["_links"][link]["href"].as_str().expect("href");
        assert!(!href.contains("cursor=now"), "{link}: {href}");
    }
    let desc = reader.json("/payments?cursor=now&order=desc&limit=3").await;
    assert!(!desc["_links"]["next"]["href"]
        .as_str()
        .expect("next")
        .contains("now"));

    // Then `.next()` in a loop while ledgers close: every record of the new ledgers.
    let mut got: Vec<Value> = Vec::new();
    for _ in 0..3 {
        let tip = world.close_next().await;
        world.wait_replica();
        reader.wait_tip(tip).await;
        loop {
            let r = reader.client.get(&next).send().await.expect("request");
            assert_eq!(r.status(), 200);
            let page: Value = r.json().await.expect("json");
            let records = page["_embedded"]["records"].as_array().expect("records");
            next = page["_links"]["next"]["href"]
                .as_str()
                .expect("next")
                .to_owned();
            assert!(!next.contains("now"));
            if records.is_empty() {
                break;
            }
            got.extend(records.iter().cloned());
        }
    }
    let want: Vec<Value> = world
        .records_through(world.latest())
        .into_iter()
        .filter(|r| r.successful() && r.id.ledger_seq > start_tip)
        .map(|r| payment_json(r, &reader.links(), false))
        .collect();
    assert!(!want.is_empty(), "the new ledgers hold payments");
    // The poller keeps polling: a page answered from a replica whose newest ledger the
    // reader had not polled yet comes back empty, and the next poll has it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while got.len() < want.len() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let page: Value = reader
            .client
            .get(&next)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        next = page["_links"]["next"]["href"]
            .as_str()
            .expect("next")
            .to_owned();
        assert!(!next.contains("now"));
        got.extend(
            page["_embedded"]["records"]
                .as_array()
                .expect("records")
                .iter()
                .cloned(),
        );
    }
    assert_eq!(ids(&got), ids(&want));
    assert_eq!(got, want);
    reader.stop().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_does_not_change_a_plain_page() {
    let world = World::start(6, false).await;
    world.wait_replica();
    let reader = TestReader::over(&world, &[]).await;
    let plain = reader.get("/payments?limit=20").await;
    let tag = plain.headers()["etag"].to_str().expect("etag").to_owned();
    let vary = plain.headers()["vary"].to_str().expect("vary").to_owned();
    let body: Value = plain.json().await.expect("json");
    let records = body["_embedded"]["records"].as_array().expect("records");
    assert!(records.len() >= 2, "{body}");
    let fifth = records[records.len() / 2]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // A shared cache stores this under the plain URL: the header must not change it.
    let with_header = reader
        .get_with("/payments?limit=20", &[("last-event-id", &fifth)])
        .await;
    assert_eq!(with_header.status(), 200);
    assert_eq!(
        with_header.headers()["etag"].to_str().ok(),
        Some(tag.as_str())
    );
    assert!(!vary.to_ascii_lowercase().contains("last-event-id"));
    assert_eq!(with_header.json::<Value>().await.expect("json"), body);
    reader.stop().await;
    world.stop().await;
}

/// Pages without `join=transactions` take each record's transaction hash from the
/// payment's own row (migration V6). A reader that finds no such column (its writer has
/// not migrated yet) joins `transactions` as before, and switches when the column
/// appears; rows written before V6 have no hash until `fill_payment_transaction_hashes`
/// fills them, and take it from `transactions` meanwhile. The records are the same at
/// every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_the_same_before_during_and_after_the_hash_migration() {
    let world = World::start(12, false).await;
    let primary = sqlx::PgPool::connect(&world.pg.primary_url())
        .await
        .expect("connect");
    let run = |sql: String| {
        let primary = primary.clone();
        async move {
            sqlx::query(&sql).execute(&primary).await.expect(&sql);
        }
    };
    let count = |sql: &'static str| {
        let primary = primary.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&primary)
                .await
                .expect(sql)
        }
    };
    const MISMATCHED: &str = "SELECT count(*) FROM payments p JOIN transactions t \
        ON t.id = p.transaction_id WHERE p.transaction_hash IS DISTINCT FROM t.hash";
    const MISSING: &str = "SELECT count(*) FROM payments WHERE transaction_hash IS NULL";
    assert_eq!(
        count(MISMATCHED).await,
        0,
        "the writer keeps every row's hash"
    );

    // A database before V6: no column at all.
    run("ALTER TABLE payments DROP COLUMN transaction_hash".into()).await;
    world.wait_replica();
    let reader = TestReader::over(&world, &["--cache-bytes", "0"]).await;
    let tip = world.latest();
    let all: Vec<&PaymentRecord> = world.records_through(tip);
    let want = expected(&all, &reader, false);
    let busiest = {
        let mut activity: BTreeMap<String, usize> = BTreeMap::new();
        for r in &all {
            for p in r.participants() {
                *activity.entry(p.address.to_strkey()).or_default() += 1;
            }
        }
        activity
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map(|(a, _)| a)
            .expect("an account")
    };
    let theirs: Vec<&PaymentRecord> = all
        .iter()
        .copied()
        .filter(|r| {
            r.participants()
                .into_iter()
                .any(|p| p.address.to_strkey() == busiest)
        })
        .collect();
    assert!(theirs.len() > 10);
    let account_path = format!("/accounts/{busiest}/payments?limit=50&include_failed=true");
    let account_want = expected(&theirs, &reader, false);
    let one = all[all.len() / 2];
    let operation_path = format!("/operations/{}", one.id);
    let check = || async {
        assert_eq!(
            reader.walk("/payments?limit=200&include_failed=true").await,
            want
        );
        assert_eq!(reader.walk(&account_path).await, account_want);
        assert_eq!(
            reader.json(&operation_path).await,
            payment_json(one, &reader.links(), false)
        );
    };
    check().await;

    // V6 applied: the column exists and old rows have no hash. The reader's probe finds
    // the column and pages read it: one row given a hash of zeros shows it.
    run("ALTER TABLE payments ADD COLUMN transaction_hash bytea".into()).await;
    run(format!(
        "UPDATE payments SET transaction_hash = '\\x{}' WHERE id = {}",
        "00".repeat(32),
        one.id
    ))
    .await;
    world.wait_replica();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let shown = reader.json(&operation_path).await;
        if shown["transaction_hash"] == "00".repeat(32) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reader never read the new column: {shown}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    run(format!(
        "UPDATE payments SET transaction_hash = NULL WHERE id = {}",
        one.id
    ))
    .await;
    // A third of the rows filled, the rest not yet.
    run(
        "UPDATE payments p SET transaction_hash = t.hash FROM transactions t \
         WHERE t.id = p.transaction_id AND p.id % 3 = 0"
            .into(),
    )
    .await;
    let missing = count(MISSING).await;
    assert!(missing > 100, "{missing} rows without a hash");
    world.wait_replica();
    check().await;

    // The fill, one ledger per transaction, leaves no row without its hash.
    run("CALL fill_payment_transaction_hashes(1)".into()).await;
    assert_eq!(count(MISSING).await, 0);
    assert_eq!(count(MISMATCHED).await, 0);
    world.wait_replica();
    check().await;
    for bad in ["0", "NULL", "1000001"] {
        let refused = sqlx::query(&format!("CALL fill_payment_transaction_hashes({bad})"))
            .execute(&primary)
            .await;
        assert!(refused.is_err(), "a batch of {bad} ledgers is refused");
    }

    reader.stop().await;
    world.stop().await;
}
