//! `loadtest load`: an open-loop load generator for the API behind the edge, with a
//! traffic model of wallets, explorers, keyed and abusive clients and event streams
//! ([`model`]), arrivals at a fixed rate independent of the answers ([`schedule`]),
//! accounts drawn by the chain's popularity ([`popularity`]), HDR latency histograms per
//! class and second ([`stats`]), and the stack watched while it runs ([`observe`]). It
//! writes a JSON results file ([`results`]) that `loadtest report` renders ([`report`]).
//!
//! Two ways to run: a steady rate for a while, or a ramp to the knee: the model's mix
//! stepped up until p99 reaches the limit or errors appear (a failed step is run once
//! more at the same rate before it ends the ramp), then `/constant` through the
//! same edge stepped up the same way (the edge's own ceiling, in the same run); the knee
//! is the highest good mix rate as a ratio to the highest good `/constant` rate.
//!
//! What must hold: the load generator's own limits are the ceiling's too (same client,
//! same process, same edge), so the ratio compares like with like; requests still in
//! flight when a step ends are counted in that step (the next step starts after they
//! finish or time out).

pub mod clients;
pub mod model;
pub mod observe;
pub mod popularity;
pub mod report;
pub mod results;
pub mod schedule;
pub mod stats;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::time::Instant;

use self::clients::Traffic;
use self::model::{Class, TrafficModel};
use self::popularity::Popularity;
use self::results::{Knee, Observation, Phase, Results, StreamSummary};
use self::schedule::Schedule;
use self::stats::Recorder;
use crate::synth::rng::Rng;

/// The phase index streams record their openings under (kept out of the steps).
const STREAM_PHASE: usize = usize::MAX;

/// Arguments of `loadtest load`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// The API's base URL (the edge). Default: the `edge` of `--stack-info`.
    #[arg(long)]
    pub target: Option<String>,
    /// The `stack.json` a running `loadtest stack` writes into its data directory: the
    /// edge, the writers' health URLs, the replica, and the stack's process id.
    #[arg(long)]
    pub stack_info: Option<PathBuf>,
    /// The traffic model (TOML); default: the built-in `loadtest/load-model.toml`.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Arrival rate of a steady run, per second.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Length of a steady run, seconds.
    #[arg(long, default_value_t = 60)]
    pub duration_secs: u64,
    /// Ramp to the knee instead of a steady run.
    #[arg(long)]
    pub ramp: bool,
    /// First rate of a ramp.
    #[arg(long, default_value_t = 50.0)]
    pub ramp_start: f64,
    /// Each ramp step's rate is the previous one's times this.
    #[arg(long, default_value_t = 1.4)]
    pub ramp_factor: f64,
    /// Highest rate a ramp tries.
    #[arg(long, default_value_t = 20_000.0)]
    pub ramp_max: f64,
    /// Length of a ramp step, seconds.
    #[arg(long, default_value_t = 10)]
    pub step_secs: u64,
    /// A step is good while p99 stays under this many milliseconds (and no errors).
    #[arg(long, default_value_t = 100.0)]
    pub p99_limit_ms: f64,
    /// Database (the replica) to read account popularity from; default: the replica of
    /// `--stack-info`, else the accounts of the newest feed pages.
    #[arg(long)]
    pub popularity_url: Option<String>,
    /// Accounts drawn from (the most active).
    #[arg(long, default_value_t = 200_000)]
    pub accounts: u32,
    /// Writers' `/health` URLs (repeatable); default: from `--stack-info`.
    #[arg(long)]
    pub writer_health: Vec<String>,
    /// The stack's process id, whose descendants' CPU is reported; default: from
    /// `--stack-info`.
    #[arg(long)]
    pub stack_pid: Option<u32>,
    /// Seed of the requests' choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Free text stored in the results (machine conditions).
    #[arg(long, default_value = "")]
    pub notes: String,
    /// Where to write the results (JSON).
    #[arg(long, short = 'o', default_value = "load-results.json")]
    pub out: PathBuf,
}

