//! `loadtest stack`: the whole system on this machine, from local processes (the same
//! topology `docker-compose.yml` describes): a Postgres primary with a streaming replica,
//! Redis, an RPC (the simulator replaying the recorded ledgers and then synthetic ones,
//! or a real Stellar RPC from `STELLAR_RPC_URL`), two writers, blue active and green as
//! hot standby, and two readers serving from the replica (the primary as fallback).
//! Runs until Ctrl-C, then stops everything it started.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::Context as _;
use shared::testkit::{PostgresCluster, RedisServer};
use shared::Network;

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
        default_value = "../shared/fixtures/ledgers/pubnet"
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
    /// First port of the readers' APIs (two readers: this port and the next).
    #[arg(long, default_value_t = 8000)]
    pub reader_port: u16,
}

/// Ctrl-C or SIGTERM: either stops the stack the same graceful way.
async fn wait_for_stop_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            interrupted = tokio::signal::ctrl_c() => interrupted?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}

fn network(name: &str) -> Network {
    match name {
        "pubnet" => Network::pubnet(),
        "testnet" => Network::testnet(),
        other => Network::new(other),
    }
}

/// Starts the stack and keeps it up until Ctrl-C.
pub async fn run(args: &StackArgs) -> anyhow::Result<()> {
    let writer_bin = crate::sibling_binary("writer")?;
    let reader_bin = crate::sibling_binary("reader")?;
    println!("starting PostgreSQL primary + streaming replica and Redis ...");
    let cluster = tokio::task::spawn_blocking(PostgresCluster::start_with_replica).await??;
    let redis = tokio::task::spawn_blocking(RedisServer::start).await??;
    let network = network(&args.network);

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
                100_000,
                1,
                network.clone(),
            )?;
            let first = chain
                .first()
                .map(shared::ledger_file::ledger_seq)
                .context("empty chain")?;
            let mut config = SimnetConfig::new(chain);
            config.network_passphrase = network.passphrase().to_owned();
            config.initially_closed = 1;
            config.close_interval = Some(Duration::from_millis(args.close_interval_ms));
            let sim = Simnet::start(config).await?;
            (sim.url(), Some(sim), first.to_string())
        }
    };

    let spawn_writer = |colour: &str, port: u16| -> anyhow::Result<Child> {
        Command::new(&writer_bin)
            .args([
                "run",
                "--database-url",
                &cluster.primary_url(),
                "--rpc-url",
                &rpc_url,
            ])
            .args(["--network", network.passphrase(), "--start", &start])
            .args([
                "--redis-url",
                &redis.url(),
                "--health-listen",
                &format!("127.0.0.1:{port}"),
            ])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .spawn()
            .with_context(|| format!("starting the {colour} writer"))
    };
    let mut writers = vec![spawn_writer("blue", args.health_port)?];
    tokio::time::sleep(Duration::from_millis(500)).await;
    writers.push(spawn_writer("green", args.health_port + 1)?);

    let replica_url = cluster.replica_url().unwrap_or_default();
    let spawn_reader = |port: u16| -> anyhow::Result<Child> {
        Command::new(&reader_bin)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--replica-url", &replica_url])
            .args(["--primary-url", &cluster.primary_url()])
            .args(["--redis-url", &redis.url()])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .spawn()
            .with_context(|| format!("starting the reader on port {port}"))
    };
    let mut readers = vec![
        spawn_reader(args.reader_port)?,
        spawn_reader(args.reader_port + 1)?,
    ];

    println!();
    println!("the stack is up:");
    println!("  primary   {}", cluster.primary_url());
    println!("  replica   {}", cluster.replica_url().unwrap_or_default());
    println!("  redis     {}", redis.url());
    println!(
        "  rpc       {rpc_url}{}",
        if simnet.is_some() { " (simulator)" } else { "" }
    );
    println!(
        "  writers   http://127.0.0.1:{}/health (blue), http://127.0.0.1:{}/health (green standby)",
        args.health_port,
        args.health_port + 1
    );
    println!(
        "  readers   http://127.0.0.1:{}/payments and http://127.0.0.1:{}/payments",
        args.reader_port,
        args.reader_port + 1
    );
    println!("press Ctrl-C to stop everything");
    wait_for_stop_signal().await?;

    println!("stopping ...");
    for process in readers.iter_mut().chain(writers.iter_mut()) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(process.id().to_string())
            .status();
    }
    for reader in &mut readers {
        let _ = reader.wait();
    }
    for writer in &mut writers {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(writer.id().to_string())
            .status();
    }
    for writer in &mut writers {
        let _ = writer.wait();
    }
    if let Some(sim) = simnet {
        sim.shutdown().await;
    }
    drop(redis);
    drop(cluster);
    Ok(())
}
