//! Shared by the reader's integration tests: a Postgres primary with a streaming
//! replica fed by the real writer from the recorded ledgers (through the RPC
//! simulator), optional Redis, and readers started in-process against them; the same
//! world with TLS-only servers for the TLS tests. The writer is the blue one of an
//! in-process blue/green pair ([`TestWriters`]) that the local stack's handover
//! (`loadtest::stack::control::hand_over`) can drive.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use loadtest::edge::Colour;
use loadtest::stack::control::{WriterHandover, WriterPair};

use loadtest::simnet::{Simnet, SimnetConfig};
use reader::config::ReaderArgs;
use reader::server::RunningReader;
use serde_json::Value;
use shared::horizon::LinkBase;
use shared::payment::PaymentRecord;
use shared::testkit::{PostgresCluster, RedisServer, TestCa};
use shared::{LedgerPayments, Network};
use stellar_xdr::LedgerCloseMeta;
use tokio_util::sync::CancellationToken;
use writer::cli::{Cli, Command as WriterCommand};
use writer::status::Status;

/// The first ledger of the re-chained fixtures.
pub const FIRST: u32 = 1_000_000;

/// Every recorded pubnet ledger re-chained into 12 contiguous ledgers from `FIRST`.
pub fn fixture_chain() -> Vec<LedgerCloseMeta> {
    loadtest::simnet::recorded_fixture_chain(&shared::testkit::fixtures::dir(), FIRST)
        .expect("fixture chain")
}

/// What the extractor makes of the chain.
pub fn extracted(chain: &[LedgerCloseMeta]) -> Vec<LedgerPayments> {
    shared::testkit::fixtures::extract_all(chain, Network::pubnet())
}