/// What `loadtest stack` writes to `stack.json`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct StackInfo {
    /// The stack process.
    pub pid: u32,
    /// The edge's base URL.
    pub edge: String,
    /// The writers' `/health` URLs.
    pub writer_health: Vec<String>,
    /// The replica's database URL.
    pub replica_url: String,
}

/// A run's settings, resolved.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Base URL.
    pub target: String,
    /// Model.
    pub model: TrafficModel,
    /// Steady rate, or the ramp.
    pub shape: Shape,
    /// p99 limit of a good step, ms.
    pub p99_limit_ms: f64,
    /// Popularity source.
    pub popularity_url: Option<String>,
    /// Accounts drawn from.
    pub accounts: u32,
    /// Writers' health.
    pub writer_health: Vec<String>,
    /// Stack pid.
    pub stack_pid: Option<u32>,
    /// Seed.
    pub seed: u64,
    /// Notes.
    pub notes: String,
}

/// A steady run or a ramp.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// One rate for a while.
    Steady {
        /// Per second.
        rate: f64,
        /// Length.
        secs: u64,
    },
    /// Steps up to the knee, then the ceiling.
    Ramp {
        /// First rate.
        start: f64,
        /// Growth per step.
        factor: f64,
        /// Highest rate tried.
        max: f64,
        /// Step length.
        step_secs: u64,
    },
}

impl LoadArgs {
    /// Resolves the arguments against `--stack-info` and the model file.
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let info: Option<StackInfo> = match &self.stack_info {
            Some(path) => Some(
                serde_json::from_slice(
                    &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
                )
                .with_context(|| format!("parsing {}", path.display()))?,
            ),
            None => None,
        };
        let model = match &self.model {
            Some(path) => TrafficModel::parse(
                &std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
            )?,
            None => TrafficModel::builtin(),
        };
        let target = self
            .target
            .clone()
            .or_else(|| info.as_ref().map(|i| i.edge.clone()))
            .context("give --target URL or --stack-info FILE")?;
        let shape = if self.ramp {
            Shape::Ramp {
                start: self.ramp_start.max(1.0),
                factor: self.ramp_factor.max(1.05),
                max: self.ramp_max,
                step_secs: self.step_secs.max(1),
            }
        } else {
            Shape::Steady {
                rate: self.rate,
                secs: self.duration_secs.max(1),
            }
        };
        let mut writer_health = self.writer_health.clone();
        if writer_health.is_empty() {
            writer_health = info
                .as_ref()
                .map(|i| i.writer_health.clone())
                .unwrap_or_default();
        }
        Ok(Plan {
            target,
            model,
            shape,
            p99_limit_ms: self.p99_limit_ms,
            popularity_url: self
                .popularity_url
                .clone()
                .or_else(|| info.as_ref().map(|i| i.replica_url.clone())),
            accounts: self.accounts,
            writer_health,
            stack_pid: self.stack_pid.or_else(|| info.as_ref().map(|i| i.pid)),
            seed: self.seed,
            notes: self.notes.clone(),
        })
    }
}

/// Account popularity: from the database when given, else from the newest feed pages.
async fn popularity(plan: &Plan, client: &reqwest::Client) -> anyhow::Result<Popularity> {
    if let Some(url) = &plan.popularity_url {
        return Popularity::from_database(url, plan.accounts).await;
    }
    let mut records = Vec::new();
    let mut path = "/payments?order=desc&limit=200".to_owned();
    for _ in 0..20 {
        let page: serde_json::Value = client
            .get(format!("{}{path}", plan.target.trim_end_matches('/')))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let before = records.len();
        records.extend(clients::records(&page).cloned());
        match clients::next_path(&page) {
            Some(next) if records.len() > before => path = next,
            _ => break,
        }
    }
    Popularity::from_records(records.iter())
}

