//! The local stack's operator commands: move reader traffic between the blue and the
//! green pair at the edge, and hand ingestion over between the writers. The stack serves
//! them on a loopback control port; `loadtest switch ...` calls it.
//!
//! What must hold: a reader switch changes nothing unless the new colour is ready (see
//! `crate::edge`); a writer handover stops the active writer only once the other colour
//! runs as a hot standby, confirms the standby became active, starts the old colour again
//! as the new standby, and checks that the stored ledgers have no gap. One operation runs
//! at a time.

use std::future::Future;
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::edge::{Colour, Edge};

/// How to start a writer of a colour.
#[derive(Clone, Debug)]
pub struct WriterLauncher {
    /// The writer binary.
    pub binary: std::path::PathBuf,
    /// `writer run` arguments, without `--health-listen`.
    pub args: Vec<String>,
    /// Health port of the blue writer; green's is the next.
    pub health_port: u16,
}

impl WriterLauncher {
    /// The health address of `colour`'s writer.
    pub fn health(&self, colour: Colour) -> SocketAddr {
        let port = match colour {
            Colour::Blue => self.health_port,
            Colour::Green => self.health_port + 1,
        };
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Starts `colour`'s writer.
    pub fn spawn(&self, colour: Colour) -> anyhow::Result<Child> {
        Command::new(&self.binary)
            .args(&self.args)
            .args(["--health-listen", &self.health(colour).to_string()])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .spawn()
            .with_context(|| format!("starting the {colour} writer"))
    }
}

/// A blue and a green writer, as the handover drives them: processes in the local stack
/// ([`Writers`]), in-process writers in tests. Each serves `/health` with its role.
pub trait WriterPair: Send {
    /// Where `colour`'s writer serves `/health` (None before it first started).
    fn health(&self, colour: Colour) -> Option<SocketAddr>;
    /// Whether `colour`'s writer is running.
    fn running(&mut self, colour: Colour) -> bool;
    /// Starts `colour`'s writer.
    fn start(&mut self, colour: Colour) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Stops `colour`'s writer gracefully (SIGTERM or its shutdown token) and waits until
    /// it has exited; nothing to do when it does not run.
    fn stop(&mut self, colour: Colour) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// The writer processes of both colours.
#[derive(Debug)]
pub struct Writers {
    /// How to start one.
    pub launcher: WriterLauncher,
    /// Blue's process, while it runs.
    pub blue: Option<Child>,
    /// Green's process, while it runs.
    pub green: Option<Child>,
}

impl Writers {
    fn slot(&mut self, colour: Colour) -> &mut Option<Child> {
        match colour {
            Colour::Blue => &mut self.blue,
            Colour::Green => &mut self.green,
        }
    }

    /// SIGTERM to every writer, then waits for each (blocking).
    pub fn stop_all(&mut self) {
        for colour in [Colour::Blue, Colour::Green] {
            if let Some(mut child) = self.slot(colour).take() {
                terminate(&child);
                let _ = child.wait();
            }
        }
    }
}

impl WriterPair for Writers {
    fn health(&self, colour: Colour) -> Option<SocketAddr> {
        Some(self.launcher.health(colour))
    }

