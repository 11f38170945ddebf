//! Shared by the writer's integration tests: the recorded ledgers as one chain, the RPC
//! simulator serving it, writers in-process or as real processes (reaped on drop with
//! [`Reaped`]), and a canonical dump
//! of the database to compare runs.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loadtest::simnet::{Simnet, SimnetConfig};
use shared::{LedgerPayments, Network};
use stellar_xdr::LedgerCloseMeta;
use tokio_util::sync::CancellationToken;
use writer::cli::{Cli, Command as WriterCommand, RunArgs};
use writer::status::Status;

pub fn fixtures() -> PathBuf {
    shared::testkit::fixtures::dir()
}

/// Every recorded pubnet ledger re-chained into 12 contiguous ledgers from 1,000,000.
pub fn fixture_chain() -> Vec<LedgerCloseMeta> {
    loadtest::simnet::recorded_fixture_chain(&fixtures(), 1_000_000).expect("fixture chain")
}

/// What the extractor makes of the chain.
pub fn extracted(chain: &[LedgerCloseMeta]) -> Vec<LedgerPayments> {
    shared::testkit::fixtures::extract_all(chain, Network::pubnet())
}

/// A simulator serving `chain` with `closed` ledgers already closed.
pub async fn simnet(chain: Vec<LedgerCloseMeta>, closed: usize) -> Simnet {
    let mut config = SimnetConfig::new(chain);
    config.initially_closed = closed;
    Simnet::start(config).await.expect("simnet starts")
}