/// The `id` of each record.
pub fn ids(values: &[Value]) -> Vec<String> {
    values
        .iter()
        .map(|v| v["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Blocking test-kit calls from async tests (multi-threaded runtime).
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Primary + replica + (optional) Redis + simulator + writer.
pub struct World {
    pub pg: PostgresCluster,
    pub redis: Option<RedisServer>,
    pub simnet: Simnet,
    pub ledgers: Vec<LedgerPayments>,
    writers: tokio::sync::Mutex<TestWriters>,
}

/// A writer run in this process, with its health server.
struct TestWriter {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// A blue and a green writer in this process, each serving `/health` on a free port:
/// what the stack's handover drives in tests.
pub struct TestWriters {
    argv: Vec<String>,
    blue: Option<TestWriter>,
    green: Option<TestWriter>,
    health: [Option<SocketAddr>; 2],
    /// The status of every writer started so far (the newest ledger any committed).
    statuses: Vec<Status>,
}

impl TestWriters {
    fn slot(&mut self, colour: Colour) -> &mut Option<TestWriter> {
        match colour {
            Colour::Blue => &mut self.blue,
            Colour::Green => &mut self.green,
        }
    }

    /// The newest ledger a writer committed.
    fn last_ledger(&self) -> Option<u32> {
        self.statuses
            .iter()
            .filter_map(|s| s.snapshot().last_ledger)
            .max()
    }

    /// Whether no writer runs any more.
    fn all_finished(&self) -> bool {
        [&self.blue, &self.green]
            .iter()
            .all(|w| w.as_ref().is_none_or(|w| w.task.is_finished()))
    }
}

impl WriterPair for TestWriters {
    fn health(&self, colour: Colour) -> Option<SocketAddr> {
        self.health[colour as usize]
    }

    fn running(&mut self, colour: Colour) -> bool {
        self.slot(colour)
            .as_ref()
            .is_some_and(|w| !w.task.is_finished())
    }

    fn start(&mut self, colour: Colour) -> impl Future<Output = anyhow::Result<()>> + Send {
        let argv = self.argv.clone();
        let status = Status::new();
        self.statuses.push(status.clone());
        let stop = CancellationToken::new();
        let token = stop.clone();
        let started = async move {
            let args = match <Cli as clap::Parser>::try_parse_from(argv)?.command {
                WriterCommand::Run(args) => args,
                _ => anyhow::bail!("not a run command"),
            };
            let health =
                writer::status::serve(args.health_listen, status.clone(), token.clone()).await?;
            let task = tokio::spawn(writer::commands::run::run_until_shutdown(
                args, status, token,
            ));
            Ok((health, task))
        };
        async move {
            let (health, task) = started.await?;
            self.health[colour as usize] = Some(health);
            *self.slot(colour) = Some(TestWriter { stop, task });
            Ok(())
        }
    }

    fn stop(&mut self, colour: Colour) -> impl Future<Output = anyhow::Result<()>> + Send {
        let writer = self.slot(colour).take();
        async move {
            if let Some(writer) = writer {
                writer.stop.cancel();
                writer.task.await??;
            }
            Ok(())
        }
    }
}

impl World {
    /// Starts everything with `closed` fixture ledgers closed and ingested, and waits
    /// until the replica has them.
    pub async fn start(closed: usize, with_redis: bool) -> Self {
        Self::start_with(closed, with_redis, None).await
    }

    /// Like [`Self::start`] with Redis, both servers TLS-only with `ca`'s certificate;
    /// the writer connects with `sslmode=verify-full` and `rediss://`.
    pub async fn start_tls(closed: usize, ca: &TestCa) -> Self {
        Self::start_with(closed, true, Some(ca)).await
    }

    async fn start_with(closed: usize, with_redis: bool, ca: Option<&TestCa>) -> Self {
        let pg = blocking(|| match ca {
            Some(ca) => PostgresCluster::start_tls_with_replica(ca),
            None => PostgresCluster::start_with_replica(),
        })
        .expect("postgres");
        let redis = with_redis.then(|| {
            blocking(|| match ca {
                Some(ca) => RedisServer::start_tls(ca),
                None => RedisServer::start(),
            })
            .expect("redis")
        });
        let database_url = match ca {
            Some(ca) => verify_full_url(pg.primary_port(), ca),
            None => pg.primary_url(),
        };
        let chain = fixture_chain();
        let ledgers = extracted(&chain);
        let mut config = SimnetConfig::new(chain);
        config.initially_closed = closed;
        let simnet = Simnet::start(config).await.expect("simnet");
        let mut argv: Vec<String> = [
            "writer",
            "run",
            "--database-url",
            &database_url,
            "--rpc-url",
            &simnet.url(),
            "--network",
            "pubnet",
            "--start",
            "1000000",
            "--poll-interval-ms",
            "50",
            "--health-listen",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if let Some(r) = &redis {
            argv.extend(["--redis-url".to_owned(), r.url()]);
        }
        if let Some(ca) = ca {
            argv.extend([
                "--redis-ca-file".to_owned(),
                ca.ca_file().display().to_string(),
            ]);
        }
        let mut writers = TestWriters {
            argv,
            blue: None,
            green: None,
            health: [None, None],
            statuses: Vec::new(),
        };
        writers
            .start(Colour::Blue)
            .await
            .expect("the blue writer starts");
        let world = Self {
            pg,
            redis,
            simnet,
            ledgers,
            writers: tokio::sync::Mutex::new(writers),
        };
        world.wait_ingested(FIRST + closed as u32 - 1).await;
        world
    }

    /// The newest ledger the simulator has closed.
    pub fn latest(&self) -> u32 {
        self.simnet.latest()
    }

    /// Waits until the writer committed `ledger` and the replica replayed it.
    pub async fn wait_ingested(&self, ledger: u32) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let writers = self.writers.lock().await;
            if writers.last_ledger().is_some_and(|l| l >= ledger) {
                return;
            }
            assert!(!writers.all_finished(), "writer stopped early");
            drop(writers);
            assert!(Instant::now() < deadline, "ledger {ledger} not ingested");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the replica to replay everything the primary has.
    pub fn wait_replica(&self) {
        blocking(|| self.pg.wait_for_replica_replay(Duration::from_secs(30))).expect("replay");
    }

    /// Closes the next ledger and waits until it is ingested (not necessarily replayed).
    pub async fn close_next(&self) -> u32 {
        let seq = self.simnet.close_next().expect("a ledger left to close");
        self.wait_ingested(seq).await;
        seq
    }

    /// The records the extractor produced for ledgers up to `tip`.
    pub fn records_through(&self, tip: u32) -> Vec<&PaymentRecord> {
        self.ledgers
            .iter()
            .filter(|l| l.ledger.sequence <= tip)
            .flat_map(|l| l.payments.iter())
            .collect()
    }

    /// Hands ingestion over to the other colour's writer, as `loadtest switch writer`
    /// does (the old one restarts as the standby), and checks the stored chain.
    pub async fn hand_over_writer(&self) -> anyhow::Result<WriterHandover> {
        let mut writers = self.writers.lock().await;
        loadtest::stack::control::hand_over(&mut *writers, &self.pg.primary_url()).await
    }

    /// Stops the writers: from then on the databases change only as the test changes
    /// them.
    pub async fn stop_writer(&mut self) {
        let mut writers = self.writers.lock().await;
        for colour in [Colour::Blue, Colour::Green] {
            let _ = writers.stop(colour).await;
        }
    }

    pub async fn stop(mut self) {
        self.stop_writer().await;
        self.simnet.shutdown().await;
    }
}

/// `postgres://postgres@localhost:PORT/payments` with `sslmode=verify-full` trusting
/// `ca` (whose server certificate names `localhost`).
pub fn verify_full_url(port: u16, ca: &TestCa) -> String {
    format!(
        "postgres://postgres@localhost:{port}/payments?sslmode=verify-full&sslrootcert={}",
        ca.ca_file().display()
    )
}

/// A reader started in-process, with a client.
pub struct TestReader {
    pub running: Option<RunningReader>,
    pub base: String,
    pub client: reqwest::Client,
}

/// Reader arguments: listen on a free port, poll fast, no drain delay.
pub fn reader_args(extra: &[&str]) -> ReaderArgs {
    let defaults = [
        ("--listen", "127.0.0.1:0"),
        ("--poll-ms", "50"),
        ("--shutdown-drain-ms", "0"),
    ];
    let mut argv = vec!["reader".to_owned()];
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            argv.extend([flag.to_owned(), value.to_owned()]);
        }
    }
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    <ReaderArgs as clap::Parser>::try_parse_from(argv).expect("reader arguments")
}

impl TestReader {
    pub async fn start(args: ReaderArgs) -> Self {
        let running = reader::server::start(&args).await.expect("reader starts");
        let base = format!("http://{}", running.address);
        Self {
            running: Some(running),
            base,
            client: reqwest::Client::new(),
        }
    }

    /// A reader over the world's replica, with the primary as fallback (and Redis when
    /// the world has it).
    pub async fn over(world: &World, extra: &[&str]) -> Self {
        let replica = world.pg.replica_url().expect("replica");
        let primary = world.pg.primary_url();
        let mut argv = vec!["--replica-url", &replica, "--primary-url", &primary];
        let redis = world.redis.as_ref().map(|r| r.url());
        if let Some(r) = &redis {
            argv.extend(["--redis-url", r]);
        }
        argv.extend(extra);
        let reader = Self::start(reader_args(&argv)).await;
        reader.wait_tip(world.latest()).await;
        reader
    }

    pub fn links(&self) -> LinkBase {
        LinkBase(self.base.clone())
    }

    pub fn state(&self) -> &reader::state::AppState {
        &self.running.as_ref().expect("running").state
    }

    /// Database queries this reader has made so far.
    pub fn db_queries(&self) -> u64 {
        self.state()
            .db_queries
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `/` reports `tip` as the latest ledger served.
    pub async fn wait_tip(&self, tip: u32) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.client.get(format!("{}/", self.base)).send().await {
                if r.status() == 200 {
                    let v: Value = r.json().await.expect("json");
                    if v["history_latest_ledger"].as_u64() >= Some(u64::from(tip)) {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "reader never reached ledger {tip}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request")
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.client.get(format!("{}{path}", self.base));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.send().await.expect("request")
    }

    /// GET a JSON document, asserting 200.
    pub async fn json(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.expect("json")
    }

    /// Follows `_links.next` from `path` until an empty page; returns every record.
    pub async fn walk(&self, path: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut url = format!("{}{path}", self.base);
        for _ in 0..10_000 {
            let r = self.client.get(&url).send().await.expect("request");
            assert_eq!(r.status(), 200, "GET {url}");
            let page: Value = r.json().await.expect("json");
            let records = page["_embedded"]["records"]
                .as_array()
                .expect("records")
                .clone();
            if records.is_empty() {
                return out;
            }
            out.extend(records);
            url = page["_links"]["next"]["href"]
                .as_str()
                .expect("next")
                .to_owned();
        }
        panic!("walk did not end");
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("clean shutdown");
        }
    }
}
