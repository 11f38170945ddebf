//! Backfill from a data lake (and from RPC) into real Postgres: the rows equal those of
//! live ingestion of the same ledgers; a backfill killed and rerun ends with no duplicate
//! and no gap; backfill and the live writer run together on adjacent ranges; and
//! `writer gaps` finds a hole left on purpose.

use std::process::Command;
use std::time::Duration;

use crate::support::{
    create_database, cursor, dump, fixture_chain, run_args, simnet, write_lake, InProcessWriter,
};
use shared::testkit::PostgresCluster;

const FIRST: u32 = 1_000_000;

fn backfill(
    database_url: &str,
    source: &str,
    from: u32,
    to: u32,
    extra: &[&str],
) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_writer"))
        .args([
            "backfill",
            "--database-url",
            database_url,
            "--network",
            "pubnet",
            "--source",
            source,
        ])
        .args(["--from", &from.to_string(), "--to", &to.to_string()])
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .expect("backfill runs")
}

fn gaps(database_url: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_writer"))
        .args(["gaps", "--database-url", database_url])
        .output()
        .expect("gaps runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The database a live run over the whole chain produces.
async fn live_reference(cluster: &PostgresCluster) -> Vec<String> {
    let chain = fixture_chain();
    let sim = simnet(chain.clone(), chain.len()).await;
    let url = create_database(&cluster.primary_url(), "live_reference").await;
    let writer = InProcessWriter::start(run_args(&url, &sim.url(), &[]));
    writer
        .wait_for(FIRST + chain.len() as u32 - 1, Duration::from_secs(60))
        .await;
    writer.stop().await.expect("clean stop");
    dump(&url).await
}

/// The cursor row and the per-database wall-clock details differ between a live run and
/// a backfill; everything else must match.
fn without_cursor(rows: Vec<String>) -> Vec<String> {
    rows.into_iter()
        .filter(|r| !r.contains("network_passphrase"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_lake_backfill_equals_live_ingestion_and_resumes_after_a_kill() {
    let cluster = PostgresCluster::start().expect("postgres");
    let chain = fixture_chain();
    let last = FIRST + chain.len() as u32 - 1;
    let reference = without_cursor(live_reference(&cluster).await);
    let lake = write_lake(&chain, 4, 2);
    let source = lake.path().to_str().expect("utf-8 path");

    // Straight through, two workers, small chunks.
    let url = create_database(&cluster.primary_url(), "straight").await;
    let out = backfill(
        &url,
        source,
        FIRST,
        last,
        &["--workers", "2", "--chunk-ledgers", "2", "--quiet"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains(&format!("{} ledgers", chain.len())),
        "{summary}"
    );
    assert_eq!(without_cursor(dump(&url).await), reference);
    assert!(gaps(&url).contains("no gaps"));
    // Again: everything is there, nothing is written twice.
    let out = backfill(&url, source, FIRST, last, &["--quiet"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 ledgers"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(without_cursor(dump(&url).await), reference);

    // Killed at several points, then rerun to completion.
    for (round, delay_ms) in [5u64, 40, 120, 300].into_iter().enumerate() {
        let url = create_database(&cluster.primary_url(), &format!("killed{round}")).await;
        let mut child = Command::new(env!("CARGO_BIN_EXE_writer"))
            .args([
                "backfill",
                "--database-url",
                &url,
                "--network",
                "pubnet",
                "--source",
                source,
                "--quiet",
            ])
            .args([
                "--from",
                &FIRST.to_string(),
                "--to",
                &last.to_string(),
                "--chunk-ledgers",
                "1",
                "--workers",
                "2",
            ])
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("spawn");
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        let out = backfill(
            &url,
            source,
            FIRST,
            last,
            &["--quiet", "--chunk-ledgers", "1"],
        );
        assert!(
            out.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(without_cursor(dump(&url).await), reference, "round {round}");
        assert!(gaps(&url).contains("no gaps"), "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_and_live_writer_together_on_adjacent_ranges() {
    let cluster = PostgresCluster::start().expect("postgres");
    let chain = fixture_chain();
    let last = FIRST + chain.len() as u32 - 1;
    let live_dump = live_reference(&cluster).await;
    let lake = write_lake(&chain, 1, 4);
    let source = lake.path().to_str().expect("utf-8 path").to_owned();

    // Live ingestion starts at FIRST + 6 while a backfill fills FIRST..FIRST + 5.
    let url = create_database(&cluster.primary_url(), "together").await;
    let sim = simnet(chain.clone(), chain.len()).await;
    let mut args = run_args(&url, &sim.url(), &["--page-limit", "1"]);
    args.start = writer::live::StartPolicy::Ledger(FIRST + 6);
    let live = InProcessWriter::start(args);
    let backfill_url = url.clone();
    let backfilling = tokio::task::spawn_blocking(move || {
        backfill(
            &backfill_url,
            &source,
            FIRST,
            FIRST + 5,
            &["--chunk-ledgers", "1", "--quiet"],
        )
    });
    live.wait_for(last, Duration::from_secs(60)).await;
    let out = backfilling.await.expect("backfill task");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    live.stop().await.expect("clean stop");
    assert!(gaps(&url).contains("no gaps"));
    assert_eq!(cursor(&url).await, Some(last));
    // Same rows as one live run; the cursor differs only in where live ingestion began.
    assert_eq!(without_cursor(dump(&url).await), without_cursor(live_dump));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_that_closes_the_retention_gap_moves_the_cursor_on() {
    let cluster = PostgresCluster::start().expect("postgres");
    let chain = fixture_chain();
    let last = FIRST + chain.len() as u32 - 1;
    let lake = write_lake(&chain, 1, 1);
    let url = cluster.primary_url();
    // Live ingestion got to FIRST + 1, then the RPC forgot everything before FIRST + 8.
    let sim = simnet(chain.clone(), 2).await;
    let writer = InProcessWriter::start(run_args(&url, &sim.url(), &[]));
    writer.wait_for(FIRST + 1, Duration::from_secs(30)).await;
    for _ in 2..chain.len() {
        sim.close_next();
    }
    sim.set_faults(loadtest::simnet::Faults {
        retention: Some(4),
        ..Default::default()
    });
    let status = writer.status.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while status.snapshot().retention_gap.is_none() {
        assert!(std::time::Instant::now() < deadline, "gap not reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gap = status.snapshot().retention_gap.expect("gap");
    // The remedy it prints, run as printed (with the data lake as the source).
    let out = backfill(
        &url,
        lake.path().to_str().expect("path"),
        gap.cursor + 1,
        gap.rpc_oldest - 1,
        &["--quiet"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        cursor(&url).await,
        Some(gap.rpc_oldest - 1),
        "the backfill moved the cursor over the gap"
    );
    // Live ingestion notices at its next check and carries on to the tip.
    writer.wait_for(last, Duration::from_secs(60)).await;
    assert!(status.snapshot().retention_gap.is_none());
    writer.stop().await.expect("clean stop");
    assert!(gaps(&url).contains("no gaps"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_finds_a_hole_left_on_purpose() {
    let cluster = PostgresCluster::start().expect("postgres");
    let chain = fixture_chain();
    let last = FIRST + chain.len() as u32 - 1;
    let lake = write_lake(&chain, 2, 1);
    let source = lake.path().to_str().expect("path");
    let url = cluster.primary_url();
    assert!(backfill(&url, source, FIRST, FIRST + 3, &["--quiet"])
        .status
        .success());
    assert!(backfill(&url, source, FIRST + 8, last, &["--quiet"])
        .status
        .success());
    let report = gaps(&url);
    assert_eq!(
        report.trim(),
        format!("{}-{} (4 ledgers missing)", FIRST + 4, FIRST + 7)
    );
    // A range the data lake does not hold is an error naming the ledger.
    let out = backfill(&url, source, last + 1, last + 2, &["--quiet"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains(&format!("ledger {} is not in the data lake", last + 1)));
    // Filling the hole from RPC.
    let sim = simnet(chain.clone(), chain.len()).await;
    let out = Command::new(env!("CARGO_BIN_EXE_writer"))
        .args([
            "backfill",
            "--database-url",
            &url,
            "--network",
            "pubnet",
            "--source",
            "rpc",
            "--quiet",
        ])
        .args([
            "--rpc-url",
            &sim.url(),
            "--from",
            &(FIRST + 4).to_string(),
            "--to",
            &(FIRST + 7).to_string(),
        ])
        .output()
        .expect("backfill");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(gaps(&url).contains("no gaps"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_data_lake_backfills_to_exactly_the_generated_payments() {
    use loadtest::synth::{generate, write_datalake, SynthConfig};
    use std::collections::BTreeSet;

    let cluster = PostgresCluster::start().expect("postgres");
    let config = SynthConfig {
        first_seq: 64,
        ledgers: 48,
        payments_per_ledger: 60,
        accounts: 400,
        seed: 11,
        ..SynthConfig::default()
    };
    let lake = tempfile::tempdir().expect("tmp");
    let summary = write_datalake(lake.path(), config.clone(), 8, 4).expect("data lake");
    let (from, to) = (summary.first, summary.last);
    let expected: Vec<shared::PaymentRecord> = generate(config).flat_map(|l| l.expected).collect();
    assert_eq!(expected.len() as u64, summary.payments);

    let url = cluster.primary_url();
    let out = backfill(
        &url,
        lake.path().to_str().expect("path"),
        from,
        to,
        &["--workers", "2", "--quiet"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(gaps(&url).contains("no gaps"));

    let db = crate::support::connect(&url).await;
    let rows = db
        .query("SELECT id, type, successful, source_account, destination, asset FROM payments ORDER BY id", &[])
        .await
        .expect("payments");
    assert_eq!(rows.len(), expected.len());
    for (row, record) in rows.iter().zip(&expected) {
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
    }
    let want: BTreeSet<(String, i64)> = expected
        .iter()
        .flat_map(|r| {
            r.participants()
                .into_iter()
                .map(move |p| (p.address.to_strkey(), r.id.to_i64()))
        })
        .collect();
    let got: BTreeSet<(String, i64)> = db
        .query(
            "SELECT a.address, h.payment_id FROM account_payments h JOIN accounts a ON a.id = h.account_id",
            &[],
        )
        .await
        .expect("participants")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(got, want);
}
