//! `from_time` / `to_time` map to ledgers through the close-time index: on a ledgers
//! table the size of a 50M-payment history (250,000 ledgers), the reader's two lookups
//! read a few dozen buffers at most whatever the bound, where the former `min(sequence)` /
//! `max(sequence)` forms walked the primary key and read thousands. (Buffers, not
//! time: the plan's shape is what this checks; docs/benchmarks.md has the timings.)

use crate::support::blocking;
use serde_json::Value;
use shared::testkit::PostgresCluster;

/// Shared buffers the statement read (hit or not), from `EXPLAIN (ANALYZE, BUFFERS,
/// FORMAT JSON)`.
fn buffers(plan: &str) -> u64 {
    let v: Value = serde_json::from_str(plan).expect("plan json");
    let top = &v[0]["Plan"];
    top["Shared Hit Blocks"].as_u64().unwrap_or(0) + top["Shared Read Blocks"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_bounds_are_one_index_probe() {
    let pg = blocking(PostgresCluster::start).expect("postgres");
    let url = pg.primary_url();
    writer::db::migrate_when_unlocked(&url, &tokio_util::sync::CancellationToken::new(), || {})
        .await
        .expect("migrations");
    let sql =
        |text: String| blocking(|| pg.psql(pg.primary_port(), "payments", &text)).expect("psql");
    sql("INSERT INTO ledgers (sequence, hash, previous_hash, closed_at, protocol_version, \
           transaction_count, successful_transaction_count, operation_count, payment_count) \
         SELECT s, sha256(int4send(s)), sha256(int4send(s - 1)), \
           timestamptz '2024-01-01 00:00:00+00' + make_interval(secs => (s - 50000000) * 5 + s % 3), \
           22, 50, 50, 200, 200 \
         FROM generate_series(50000000, 50249999) s"
        .to_owned());
    sql("VACUUM ANALYZE ledgers".to_owned());
    let start = 1_704_067_200_i64; // 2024-01-01T00:00:00Z
    let end = start + 250_000 * 5;
    for (query, bound) in [
        (reader::store::FIRST_LEDGER_FROM, end - 3_600),
        (reader::store::FIRST_LEDGER_FROM, start + 3_600),
        (reader::store::LAST_LEDGER_BEFORE, start + 3_600),
        (reader::store::LAST_LEDGER_BEFORE, end - 3_600),
    ] {
        let explain = format!(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}",
            query.replace("$1", &format!("{bound}::float8"))
        );
        let plan = sql(explain);
        assert!(
            plan.contains("ledgers_by_close_time"),
            "{query} {bound}: {plan}"
        );
        assert!(buffers(&plan) <= 50, "{query} {bound}: {plan}");
    }
}
