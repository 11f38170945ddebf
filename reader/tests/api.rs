//! Every route and parameter against a replica fed by the writer from the recorded
//! ledgers: records equal what the extractor made of the same ledgers (rendered by the
//! shared Horizon renderer), full pagination walks in both orders equal the data, and
//! every kind of bad input is a 4xx problem document.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use shared::horizon::{payment_json, transaction_json};
use shared::payment::{PaymentRecord, PaymentType, Role};
use support::{ids, TestReader, World, FIRST};

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
    // Not a GET route.
    let r = reader
        .client
        .post(format!("{}/payments", reader.base))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 405);
    reader.stop().await;
    world.stop().await;
}
