//! A ledger whose contents do not hash to what its header says is refused by name and
//! never stored, whether the RPC serves it (live ingestion stops on it after refetching)
//! or a data-lake file holds it (the backfill fails on it).

use std::process::Command;
use std::time::Duration;

use crate::support::{
    connect, create_database, cursor, fixture_chain, run_args, simnet, write_lake, InProcessWriter,
};
use shared::testkit::PostgresCluster;
use stellar_xdr::{LedgerCloseMeta, TransactionEnvelope};

const FIRST: u32 = 1_000_000;

/// Flips a bit of a signature in ledger `index`: the ledger still decodes and extracts
/// (transaction hashes do not cover signatures), but its transaction set no longer hashes
/// to its header's txSetHash.
fn corrupt_tx_set(chain: &mut [LedgerCloseMeta], index: usize) {
    let bump = |e: &mut TransactionEnvelope| {
        let signatures = match e {
            TransactionEnvelope::TxV0(e) => &mut e.signatures,
            TransactionEnvelope::Tx(e) => &mut e.signatures,
            TransactionEnvelope::TxFeeBump(e) => &mut e.signatures,
        };
        let signature = signatures.iter_mut().next().expect("a signature");
        let mut bytes = signature.signature.to_vec();
        bytes[0] ^= 1;
        signature.signature = bytes.try_into().expect("same length");
    };
    match &mut chain[index] {
        LedgerCloseMeta::V0(m) => bump(m.tx_set.txs.iter_mut().next().expect("a transaction")),
        LedgerCloseMeta::V1(m) => bump_generalized(&mut m.tx_set, bump),
        LedgerCloseMeta::V2(m) => bump_generalized(&mut m.tx_set, bump),
    }
}

fn bump_generalized(
    set: &mut stellar_xdr::GeneralizedTransactionSet,
    bump: impl Fn(&mut TransactionEnvelope),
) {
    let stellar_xdr::GeneralizedTransactionSet::V1(set) = set;
    for phase in set.phases.iter_mut() {
        if let stellar_xdr::TransactionPhase::V0(components) = phase {
            for stellar_xdr::TxSetComponent::TxsetCompTxsMaybeDiscountedFee(c) in
                components.iter_mut()
            {
                if let Some(envelope) = c.txs.iter_mut().next() {
                    bump(envelope);
                    return;
                }
            }
        }
    }
    panic!("no classic envelope");
}

async fn stored_ledgers(url: &str) -> Vec<u32> {
    connect(url)
        .await
        .query("SELECT sequence FROM ledgers ORDER BY sequence", &[])
        .await
        .expect("ledgers")
        .iter()
        .map(|r| r.get::<_, i32>(0) as u32)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_ledger_from_the_rpc_is_refused_by_name_and_never_stored() {
    let cluster = PostgresCluster::start().expect("postgres");
    let mut chain = fixture_chain();
    corrupt_tx_set(&mut chain, 3);
    let sim = simnet(chain, 6).await;
    let writer = InProcessWriter::start(run_args(
        &cluster.primary_url(),
        &sim.url(),
        &["--max-bad-ledger-attempts", "2"],
    ));
    let error = tokio::time::timeout(Duration::from_secs(60), writer.task)
        .await
        .expect("stops")
        .expect("task");
    let message = format!("{:#}", error.expect_err("refused"));
    assert!(
        message.contains(&format!("ledger {}", FIRST + 3))
            && message.contains("transaction set hash (scpValue.txSetHash) mismatch"),
        "{message}"
    );
    assert_eq!(cursor(&cluster.primary_url()).await, Some(FIRST + 2));
    assert_eq!(
        stored_ledgers(&cluster.primary_url()).await,
        vec![FIRST, FIRST + 1, FIRST + 2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_ledger_in_a_data_lake_file_fails_the_backfill_by_name() {
    let cluster = PostgresCluster::start().expect("postgres");
    let url = create_database(&cluster.primary_url(), "lake").await;
    // Apply the schema first, as an operator would.
    let migrate = Command::new(env!("CARGO_BIN_EXE_writer"))
        .args(["migrate", "--database-url", &url])
        .output()
        .expect("migrate runs");
    assert!(migrate.status.success(), "{migrate:?}");
    let mut chain = fixture_chain();
    corrupt_tx_set(&mut chain, 5);
    let lake = write_lake(&chain, 2, 2);
    let out = Command::new(env!("CARGO_BIN_EXE_writer"))
        .args(["backfill", "--database-url", &url, "--network", "pubnet"])
        .args(["--source", lake.path().to_str().expect("utf-8 path")])
        .args(["--from", &FIRST.to_string()])
        .args(["--to", &(FIRST + 11).to_string()])
        .args(["--workers", "1", "--chunk-ledgers", "2", "--quiet"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("backfill runs");
    assert!(!out.status.success(), "the backfill must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("ledger {}", FIRST + 5))
            && stderr.contains("transaction set hash (scpValue.txSetHash) mismatch"),
        "{stderr}"
    );
    let stored = stored_ledgers(&url).await;
    assert!(
        !stored.contains(&(FIRST + 5)) && !stored.contains(&(FIRST + 4)),
        "the corrupted batch is not stored: {stored:?}"
    );
}
