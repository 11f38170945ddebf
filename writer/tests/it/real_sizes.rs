//! The writer on pubnet-sized ledgers: a catch-up over 100 copies of pubnet ledger
//! 51000294 (1.45 MB of XDR, 541 transactions each, fresh transaction hashes per copy)
//! served by the RPC simulator stores every payment exactly once.
//!
//! The chain starts with small synthetic ledgers, so the page sizer first learns that
//! ledgers are small and asks for a page that would be hundreds of MB once the large ones
//! begin: the answer goes over the response cap (set to the 10 MiB that the
//! `stellar-rpc-client` crate's client is stuck with) and the page must shrink and grow
//! back. A writer that sized pages by count never got past the second large ledger.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::{
    connect, extracted, fixtures, payment_ids, run_args, simnet, stored_payment_ids,
    InProcessWriter,
};
use loadtest::simnet::{pubnet_replica_chain, rechain, synthetic_chain, SyntheticTail};
use shared::testkit::PostgresCluster;
use shared::Network;

const FIRST: u32 = 1_000_000;
const SMALL: u32 = 10;
const LARGE: u32 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_over_pubnet_sized_ledgers_stores_every_payment_once() {
    let cluster = PostgresCluster::start().expect("postgres");
    let mut chain = synthetic_chain(
        FIRST,
        SMALL,
        SyntheticTail {
            payments_per_ledger: 20,
            ..SyntheticTail::default()
        },
        Network::pubnet(),
    )
    .expect("synthetic ledgers");
    chain.extend(pubnet_replica_chain(&fixtures(), FIRST + SMALL, LARGE).expect("replicas"));
    let chain = rechain(chain, FIRST).expect("one chain");
    let total = chain.len() as u32;
    let last = FIRST + total - 1;
    let expected = extracted(&chain);
    let sim = simnet(chain, total as usize).await;

    let writer = InProcessWriter::start(run_args(
        &cluster.primary_url(),
        &sim.url(),
        &["--rpc-max-response-mib", "10", "--page-mib", "10"],
    ));
    writer.wait_for(last, Duration::from_secs(240)).await;
    writer.stop().await.expect("clean stop");

    let db = connect(&cluster.primary_url()).await;
    // Every ledger once, with its counts.
    let rows = db
        .query(
            "SELECT sequence, transaction_count, payment_count FROM ledgers ORDER BY sequence",
            &[],
        )
        .await
        .expect("ledgers");
    assert_eq!(rows.len(), expected.len());
    for (row, ledger) in rows.iter().zip(&expected) {
        assert_eq!(row.get::<_, i32>(0) as u32, ledger.ledger.sequence);
        assert_eq!(row.get::<_, i32>(1) as u32, ledger.stats.transactions);
        assert_eq!(row.get::<_, i32>(2) as usize, ledger.payments.len());
    }
    let large = &expected[SMALL as usize..];
    assert!(large.iter().all(|l| l.stats.transactions == 541));
    // Every payment exactly once: the stored ids are the extracted ids, no more.
    let want = payment_ids(&expected);
    let got = stored_payment_ids(&db).await;
    assert_eq!(got.len(), want.len(), "payments stored");
    assert_eq!(got, want);
    // Every transaction once, under its fresh hash.
    let hashes: BTreeSet<Vec<u8>> = db
        .query("SELECT hash FROM transactions", &[])
        .await
        .expect("transactions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let want_hashes: BTreeSet<Vec<u8>> = expected
        .iter()
        .flat_map(|l| l.payments.iter().map(|p| p.transaction.hash.to_vec()))
        .collect();
    assert!(want_hashes.is_subset(&hashes));
    assert!(
        want_hashes.len() > LARGE as usize * 100,
        "{} transactions with payments",
        want_hashes.len()
    );
}