/// The `writer run` command line the tests use, against a database and an RPC.
fn run_argv(database_url: &str, rpc_url: &str, health: &str, extra: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = [
        "run",
        "--database-url",
        database_url,
        "--rpc-url",
        rpc_url,
        "--network",
        "pubnet",
        "--start",
        "1000000",
        "--poll-interval-ms",
        "100",
        "--standby-poll-ms",
        "200",
        "--max-backoff-ms",
        "400",
        "--health-listen",
        health,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    argv
}

/// `writer run` arguments against a database and an RPC.
pub fn run_args(database_url: &str, rpc_url: &str, extra: &[&str]) -> RunArgs {
    let argv = std::iter::once("writer".to_owned()).chain(run_argv(
        database_url,
        rpc_url,
        "127.0.0.1:0",
        extra,
    ));
    match <Cli as clap::Parser>::try_parse_from(argv)
        .expect("valid arguments")
        .command
    {
        WriterCommand::Run(args) => args,
        _ => unreachable!("parsed a run command"),
    }
}

/// A writer running in this process.
pub struct InProcessWriter {
    pub status: Status,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcessWriter {
    pub fn start(args: RunArgs) -> Self {
        let status = Status::new();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(writer::commands::run::run_until_shutdown(
            args,
            status.clone(),
            shutdown.clone(),
        ));
        Self {
            status,
            shutdown,
            task,
        }
    }

    /// Waits until the writer has committed `ledger`.
    pub async fn wait_for(&self, ledger: u32, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self
            .status
            .snapshot()
            .last_ledger
            .is_none_or(|l| l < ledger)
        {
            assert!(
                !self.task.is_finished(),
                "writer stopped early: {:?}",
                self.status.snapshot()
            );
            assert!(
                Instant::now() < deadline,
                "ledger {ledger} not committed in time: {:?}",
                self.status.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await.expect("writer task")
    }
}

/// The `writer run` process command, output discarded: add to it (environment, a file
/// for stderr) and spawn.
pub fn writer_command(database_url: &str, rpc_url: &str, health: &str, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_writer"));
    command
        .args(run_argv(database_url, rpc_url, health, extra))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        // Never read: a piped stderr could fill up and block the writer.
        .stderr(Stdio::null());
    command
}

/// A writer as a real process (for kill -9 and signals).
pub fn spawn_writer(database_url: &str, rpc_url: &str, health: &str, extra: &[&str]) -> Child {
    writer_command(database_url, rpc_url, health, extra)
        .spawn()
        .expect("writer starts")
}

/// A child process killed and reaped when dropped, so a failing test leaves none behind.
#[derive(Debug)]
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A connection as the writer makes them (the URL's `sslmode` and `sslrootcert` apply).
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = shared::pgtls::PgTarget::parse(url)
        .expect("database URL")
        .connect()
        .await
        .expect("connects");
    tokio::spawn(connection);
    client
}

/// The payment ids of `ledgers` in order: what storing them must leave in `payments`.
pub fn payment_ids(ledgers: &[LedgerPayments]) -> Vec<i64> {
    ledgers
        .iter()
        .flat_map(|l| l.payments.iter().map(|p| p.id.to_i64()))
        .collect()
}

/// The stored payment ids in order.
pub async fn stored_payment_ids(db: &tokio_postgres::Client) -> Vec<i64> {
    db.query("SELECT id FROM payments ORDER BY id", &[])
        .await
        .expect("payments")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The cursor's ledger and hash (the cursor must exist).
pub async fn cursor_row(db: &tokio_postgres::Client) -> (u32, Vec<u8>) {
    let row = db
        .query_one(
            "SELECT last_ledger, last_ledger_hash FROM ingest_cursor",
            &[],
        )
        .await
        .expect("cursor");
    (row.get::<_, i32>(0) as u32, row.get(1))
}

/// The cursor's ledger, if any.
pub async fn cursor(url: &str) -> Option<u32> {
    let client = connect(url).await;
    let exists: bool = client
        .query_one("SELECT to_regclass('ingest_cursor') IS NOT NULL", &[])
        .await
        .expect("query")
        .get(0);
    if !exists {
        return None;
    }
    client
        .query_opt("SELECT last_ledger FROM ingest_cursor", &[])
        .await
        .expect("query")
        .map(|row| row.get::<_, i32>(0) as u32)
}

pub async fn wait_for_cursor(url: &str, ledger: u32, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while cursor(url).await.is_none_or(|l| l < ledger) {
        assert!(Instant::now() < deadline, "cursor did not reach {ledger}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every row of every table, as sorted JSON text, without the wall-clock columns: two
/// databases that ingested the same chain must dump the same.
pub async fn dump(url: &str) -> Vec<String> {
    let client = connect(url).await;
    let queries = [
        "SELECT row_to_json(t)::text FROM (SELECT network_passphrase, last_ledger, encode(last_ledger_hash, 'hex') AS hash FROM ingest_cursor) t",
        "SELECT row_to_json(t)::text FROM (SELECT sequence, encode(hash, 'hex') AS hash, encode(previous_hash, 'hex') AS prev, closed_at, protocol_version, transaction_count, successful_transaction_count, operation_count, payment_count FROM ledgers ORDER BY sequence) t",
        "SELECT row_to_json(t)::text FROM (SELECT * FROM transactions ORDER BY id) t",
        "SELECT row_to_json(t)::text FROM (SELECT * FROM payments ORDER BY id) t",
        // History rows by address and asset text: ids depend on the order writers met them.
        "SELECT row_to_json(t)::text FROM (SELECT a.address, h.payment_id, h.direction, h.successful FROM account_payments h JOIN accounts a ON a.id = h.account_id ORDER BY a.address, h.payment_id) t",
        "SELECT row_to_json(t)::text FROM (SELECT s.asset, h.payment_id, h.successful FROM asset_payments h JOIN assets s ON s.id = h.asset_id ORDER BY s.asset, h.payment_id) t",
        "SELECT row_to_json(t)::text FROM (SELECT a.address, s.asset, h.payment_id, h.direction, h.successful FROM account_asset_history h JOIN accounts a ON a.id = h.account_id JOIN assets s ON s.id = h.asset_id ORDER BY a.address, s.asset, h.payment_id) t",
        "SELECT row_to_json(t)::text FROM (SELECT a.address, x.last_payment_id, x.last_ledger FROM account_last_activity x JOIN accounts a ON a.id = x.account_id ORDER BY a.address) t",
        // Every history row names a dictionary entry of its own kind (the joins above
        // would silently drop one that does not).
        "SELECT row_to_json(t)::text FROM (SELECT \
           (SELECT count(*) FROM account_payments h LEFT JOIN accounts a ON a.id = h.account_id WHERE a.id IS NULL) AS orphan_account_payments, \
           (SELECT count(*) FROM asset_payments h LEFT JOIN assets s ON s.id = h.asset_id WHERE s.id IS NULL) AS orphan_asset_payments, \
           (SELECT count(*) FROM account_asset_history h LEFT JOIN accounts a ON a.id = h.account_id LEFT JOIN assets s ON s.id = h.asset_id WHERE a.id IS NULL OR s.id IS NULL) AS orphan_account_asset_history, \
           (SELECT count(*) FROM account_last_activity x LEFT JOIN accounts a ON a.id = x.account_id WHERE a.id IS NULL) AS orphan_last_activity) t",
    ];
    let mut out = Vec::new();
    for query in queries {
        for row in client.query(query, &[]).await.expect("dump query") {
            out.push(row.get::<_, String>(0));
        }
    }
    out
}

/// Creates another database on the same server and returns its URL.
pub async fn create_database(url: &str, name: &str) -> String {
    let client = connect(url).await;
    client
        .execute(&format!("CREATE DATABASE {name}"), &[])
        .await
        .expect("create database");
    match url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("unexpected URL {url}"),
    }
}

/// GET a JSON document.
pub async fn get_json(url: &str) -> Option<serde_json::Value> {
    serde_json::from_str(get_text(url).await?.1.trim()).ok()
}

/// GET a document: (status code, body). Plain HTTP/1.1 with `Connection: close`.
pub async fn get_text(url: &str) -> Option<(u16, String)> {
    let (host, path) = url.trim_start_matches("http://").split_once('/')?;
    let mut stream = tokio::net::TcpStream::connect(host).await.ok()?;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Writes `chain` as a data lake in the SEP-54 layout under a fresh temporary folder;
/// the chain must fill whole batches.
pub fn write_lake(
    chain: &[LedgerCloseMeta],
    ledgers_per_batch: u32,
    batches_per_partition: u32,
) -> tempfile::TempDir {
    use shared::datalake::{Config, DataLake};
    let dir = tempfile::tempdir().expect("tmp");
    let lake = DataLake::create(
        dir.path(),
        Config {
            network_passphrase: shared::network::PUBNET_PASSPHRASE.to_owned(),
            ledgers_path: "ledgers".to_owned(),
            compression: "zstd".to_owned(),
            ledgers_per_batch,
            batches_per_partition,
        },
    )
    .expect("create lake");
    for metas in chain.chunks(ledgers_per_batch as usize) {
        let batch = stellar_xdr::LedgerCloseMetaBatch {
            start_sequence: ledger_seq(&metas[0]),
            end_sequence: ledger_seq(&metas[metas.len() - 1]),
            ledger_close_metas: metas.to_vec().try_into().expect("fits"),
        };
        lake.write_batch(&batch, 1).expect("write batch");
    }
    dir
}

pub fn ledger_seq(meta: &LedgerCloseMeta) -> u32 {
    shared::ledger_file::ledger_seq(meta)
}