/// Runs `phase` at `rate` for `secs`: `class` for every arrival, or the model's mix.
async fn run_phase(
    traffic: &Arc<Traffic>,
    phase: usize,
    class: Option<Class>,
    rate: f64,
    secs: u64,
    seed: u64,
) {
    let schedule = Schedule::new(Instant::now(), rate);
    let length = Duration::from_secs(secs);
    let traffic_for_tasks = traffic.clone();
    schedule::dispatch(schedule, length, move |i, due| {
        let mut rng = Rng::new(seed ^ ((phase as u64) << 40) ^ i);
        let class = class.unwrap_or_else(|| traffic_for_tasks.model.pick(rng.unit()));
        clients::arrival(traffic_for_tasks.clone(), class, phase, due, rng.next_u64())
    })
    .await;
    // Requests still in flight belong to this phase: wait for them (they time out).
    let deadline = Instant::now() + clients::REQUEST_TIMEOUT + Duration::from_secs(2);
    while traffic.recorder.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn phase_figures(
    recorder: &Recorder,
    index: usize,
    kind: &str,
    rate: f64,
    start: f64,
    secs: f64,
    p99_limit_ms: f64,
) -> Phase {
    let (classes, all) = recorder.phase(index);
    let good = all.requests > 0 && all.errors == 0 && all.latency.p99 < p99_limit_ms;
    Phase {
        kind: kind.to_owned(),
        rate,
        start,
        secs,
        throughput: all.requests as f64 / secs.max(1e-9),
        classes,
        all,
        good,
    }
}

/// Runs the load of `plan` and returns its results.
pub async fn run(plan: &Plan) -> anyhow::Result<Results> {
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let probe = reqwest::Client::builder().no_proxy().build()?;
    let popularity = popularity(plan, &probe)
        .await
        .context("reading account popularity")?;
    println!(
        "{} accounts to draw from; loading {}",
        popularity.len(),
        plan.target
    );
    let recorder = Arc::new(Recorder::default());
    let traffic = Arc::new(Traffic::new(
        &plan.target,
        plan.model.clone(),
        popularity,
        recorder.clone(),
    )?);
    let run_start = traffic.run_start;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    // The observer, once a second.
    let mut observer = observe::Observer::new(plan.writer_health.clone(), plan.stack_pid)?;
    let observed_recorder = recorder.clone();
    let mut observer_stop = stop_rx.clone();
    let observer_task = tokio::spawn(async move {
        let mut out: Vec<Observation> = Vec::new();
        let mut events_before = 0;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // A stalled runtime (the client saturated) must not fire the missed ticks back to
        // back: CPU over a few milliseconds, counted in 10 ms ticks, reads as thousands
        // of percent.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = observer_stop.changed() => break,
            }
            let mut o = observer.sample().await;
            let t = run_start.elapsed().as_secs_f64();
            o.t = t;
            o.reader_latest = (t as u32)
                .checked_sub(1)
                .and_then(|s| observed_recorder.latest_in(s));
            let events = observed_recorder.events();
            o.stream_events = events - events_before;
            events_before = events;
            o.streams_open = observed_recorder.streams_open.load(Ordering::Relaxed);
            out.push(o);
        }
        out
    });

    let streams: Vec<_> = (0..plan.model.streams.open)
        .map(|_| {
            tokio::spawn(clients::hold_stream(
                traffic.clone(),
                STREAM_PHASE,
                stop_rx.clone(),
            ))
        })
        .collect();

    let mut phases = Vec::new();
    let mut knee = None;
    match plan.shape {
        Shape::Steady { rate, secs } => {
            let start = run_start.elapsed().as_secs_f64();
            run_phase(&traffic, 0, None, rate, secs, plan.seed).await;
            let phase = phase_figures(
                &recorder,
                0,
                "steady",
                rate,
                start,
                secs as f64,
                plan.p99_limit_ms,
            );
            print_phase(&phase);
            phases.push(phase);
        }
        Shape::Ramp {
            start,
            factor,
            max,
            step_secs,
        } => {
            let mut best = [None, None];
            for (which, (kind, class)) in [("ramp", None), ("ceiling", Some(Class::Constant))]
                .into_iter()
                .enumerate()
            {
                let mut rate = start;
                let mut retried = false;
                while rate <= max {
                    let index = phases.len();
                    let at = run_start.elapsed().as_secs_f64();
                    run_phase(&traffic, index, class, rate, step_secs, plan.seed).await;
                    let phase = phase_figures(
                        &recorder,
                        index,
                        kind,
                        rate,
                        at,
                        step_secs as f64,
                        plan.p99_limit_ms,
                    );
                    print_phase(&phase);
                    let good = phase.good;
                    phases.push(phase);
                    // Let queues empty before the next step.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    match next_step(good, retried) {
                        Step::Retry => retried = true,
                        Step::Stop => break,
                        Step::Up => {
                            retried = false;
                            best[which] = Some(rate);
                            rate *= factor;
                        }
                    }
                }
            }
            let ratio = match best {
                [Some(mix), Some(ceiling)] => Some(mix / ceiling),
                _ => None,
            };
            knee = Some(Knee {
                criterion: format!(
                    "p99 < {} ms and no errors (no answer, 5xx, or 429 outside the abusive \
                     class) over a {step_secs} s step; rates x{factor} per step from {start}/s",
                    plan.p99_limit_ms
                ),
                mix_rate: best[0],
                ceiling_rate: best[1],
                ratio,
            });
        }
    }

    let _ = stop_tx.send(true);
    for stream in streams {
        let _ = stream.await;
    }
    let observations = observer_task.await.unwrap_or_default();
    Ok(Results {
        target: plan.target.clone(),
        started_unix,
        notes: plan.notes.clone(),
        p99_limit_ms: plan.p99_limit_ms,
        model: plan.model.clone(),
        phases,
        timeline: recorder.timeline(),
        observations,
        streams: StreamSummary {
            wanted: u64::from(plan.model.streams.open),
            opened: recorder.streams_opened.load(Ordering::Relaxed),
            failed: recorder.streams_failed.load(Ordering::Relaxed),
            events: recorder.events(),
        },
        knee,
    })
}