    fn running(&mut self, colour: Colour) -> bool {
        self.slot(colour)
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn start(&mut self, colour: Colour) -> impl Future<Output = anyhow::Result<()>> + Send {
        let started = self.launcher.spawn(colour).map(|child| {
            *self.slot(colour) = Some(child);
        });
        std::future::ready(started)
    }

    fn stop(&mut self, colour: Colour) -> impl Future<Output = anyhow::Result<()>> + Send {
        let child = self.slot(colour).take();
        async move {
            if let Some(mut child) = child {
                terminate(&child);
                tokio::task::spawn_blocking(move || child.wait()).await??;
            }
            Ok(())
        }
    }
}

/// What the control port shares.
#[derive(Clone, Debug)]
pub struct Control {
    /// The edge (blocking calls).
    pub edge: Arc<Mutex<Edge>>,
    /// The writers.
    pub writers: Arc<tokio::sync::Mutex<Writers>>,
    /// The primary, to check the chain.
    pub primary_url: String,
    /// One operation at a time.
    pub busy: Arc<tokio::sync::Mutex<()>>,
}

/// The outcome of a reader switch, as the control port reports it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReaderSwitch {
    /// The live colour now.
    pub live: String,
    /// Milliseconds waiting for the new colour's readiness.
    pub ready_wait_ms: u64,
    /// Milliseconds rewriting the upstream and reloading.
    pub reload_ms: u64,
    /// Milliseconds until the old generation had finished its requests.
    pub drain_ms: u64,
}

/// The outcome of a writer handover.
#[derive(Debug, Serialize, Deserialize)]
pub struct WriterHandover {
    /// The colour now active.
    pub active: String,
    /// Milliseconds from stopping the old writer to the new one reporting active.
    pub takeover_ms: u64,
    /// The stored ledgers after the handover: first, last, and how many.
    pub ledgers: (i64, i64, i64),
}

#[derive(Debug, Deserialize)]
struct SwitchQuery {
    to: Option<Colour>,
}

/// The control routes.
pub fn router(control: Control) -> Router {
    Router::new()
        .route("/switch/readers", post(switch_readers))
        .route("/handover/writer", post(handover_writer))
        .with_state(control)
}

fn failure(error: anyhow::Error) -> Response {
    (StatusCode::CONFLICT, format!("{error:#}\n")).into_response()
}

async fn switch_readers(
    State(control): State<Control>,
    Query(query): Query<SwitchQuery>,
) -> Response {
    let _one = control.busy.lock().await;
    let edge = control.edge.clone();
    let switched = tokio::task::spawn_blocking(move || {
        let mut edge = edge
            .lock()
            .map_err(|_| anyhow::anyhow!("edge state poisoned"))?;
        let to = query.to.unwrap_or_else(|| edge.live().other());
        edge.switch(to, Duration::from_secs(60), Duration::from_secs(30))
    })
    .await;
    match switched {
        Ok(Ok(report)) => Json(ReaderSwitch {
            live: report.to.to_string(),
            ready_wait_ms: report.ready_wait.as_millis() as u64,
            reload_ms: report.reload.as_millis() as u64,
            drain_ms: report.drain.as_millis() as u64,
        })
        .into_response(),
        Ok(Err(error)) => failure(error),
        Err(error) => failure(error.into()),
    }
}

async fn handover_writer(State(control): State<Control>) -> Response {
    let _one = control.busy.lock().await;
    let mut writers = control.writers.lock().await;
    match hand_over(&mut *writers, &control.primary_url).await {
        Ok(report) => Json(report).into_response(),
        Err(error) => failure(error),
    }
}

/// The role a writer's `/health` reports, if it answers.
async fn role(client: &reqwest::Client, health: SocketAddr) -> Option<String> {
    let answer = client
        .get(format!("http://{health}/health"))
        .send()
        .await
        .ok()?;
    let body: serde_json::Value = answer.json().await.ok()?;
    body["role"].as_str().map(str::to_owned)
}

async fn wait_role(
    client: &reqwest::Client,
    health: SocketAddr,
    want: &str,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let now = role(client, health).await;
        if now.as_deref() == Some(want) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!("the writer at {health} is {now:?}, not {want}, after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Hands ingestion over from the active writer to the other colour: the other colour
/// runs as a hot standby first, then the active one stops, the standby must report
/// active, the old colour starts again as the new standby, and the stored chain must
/// be contiguous.
pub async fn hand_over<W: WriterPair>(
    writers: &mut W,
    primary_url: &str,
) -> anyhow::Result<WriterHandover> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let mut active = None;
    for colour in [Colour::Blue, Colour::Green] {
        if let Some(health) = writers.health(colour) {
            if role(&client, health).await.as_deref() == Some("active") {
                active = Some(colour);
            }
        }
    }
    let old = active.context("no writer reports active: nothing to hand over")?;
    let new = old.other();
    // The new colour must be a hot standby before the old one stops.
    if !writers.running(new) {
        writers.start(new).await?;
    }
    let health = |writers: &W, colour: Colour| {
        writers
            .health(colour)
            .with_context(|| format!("the {colour} writer serves no health"))
    };
    wait_role(
        &client,
        health(writers, new)?,
        "standby",
        Duration::from_secs(30),
    )
    .await?;
    let stopping = Instant::now();
    writers.stop(old).await?;
    wait_role(
        &client,
        health(writers, new)?,
        "active",
        Duration::from_secs(30),
    )
    .await?;
    let takeover = stopping.elapsed();
    // The old colour becomes the standby.
    writers.start(old).await?;
    wait_role(
        &client,
        health(writers, old)?,
        "standby",
        Duration::from_secs(30),
    )
    .await?;
    let chain = chain_check(primary_url).await?;
    if !chain.contiguous() {
        bail!("the stored ledgers are not one chain after the handover: {chain:?}");
    }
    Ok(WriterHandover {
        active: new.to_string(),
        takeover_ms: takeover.as_millis() as u64,
        ledgers: (chain.first, chain.last, chain.count),
    })
}

/// The stored ledgers, as a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainCheck {
    /// The lowest stored sequence (0 when none).
    pub first: i64,
    /// The highest (-1 when none).
    pub last: i64,
    /// Rows in `ledgers`.
    pub count: i64,
    /// Ledgers whose `previous_hash` is not the stored hash of the ledger before.
    pub broken_links: i64,
}

impl ChainCheck {
    /// Every sequence from first to last stored once, each linked to the one before.
    pub fn contiguous(&self) -> bool {
        self.count == self.last - self.first + 1 && self.broken_links == 0
    }
}

/// Checks the stored ledgers on the primary: extent, count and hash links. The URL's
/// `sslmode` and `sslrootcert` apply as they do for the writer (`shared::pgtls`).
pub async fn chain_check(primary_url: &str) -> anyhow::Result<ChainCheck> {
    let (client, connection) = shared::pgtls::PgTarget::parse(primary_url)?
        .connect()
        .await?;
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT coalesce(min(l.sequence), 0)::bigint, coalesce(max(l.sequence), -1)::bigint, \
             count(*), count(*) FILTER (WHERE p.sequence IS NOT NULL AND p.hash <> l.previous_hash) \
             FROM ledgers l LEFT JOIN ledgers p ON p.sequence = l.sequence - 1",
            &[],
        )
        .await?;
    Ok(ChainCheck {
        first: row.get(0),
        last: row.get(1),
        count: row.get(2),
        broken_links: row.get(3),
    })
}

/// SIGTERM to a child process.
pub fn terminate(child: &Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
}

/// `loadtest switch`: asks a running stack's control port.
#[derive(Debug, clap::Args)]
pub struct SwitchArgs {
    /// What to switch.
    #[command(subcommand)]
    pub what: SwitchWhat,
    /// The stack's control URL.
    #[arg(
        long,
        global = true,
        env = "STACK_CONTROL_URL",
        default_value = "http://127.0.0.1:8099"
    )]
    pub control_url: String,
}

/// What `loadtest switch` moves.
#[derive(Debug, clap::Subcommand)]
pub enum SwitchWhat {
    /// Move reader traffic at the edge to the other colour (or `--to`); roll back by
    /// switching again.
    Readers {
        /// The colour to move to (default: the one not live).
        #[arg(long)]
        to: Option<Colour>,
    },
    /// Hand ingestion over to the standby writer; the old one restarts as standby.
    Writer,
}

/// Runs `loadtest switch` (blocking).
pub fn run_switch(args: &SwitchArgs) -> anyhow::Result<()> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(180))
        .build()?;
    let url = match &args.what {
        SwitchWhat::Readers { to: Some(to) } => {
            format!("{}/switch/readers?to={to}", args.control_url)
        }
        SwitchWhat::Readers { to: None } => format!("{}/switch/readers", args.control_url),
        SwitchWhat::Writer => format!("{}/handover/writer", args.control_url),
    };
    let answer = client
        .post(&url)
        .send()
        .with_context(|| format!("is the stack running? {url}"))?;
    let status = answer.status();
    let text = answer.text()?;
    if !status.is_success() {
        bail!("{url}: {status}: {}", text.trim());
    }
    println!("{}", text.trim());
    Ok(())
}
