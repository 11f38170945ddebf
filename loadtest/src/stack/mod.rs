//! `loadtest stack`: the whole system on this machine, from local processes (the same
//! topology `docker-compose.yml` describes): a Postgres primary with a streaming replica,
//! Redis, an RPC (the simulator replaying the recorded ledgers and then synthetic ones,
//! or a real Stellar RPC from `STELLAR_RPC_URL`), two writers, blue active and green as
//! hot standby, a blue and a green pair of readers serving from the replica (the primary
//! as fallback), and the nginx edge in front of the live pair: the URL users call.
//! Operators switch colours through the control port ([`control`], `loadtest switch`).
//! Runs until Ctrl-C, then stops everything it started.
//!
//! What must hold: the data outlives the stack. Postgres (primary and replica) and Redis
//! keep their files in a data directory (`--data-dir`), and a restart resumes where the
//! last run stopped: the writers resume from their cursor, and the simulator, which
//! replays the same deterministic chain, starts with the stored ledgers already closed.
//! `--fresh` deletes the data first. A data directory is tied to the source it was
//! filled from (the simulator or an RPC's network) and refuses another.

pub mod control;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use shared::testkit::{PostgresCluster, RedisServer};
use shared::Network;

use self::control::{Control, WriterLauncher, Writers};
use crate::edge::{Colour, Colours, Edge};
use crate::simnet::{load_chain, Simnet, SimnetConfig};

/// Arguments of `loadtest stack`.
#[derive(Debug, clap::Args)]
pub struct StackArgs {
    /// A real Stellar RPC to ingest from instead of the simulator.
    #[arg(long, env = "STELLAR_RPC_URL")]
    pub rpc_url: Option<String>,
    /// Network passphrase (or pubnet/testnet) of that RPC.
    #[arg(long, env = "STELLAR_NETWORK_PASSPHRASE", default_value = "pubnet")]
    pub network: String,
    /// Recorded ledgers the simulator replays first.
    #[arg(
        long,
        env = "STELLAR_FIXTURES_LEDGERS",
        default_value_os_t = shared::testkit::fixtures::path("ledgers/pubnet")
    )]
    pub ledgers: PathBuf,
    /// Synthetic ledgers the simulator serves after the recorded ones.
    #[arg(long, default_value_t = 2000)]
    pub synthetic: u32,
    /// Simulated ledger close interval, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub close_interval_ms: u64,
    /// First port of the writers' health servers (blue, then green).
    #[arg(long, default_value_t = 9100)]
    pub health_port: u16,
    /// The edge's port: the API users call.
    #[arg(long, default_value_t = 8000)]
    pub edge_port: u16,
    /// First port of the readers (blue: this port and the next; green: the two after).
    #[arg(long, default_value_t = 8010)]
    pub reader_port: u16,
    /// The operators' control port (`loadtest switch`), on loopback.
    #[arg(long, default_value_t = 8099)]
    pub control_port: u16,
    /// Where Postgres and Redis keep their data across runs. Default:
    /// `$XDG_DATA_HOME/stellar-payments` (`~/.local/share/...`), or
    /// `/var/lib/stellar-payments` when run as root (the `postgres` user that the database
    /// runs as must be able to reach it).
    #[arg(long, env = "STELLAR_PAYMENTS_DATA")]
    pub data_dir: Option<PathBuf>,
    /// Delete the data directory's contents and start over.
    #[arg(long)]
    pub fresh: bool,
    /// Port of the Postgres primary (the replica takes the next one).
    #[arg(long, default_value_t = 5440)]
    pub pg_port: u16,
    /// Port of Redis.
    #[arg(long, default_value_t = 6390)]
    pub redis_port: u16,
    /// Rate limits for the readers (TOML; `loadtest/load-limits.toml` is the one the
    /// load generator's model expects). Without it, nothing is limited.
    #[arg(long)]
    pub rate_limits: Option<PathBuf>,
    /// Before the writers start, backfill this many synthetic payments (250 a ledger,
    /// from ledger 2, over the same 100,000 accounts the simulator's synthetic ledgers
    /// pay) with `writer backfill`, so the live chain lands on a large history. Skipped
    /// when those ledgers are already stored.
    #[arg(long, default_value_t = 0)]
    pub prefill_payments: u64,
    /// Where the prefill's synthetic data lake is written (kept, and reused when it
    /// holds the same chain); default: a folder in the data directory, deleted after
    /// the backfill.
    #[arg(long)]
    pub prefill_lake: Option<PathBuf>,
}