/// What a ramp does after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// The step was good: the next rate.
    Up,
    /// The step failed for the first time: the same rate once more, so one stall of a
    /// shared machine (a checkpoint, another process) does not end the ramp.
    Retry,
    /// The step failed twice in a row: the knee is the last good rate.
    Stop,
}

fn next_step(good: bool, retried: bool) -> Step {
    match (good, retried) {
        (true, _) => Step::Up,
        (false, false) => Step::Retry,
        (false, true) => Step::Stop,
    }
}

fn print_phase(phase: &Phase) {
    println!(
        "{:>8} {:>8.0}/s: {:>7} answers ({:.0}/s), {} errors, p50 {:.1} ms, p99 {:.1} ms, \
         edge hits {}  {}",
        phase.kind,
        phase.rate,
        phase.all.requests,
        phase.throughput,
        phase.all.errors,
        phase.all.latency.p50,
        phase.all.latency.p99,
        phase
            .all
            .hit_share()
            .map_or_else(|| "-".to_owned(), |h| format!("{:.0}%", h * 100.0)),
        if phase.good { "good" } else { "NOT good" }
    );
}

/// `loadtest load`: runs, writes the results file, prints the knee.
pub async fn run_command(args: &LoadArgs) -> anyhow::Result<()> {
    let plan = args.plan()?;
    let results = run(&plan).await?;
    std::fs::write(&args.out, serde_json::to_vec_pretty(&results)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    if let Some(knee) = &results.knee {
        println!(
            "knee: mix {} /s, /constant ceiling {} /s, ratio {}",
            knee.mix_rate.map_or("-".into(), |r| format!("{r:.0}")),
            knee.ceiling_rate.map_or("-".into(), |r| format!("{r:.0}")),
            knee.ratio.map_or("-".into(), |r| format!("{r:.3}")),
        );
    }
    println!(
        "streams: {} of {} opened, {} events; results in {} (render: loadtest report {} -o report.html)",
        results.streams.opened,
        results.streams.wanted,
        results.streams.events,
        args.out.display(),
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{next_step, Step};

    #[test]
    fn a_failed_step_is_repeated_once_before_it_ends_the_ramp() {
        assert_eq!(next_step(true, false), Step::Up);
        assert_eq!(next_step(false, false), Step::Retry);
        // Good on the second try: the ramp goes on (and may retry again later).
        assert_eq!(next_step(true, true), Step::Up);
        assert_eq!(next_step(false, true), Step::Stop);
    }
}
