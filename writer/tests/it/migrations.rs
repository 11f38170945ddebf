//! Online migration steps: an index on a large table is built `CONCURRENTLY`, outside
//! any transaction (inside one, Postgres refuses it), once; a build that failed half-way
//! leaves an invalid index, which the next run drops and builds again.

use crate::support::connect;
use shared::testkit::PostgresCluster;
use tokio_util::sync::CancellationToken;
use writer::db::{apply_online_steps, OnlineStep};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_steps_run_outside_transactions_once_and_recover_from_a_failed_build() {
    let cluster = PostgresCluster::start().expect("postgres");
    let url = cluster.primary_url();
    writer::db::migrate_when_unlocked(&url, &CancellationToken::new(), || {})
        .await
        .expect("migrations");
    let client = connect(&url).await;
    // Two rows with the same memo type: a unique index on it cannot be built.
    client
        .batch_execute(
            "INSERT INTO transactions (id, hash, ledger_sequence, closed_at, successful, source_account, \
               source_sequence, fee_charged, max_fee, operation_count, memo_type) VALUES \
             (4096, decode(repeat('aa', 32), 'hex'), 1, now(), true, 'G', 1, 100, 100, 1, 7), \
             (8192, decode(repeat('bb', 32), 'hex'), 2, now(), true, 'G', 2, 100, 100, 1, 7)",
        )
        .await
        .expect("rows");
    let steps = [OnlineStep {
        name: "test_unique_memo_type",
        index: Some("test_unique_memo_type"),
        sql: "CREATE UNIQUE INDEX CONCURRENTLY test_unique_memo_type ON transactions (memo_type)",
    }];
    let failed = apply_online_steps(&client, &steps).await;
    assert!(failed.is_err(), "duplicates make the build fail");
    assert_eq!(
        valid(&client).await,
        Some(false),
        "an invalid index is left"
    );

    // Fixed data: the next run drops the invalid index and builds it again, once.
    client
        .batch_execute("UPDATE transactions SET memo_type = 0 WHERE id = 8192")
        .await
        .expect("fix");
    assert_eq!(
        apply_online_steps(&client, &steps).await.expect("applies"),
        1
    );
    assert_eq!(valid(&client).await, Some(true));
    assert_eq!(apply_online_steps(&client, &steps).await.expect("noop"), 0);
}

/// Whether the test index is valid (`None`: absent).
async fn valid(client: &tokio_postgres::Client) -> Option<bool> {
    client
        .query_opt(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE c.relname = 'test_unique_memo_type'",
            &[],
        )
        .await
        .expect("query")
        .map(|r| r.get::<_, bool>(0))
}
