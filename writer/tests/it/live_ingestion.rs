//! Live ingestion from the RPC simulator into a real Postgres primary with a streaming
//! replica: the rows are exactly what extraction gives, each new tip is readable on the
//! replica, and tips are announced on Redis (which ingestion never waits for).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::{
    connect, cursor, cursor_row, extracted, fixture_chain, free_port, get_json, get_text, run_args,
    simnet, spawn_writer, wait_for_cursor, InProcessWriter,
};
use shared::testkit::{PostgresCluster, RedisServer};

const FIRST: u32 = 1_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingests_the_chain_exactly_and_the_replica_sees_each_tip() {
    let cluster = PostgresCluster::start_with_replica().expect("postgres");
    let replica_url = cluster.replica_url().expect("replica");
    let chain = fixture_chain();
    let expected = extracted(&chain);
    let sim = simnet(chain.clone(), 1).await;
    let writer = InProcessWriter::start(run_args(
        &cluster.primary_url(),
        &sim.url(),
        &["--page-limit", "3"],
    ));
    writer.wait_for(FIRST, Duration::from_secs(30)).await;
    for _ in 1..chain.len() {
        let seq = sim.close_next().expect("another ledger");
        writer.wait_for(seq, Duration::from_secs(30)).await;
        tokio::task::block_in_place(|| cluster.wait_for_replica_replay(Duration::from_secs(15)))
            .expect("replay");
        assert_eq!(
            cursor(&replica_url).await,
            Some(seq),
            "the replica sees ledger {seq}"
        );
    }
    let last = FIRST + chain.len() as u32 - 1;

    let db = connect(&cluster.primary_url()).await;
    // Ledgers: every one, chained, with its counts.
    let rows = db
        .query("SELECT sequence, hash, previous_hash, transaction_count, payment_count FROM ledgers ORDER BY sequence", &[])
        .await
        .expect("ledgers");
    assert_eq!(rows.len(), chain.len());
    for (row, ledger) in rows.iter().zip(&expected) {
        assert_eq!(row.get::<_, i32>(0) as u32, ledger.ledger.sequence);
        assert_eq!(row.get::<_, Vec<u8>>(1), ledger.ledger.hash.to_vec());
        assert_eq!(
            row.get::<_, Vec<u8>>(2),
            ledger.ledger.previous_hash.to_vec()
        );
        assert_eq!(row.get::<_, i32>(3) as u32, ledger.stats.transactions);
        assert_eq!(row.get::<_, i32>(4) as usize, ledger.payments.len());
    }
    // Payments: same ids, kinds, outcomes, parties, assets and amounts.
    let records: Vec<_> = expected.iter().flat_map(|l| l.payments.iter()).collect();
    let rows = db
        .query("SELECT id, type, successful, source_account, destination, asset, amount FROM payments ORDER BY id", &[])
        .await
        .expect("payments");
    assert_eq!(rows.len(), records.len());
    assert!(records.len() > 1500, "{} payments", records.len());
    for (row, record) in rows.iter().zip(&records) {
        assert_eq!(row.get::<_, i64>(0), record.id.to_i64());
        assert_eq!(row.get::<_, i16>(1), record.payment_type().type_i());
        assert_eq!(row.get::<_, bool>(2), record.successful());
        assert_eq!(row.get::<_, String>(3), record.source.account.to_strkey());
        assert_eq!(
            row.get::<_, Option<String>>(4),
            record.destination().map(|d| d.account.to_strkey())
        );
        assert_eq!(
            row.get::<_, Option<String>>(5),
            record.asset().map(|a| a.canonical())
        );
        let amount = match &record.kind {
            shared::PaymentKind::CreateAccount {
                starting_balance, ..
            } => Some(*starting_balance),
            shared::PaymentKind::Payment { amount, .. }
            | shared::PaymentKind::PathPayment { amount, .. } => Some(*amount),
            shared::PaymentKind::AccountMerge { amount, .. } => *amount,
            shared::PaymentKind::InvokeHostFunction { .. } => None,
        };
        assert_eq!(
            row.get::<_, Option<i64>>(6),
            amount,
            "payment {}",
            record.id
        );
    }
    // Participants: one row per (address, payment) with direction and outcome.
    let mut want = BTreeSet::new();
    for record in &records {
        for p in record.participants() {
            let direction: i16 = match p.role {
                shared::payment::Role::Sender => 1,
                shared::payment::Role::Receiver => 2,
                shared::payment::Role::Both => 3,
            };
            want.insert((
                p.address.to_strkey(),
                record.id.to_i64(),
                direction,
                record.successful(),
            ));
        }
    }
    let got: BTreeSet<_> = db
        .query(
            "SELECT a.address, h.payment_id, h.direction, h.successful \
             FROM account_payments h JOIN accounts a ON a.id = h.account_id",
            &[],
        )
        .await
        .expect("participants")
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                r.get::<_, i64>(1),
                r.get::<_, i16>(2),
                r.get::<_, bool>(3),
            )
        })
        .collect();
    assert_eq!(got, want);
    // Asset rows (per asset, and per account and asset) and each address's newest payment.
    let mut want_assets = BTreeSet::new();
    let mut want_account_assets = BTreeSet::new();
    let mut want_newest = std::collections::BTreeMap::new();
    for record in &records {
        let id = record.id.to_i64();
        for asset in record.assets() {
            want_assets.insert((asset.canonical(), id, record.successful()));
        }
        for p in record.participants() {
            for asset in record.assets() {
                want_account_assets.insert((p.address.to_strkey(), asset.canonical(), id));
            }
            let newest = want_newest.entry(p.address.to_strkey()).or_insert((id, 0));
            if id >= newest.0 {
                *newest = (id, record.transaction.ledger_seq as i32);
            }
        }
    }
    assert!(want_assets.len() > 1000 && want_account_assets.len() > 2000);
    let got: BTreeSet<_> = db
        .query(
            "SELECT s.asset, h.payment_id, h.successful FROM asset_payments h JOIN assets s ON s.id = h.asset_id",
            &[],
        )
        .await
        .expect("asset rows")
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1), r.get::<_, bool>(2)))
        .collect();
    assert_eq!(got, want_assets);
    let got: BTreeSet<_> = db
        .query(
            "SELECT a.address, s.asset, h.payment_id FROM account_asset_history h \
             JOIN accounts a ON a.id = h.account_id JOIN assets s ON s.id = h.asset_id",
            &[],
        )
        .await
        .expect("account asset rows")
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, i64>(2),
            )
        })
        .collect();
    assert_eq!(got, want_account_assets);
    let got: std::collections::BTreeMap<_, _> = db
        .query(
            "SELECT a.address, x.last_payment_id, x.last_ledger FROM account_last_activity x \
             JOIN accounts a ON a.id = x.account_id",
            &[],
        )
        .await
        .expect("last activity")
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                (r.get::<_, i64>(1), r.get::<_, i32>(2)),
            )
        })
        .collect();
    assert_eq!(got, want_newest);
    // Transactions: those with payments, by id and hash.
    let want: BTreeSet<_> = expected
        .iter()
        .flat_map(|l| l.transactions.iter())
        .map(|t| (t.id.to_i64(), t.hash.to_vec()))
        .collect();
    let got: BTreeSet<_> = db
        .query("SELECT id, hash FROM transactions", &[])
        .await
        .expect("transactions")
        .iter()
        .map(|r| (r.get::<_, i64>(0), r.get::<_, Vec<u8>>(1)))
        .collect();
    assert_eq!(got, want);
    // The cursor stands at the last ledger, with its hash.
    let (cursor_ledger, cursor_hash) = cursor_row(&db).await;
    assert_eq!(cursor_ledger, last);
    assert_eq!(
        cursor_hash,
        expected[expected.len() - 1].ledger.hash.to_vec()
    );

    writer.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tips_are_announced_on_redis_and_a_dead_redis_does_not_stop_ingestion() {
    let cluster = PostgresCluster::start().expect("postgres");
    let mut redis_server = RedisServer::start().expect("redis");
    let chain = fixture_chain();
    let sim = simnet(chain.clone(), 2).await;

    let client = redis::Client::open(redis_server.url()).expect("redis url");
    let mut pubsub = client.get_async_pubsub().await.expect("subscribe");
    pubsub
        .subscribe("stellar-payments:tip")
        .await
        .expect("subscribe");

    let writer = InProcessWriter::start(run_args(
        &cluster.primary_url(),
        &sim.url(),
        &["--redis-url", &redis_server.url(), "--page-limit", "1"],
    ));
    writer.wait_for(FIRST + 1, Duration::from_secs(30)).await;
    use futures_util::StreamExt as _;
    let mut messages = pubsub.on_message();
    let mut seen = 0;
    while seen < FIRST + 1 {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("an announcement")
            .expect("stream open");
        let tip: serde_json::Value =
            serde_json::from_str(&message.get_payload::<String>().expect("text")).expect("json");
        seen = tip["sequence"].as_u64().expect("sequence") as u32;
        assert_eq!(tip["hash"].as_str().map(str::len), Some(64));
    }
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let stored: String = redis::cmd("GET")
        .arg("stellar-payments:tip")
        .query_async(&mut con)
        .await
        .expect("get");
    assert!(stored.contains(&format!("\"sequence\":{}", FIRST + 1)));
    drop(messages);

    // Redis dies: ingestion goes on.
    redis_server.kill().expect("kill redis");
    for _ in 0..3 {
        let seq = sim.close_next().expect("ledger");
        writer.wait_for(seq, Duration::from_secs(30)).await;
    }
    writer.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_prometheus_metrics_describe_the_writer() {
    let cluster = PostgresCluster::start().expect("postgres");
    let chain = fixture_chain();
    let last = FIRST + chain.len() as u32 - 1;
    let sim = simnet(chain, 12).await;
    let port = free_port();
    let mut child = spawn_writer(
        &cluster.primary_url(),
        &sim.url(),
        &format!("127.0.0.1:{port}"),
        &["--page-limit", "4"],
    );
    wait_for_cursor(&cluster.primary_url(), last, Duration::from_secs(60)).await;
    let health = get_json(&format!("http://127.0.0.1:{port}/health"))
        .await
        .expect("health");
    assert_eq!(health["role"], "active");
    assert_eq!(health["last_ledger"], last);
    assert_eq!(health["rpc_latest"], last);
    assert_eq!(health["lag_ledgers"], 0);
    assert!(health["lag_seconds"].is_number());
    let (code, metrics) = get_text(&format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("metrics");
    assert_eq!(code, 200);
    for name in [
        "writer_last_ledger",
        "writer_lag_ledgers",
        "writer_lag_seconds",
        "writer_ledgers_total",
        "writer_payments_total",
        "writer_ledgers_per_second",
        "writer_payments_per_second",
        "writer_batch_seconds_bucket",
        "writer_active",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    assert!(
        metrics.contains(&format!("writer_last_ledger {last}")),
        "{metrics}"
    );
    child.kill().expect("kill");
    child.wait().expect("reaped");
}