/// What `--prefill-payments` backfills: the synthetic world of the simulator's tail.
fn prefill_chain(payments: u64) -> crate::bench::reader::Chain {
    const PER_LEDGER: u32 = 250;
    crate::bench::reader::Chain {
        first_seq: 2,
        ledgers: payments.div_ceil(u64::from(PER_LEDGER)).max(1) as u32,
        payments_per_ledger: PER_LEDGER,
        accounts: SYNTHETIC_ACCOUNTS,
        seed: SYNTHETIC_SEED,
    }
}

/// Accounts of the simulator's synthetic ledgers (and of the prefill).
const SYNTHETIC_ACCOUNTS: u32 = 100_000;
/// Seed of the simulator's synthetic world (and of the prefill).
const SYNTHETIC_SEED: u64 = 1;

/// Backfills the prefill chain into the primary unless it is stored; no cursor is
/// written (the live writer starts at the simulator's first ledger, past a gap).
async fn prefill(
    writer_bin: &Path,
    primary_url: &str,
    data: &Path,
    args: &StackArgs,
) -> anyhow::Result<()> {
    let chain = prefill_chain(args.prefill_payments);
    let migrate = Command::new(writer_bin)
        .args(["migrate", "--database-url", primary_url])
        .env("RUST_LOG", "warn")
        .output()?;
    if !migrate.status.success() {
        anyhow::bail!(
            "writer migrate failed: {}",
            String::from_utf8_lossy(&migrate.stderr)
        );
    }
    let db = crate::bench::reader::connect(primary_url).await?;
    let held: i64 = db
        .query_one(
            "SELECT count(*) FROM ledgers WHERE sequence BETWEEN $1 AND $2",
            &[&(chain.first_seq as i32), &(chain.last_seq() as i32)],
        )
        .await?
        .get(0);
    if held >= i64::from(chain.ledgers) {
        println!(
            "prefill: ledgers {}-{} already stored",
            chain.first_seq,
            chain.last_seq()
        );
        return Ok(());
    }
    let (lake, temporary) = match &args.prefill_lake {
        Some(dir) => (dir.clone(), false),
        None => (data.join("prefill-lake"), true),
    };
    let started = std::time::Instant::now();
    if let Some(summary) = chain.ensure_lake(&lake).await? {
        println!(
            "prefill: wrote {} payments in {} ledgers to {} in {:.1} s",
            summary.payments,
            summary.ledgers,
            lake.display(),
            started.elapsed().as_secs_f64()
        );
    }
    let started = std::time::Instant::now();
    let status = Command::new(writer_bin)
        .args(["backfill", "--database-url", primary_url])
        .args(["--network", &args.network])
        .args(["--source", lake.to_str().context("lake path")?])
        .args(["--from", &chain.first_seq.to_string()])
        .args(["--to", &chain.last_seq().to_string()])
        .args(["--workers", "2"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        anyhow::bail!("writer backfill failed ({status})");
    }
    db.batch_execute("VACUUM (ANALYZE)").await?;
    println!(
        "prefill: backfilled ledgers {}-{} in {:.1} s",
        chain.first_seq,
        chain.last_seq(),
        started.elapsed().as_secs_f64()
    );
    if temporary {
        std::fs::remove_dir_all(&lake).with_context(|| format!("removing {}", lake.display()))?;
    }
    Ok(())
}

/// The default data directory: see [`StackArgs::data_dir`].
fn default_data_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/stellar-payments");
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("stellar-payments");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/stellar-payments"),
        None => PathBuf::from(".stellar-payments"),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// What filled a data directory; a later run must use the same.
const SOURCE_FILE: &str = "source";

/// Checks that `data` was filled from `source` (or is new, and records it).
fn claim_data_dir(data: &Path, source: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let file = data.join(SOURCE_FILE);
    match std::fs::read_to_string(&file) {
        Ok(recorded) if recorded.trim() == source => Ok(()),
        Ok(recorded) => anyhow::bail!(
            "{} holds data from {:?}, not {source:?}: use --fresh to start over, or another \
             --data-dir",
            data.display(),
            recorded.trim()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&file, format!("{source}\n"))
                .with_context(|| format!("writing {}", file.display()))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
    }
}

/// Empties `data` for `--fresh`.
fn wipe_data_dir(data: &Path) -> anyhow::Result<()> {
    for name in [
        "postgres",
        "redis",
        SOURCE_FILE,
        "stack.json",
        "prefill-lake",
    ] {
        let path = data.join(name);
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
    Ok(())
}

/// The last ledger the writers committed, if the database has a cursor yet.
fn stored_tip(cluster: &PostgresCluster) -> Option<u32> {
    cluster
        .psql(
            cluster.primary_port(),
            "payments",
            "SELECT last_ledger FROM ingest_cursor",
        )
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn network(name: &str) -> Network {
    match name {
        "pubnet" => Network::pubnet(),
        "testnet" => Network::testnet(),
        other => Network::new(other),
    }
}

/// A running stack: what [`Stack::start`] started, until [`Stack::stop`].
#[derive(Debug)]
pub struct Stack {
    /// The operator's handles: the edge, the writers, the primary's URL.
    pub control: Control,
    /// `http://127.0.0.1:PORT` of the edge: the API.
    pub edge_url: String,
    /// Where Postgres and Redis keep their data.
    pub data: PathBuf,
    /// The RPC the writers ingest from.
    pub rpc_url: String,
    /// The readers' addresses, blue pair first.
    pub reader_addresses: Vec<SocketAddr>,
    cluster: PostgresCluster,
    redis: RedisServer,
    simnet: Option<Simnet>,
    readers: Vec<Child>,
}

impl Stack {
    /// Starts every part: databases, RPC (or the simulator), both writers (blue first, so
    /// it becomes active), both reader pairs and the edge with blue live.
    pub async fn start(args: &StackArgs) -> anyhow::Result<Self> {
        let writer_bin = crate::sibling_binary("writer")?;
        let reader_bin = crate::sibling_binary("reader")?;
        let network = network(&args.network);
        let data = args.data_dir.clone().unwrap_or_else(default_data_dir);
        if args.fresh {
            wipe_data_dir(&data)?;
        }
        let source = match &args.rpc_url {
            Some(_) => format!("rpc {}", network.passphrase()),
            None => format!("simulator {}", network.passphrase()),
        };
        claim_data_dir(&data, &source)?;
        println!(
            "starting PostgreSQL primary + streaming replica and Redis (data in {}) ...",
            data.display()
        );
        let (pg_dir, pg_port) = (data.join("postgres"), args.pg_port);
        let cluster = tokio::task::spawn_blocking(move || {
            PostgresCluster::open_kept(&pg_dir, pg_port, pg_port.saturating_add(1))
        })
        .await??;
        let (redis_dir, redis_port) = (data.join("redis"), args.redis_port);
        let redis =
            tokio::task::spawn_blocking(move || RedisServer::open_kept(&redis_dir, redis_port))
                .await??;
        if args.prefill_payments > 0 {
            prefill(&writer_bin, &cluster.primary_url(), &data, args).await?;
        }
        let resumed = stored_tip(&cluster);
        if let Some(tip) = resumed {
            println!("resuming: ledgers up to {tip} are stored");
        }

        let (rpc_url, simnet, start) = match &args.rpc_url {
            Some(url) => (url.clone(), None, "latest".to_owned()),
            None => {
                let recorded = load_chain(&args.ledgers, None).with_context(|| {
                    format!("loading recorded ledgers from {}", args.ledgers.display())
                })?;
                let chain = crate::simnet::recorded_then_synthetic(
                    recorded,
                    args.synthetic,
                    200,
                    SYNTHETIC_ACCOUNTS,
                    SYNTHETIC_SEED,
                    network.clone(),
                )?;
                let first = chain
                    .first()
                    .map(shared::ledger_file::ledger_seq)
                    .context("empty chain")?;
                // The same chain as last time: what is stored has already closed.
                let closed = resumed.map_or(1, |tip| tip.saturating_sub(first) as usize + 1);
                let mut config = SimnetConfig::new(chain);
                config.network_passphrase = network.passphrase().to_owned();
                config.initially_closed = closed;
                config.close_interval = Some(Duration::from_millis(args.close_interval_ms));
                let sim = Simnet::start(config).await?;
                (sim.url(), Some(sim), first.to_string())
            }
        };

        let writer_args: Vec<String> = [
            "run",
            "--database-url",
            &cluster.primary_url(),
            "--rpc-url",
            &rpc_url,
            "--network",
            network.passphrase(),
            "--start",
            &start,
            "--redis-url",
            &redis.url(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let launcher = WriterLauncher {
            binary: writer_bin.clone(),
            args: writer_args,
            health_port: args.health_port,
        };
        let blue_writer = launcher.spawn(Colour::Blue)?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let green_writer = launcher.spawn(Colour::Green)?;
        let writers = Arc::new(tokio::sync::Mutex::new(Writers {
            launcher,
            blue: Some(blue_writer),
            green: Some(green_writer),
        }));
        // Until the stack owns them, a failed start (a reader that cannot start, no
        // nginx) stops what was started instead of leaving it running.
        let mut started = Started {
            readers: Vec::new(),
            writers: Some(writers.clone()),
        };

        let replica_url = cluster.replica_url().unwrap_or_default();
        let public_url = format!("http://127.0.0.1:{}", args.edge_port);
        let spawn_reader = |port: u16| -> anyhow::Result<Child> {
            let mut reader = Command::new(&reader_bin);
            if let Some(limits) = &args.rate_limits {
                reader.arg("--rate-limits").arg(limits);
            }
            reader
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--replica-url", &replica_url])
                .args(["--primary-url", &cluster.primary_url()])
                .args(["--redis-url", &redis.url()])
                // Links in pages point at the edge, whichever pod renders them.
                .args(["--public-url", &public_url])
                .env(
                    "RUST_LOG",
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
                )
                .spawn()
                .with_context(|| format!("starting the reader on port {port}"))
        };
        let reader_ports: Vec<u16> = (0..4).map(|i| args.reader_port + i).collect();
        for port in &reader_ports {
            started.readers.push(spawn_reader(*port)?);
        }
        let reader_addresses: Vec<SocketAddr> = reader_ports
            .iter()
            .map(|port| SocketAddr::from(([127, 0, 0, 1], *port)))
            .collect();
        let colours = Colours {
            blue: reader_addresses[..2].to_vec(),
            green: reader_addresses[2..].to_vec(),
        };
        let edge_port = args.edge_port;
        let edge = tokio::task::spawn_blocking(move || {
            Edge::start_on(Some(edge_port), colours, Colour::Blue)
        })
        .await??;
        let readers = std::mem::take(&mut started.readers);
        started.writers = None;
        let edge_url = edge.url();
        let control = Control {
            edge: Arc::new(Mutex::new(edge)),
            writers,
            primary_url: cluster.primary_url(),
            busy: Arc::default(),
        };
        Ok(Self {
            control,
            edge_url,
            data,
            rpc_url,
            reader_addresses,
            cluster,
            redis,
            simnet,
            readers,
        })
    }

    /// The primary's URL.
    pub fn primary_url(&self) -> String {
        self.cluster.primary_url()
    }

    /// The replica's URL.
    pub fn replica_url(&self) -> String {
        self.cluster.replica_url().unwrap_or_default()
    }

    /// Redis' URL.
    pub fn redis_url(&self) -> String {
        self.redis.url()
    }

    /// Whether the RPC is the simulator.
    pub fn simulated(&self) -> bool {
        self.simnet.is_some()
    }

    /// Stops everything, the edge first, then readers, writers, RPC and databases.
    /// Other holders of `control` must have dropped it (the last share stops nginx).
    pub async fn stop(self) -> anyhow::Result<()> {
        let Self {
            control,
            cluster,
            redis,
            simnet,
            mut readers,
            ..
        } = self;
        let Control { edge, writers, .. } = control;
        drop(edge);
        for reader in &readers {
            control::terminate(reader);
        }
        tokio::task::spawn_blocking(move || {
            for reader in &mut readers {
                let _ = reader.wait();
            }
        })
        .await?;
        let mut writers = writers.lock_owned().await;
        tokio::task::spawn_blocking(move || writers.stop_all()).await?;
        if let Some(sim) = simnet {
            sim.shutdown().await;
        }
        drop(redis);
        drop(cluster);
        Ok(())
    }
}

/// Starts the stack and keeps it up until Ctrl-C.
pub async fn run(args: &StackArgs) -> anyhow::Result<()> {
    let signals = shared::shutdown::StopSignals::register()?;
    let stack = Stack::start(args).await?;
    let control_listener = tokio::net::TcpListener::bind(("127.0.0.1", args.control_port))
        .await
        .with_context(|| format!("the control port {}", args.control_port))?;
    let router = control::router(stack.control.clone());
    let control_server = tokio::spawn(async move { axum::serve(control_listener, router).await });

    let ports: Vec<u16> = stack.reader_addresses.iter().map(|a| a.port()).collect();
    // For `loadtest load --stack-info`: where everything is.
    let info = crate::load::StackInfo {
        pid: std::process::id(),
        edge: stack.edge_url.clone(),
        writer_health: (0..2)
            .map(|i| format!("http://127.0.0.1:{}/health", args.health_port + i))
            .collect(),
        replica_url: stack.replica_url(),
    };
    let info_path = stack.data.join("stack.json");
    std::fs::write(&info_path, serde_json::to_vec_pretty(&info)?)
        .with_context(|| format!("writing {}", info_path.display()))?;

    println!();
    println!("the stack is up:");
    println!(
        "  edge      {}/payments  <- the API (blue readers live)",
        stack.edge_url
    );
    println!(
        "  data      {} (kept; --fresh starts over)",
        stack.data.display()
    );
    println!("  primary   {}", stack.primary_url());
    println!("  replica   {}", stack.replica_url());
    println!("  redis     {}", stack.redis_url());
    println!(
        "  rpc       {}{}",
        stack.rpc_url,
        if stack.simulated() {
            " (simulator)"
        } else {
            ""
        }
    );
    println!(
        "  writers   http://127.0.0.1:{}/health (blue), http://127.0.0.1:{}/health (green standby)",
        args.health_port,
        args.health_port + 1
    );
    println!(
        "  readers   blue http://127.0.0.1:{} and :{}, green :{} and :{}",
        ports[0], ports[1], ports[2], ports[3]
    );
    println!(
        "  control   http://127.0.0.1:{} (loadtest switch readers | loadtest switch writer)",
        args.control_port
    );
    println!(
        "  info      {} (loadtest load --stack-info)",
        info_path.display()
    );
    println!("press Ctrl-C to stop everything");
    signals.recv().await;

    println!("stopping ...");
    control_server.abort();
    // The aborted server drops its share of the edge; the last share stops nginx.
    let _ = control_server.await;
    stack.stop().await
}

/// Processes a stack start has spawned and does not own yet: stopped when dropped.
struct Started {
    readers: Vec<Child>,
    writers: Option<Arc<tokio::sync::Mutex<Writers>>>,
}

impl Drop for Started {
    fn drop(&mut self) {
        for reader in &mut self.readers {
            let _ = reader.kill();
            let _ = reader.wait();
        }
        if let Some(writers) = self.writers.take() {
            if let Ok(mut writers) = writers.try_lock() {
                writers.stop_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_directory_keeps_to_its_source_until_wiped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        claim_data_dir(&data, "simulator pubnet").expect("a new directory is claimed");
        claim_data_dir(&data, "simulator pubnet").expect("the same source again");
        let refused = claim_data_dir(&data, "rpc testnet").expect_err("another source");
        assert!(refused.to_string().contains("--fresh"), "{refused}");
        std::fs::create_dir_all(data.join("postgres/primary")).expect("mkdir");
        wipe_data_dir(&data).expect("wipe");
        assert!(!data.join("postgres").exists());
        claim_data_dir(&data, "rpc testnet").expect("a wiped directory is claimed anew");
    }
}
