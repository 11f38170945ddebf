//! The load generator against a real reader behind the real edge (nginx through the test
//! kit with the shipped edge configuration), fed by the real writer from the recorded
//! ledgers while they keep closing, with rate limits in real Redis: a short, bounded
//! run counts every scheduled request, gets the classes' expected answers (abusive
//! clients refused, nobody else), keeps streams open and counts their events, and its
//! results render as a report with charts.

use std::time::Duration;

use loadtest::edge::{Colour, Colours, Edge};
use loadtest::load::model::TrafficModel;
use loadtest::load::{report, Plan, Shape};
use loadtest::simnet::{Simnet, SimnetConfig};
use shared::testkit::{PostgresCluster, RedisServer};
use tokio_util::sync::CancellationToken;
use writer::cli::{Cli, Command as WriterCommand};
use writer::status::Status;

const FIRST: u32 = 1_000_000;
const RATE: f64 = 40.0;
const SECS: u64 = 4;

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_open_loop_run_through_the_edge_is_counted_and_reported() {
    let pg = blocking(PostgresCluster::start_with_replica).expect("postgres");
    let redis = blocking(RedisServer::start).expect("redis");
    let chain = loadtest::simnet::recorded_fixture_chain(&shared::testkit::fixtures::dir(), FIRST)
        .expect("fixture chain");
    let total = chain.len();
    let mut config = SimnetConfig::new(chain);
    config.initially_closed = total / 2;
    // The rest close during the run: the streams get events.
    config.close_interval = Some(Duration::from_millis(700));
    let simnet = Simnet::start(config).await.expect("simnet");
    let argv = [
        "writer",
        "run",
        "--database-url",
        &pg.primary_url(),
        "--rpc-url",
        &simnet.url(),
        "--network",
        "pubnet",
        "--start",
        &FIRST.to_string(),
        "--poll-interval-ms",
        "50",
        "--health-listen",
        "127.0.0.1:0",
    ];
    let WriterCommand::Run(writer_args) = <Cli as clap::Parser>::try_parse_from(argv)
        .expect("writer arguments")
        .command
    else {
        panic!("a run command");
    };
    let status = Status::new();
    let stop = CancellationToken::new();
    let writer = tokio::spawn(writer::commands::run::run_until_shutdown(
        writer_args,
        status.clone(),
        stop.clone(),
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while status.snapshot().last_ledger.is_none() {
        assert!(!writer.is_finished(), "the writer stopped");
        assert!(std::time::Instant::now() < deadline, "nothing ingested");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    blocking(|| pg.wait_for_replica_replay(Duration::from_secs(30))).expect("replay");

    let limits = concat!(env!("CARGO_MANIFEST_DIR"), "/load-limits.toml");
    let replica = pg.replica_url().expect("replica");
    let reader_args = <reader::config::ReaderArgs as clap::Parser>::try_parse_from([
        "reader",
        "--listen",
        "127.0.0.1:0",
        "--poll-ms",
        "50",
        "--shutdown-drain-ms",
        "0",
        "--replica-url",
        &replica,
        "--primary-url",
        &pg.primary_url(),
        "--redis-url",
        &redis.url(),
        "--rate-limits",
        limits,
    ])
    .expect("reader arguments");
    let reader = reader::server::start(&reader_args).await.expect("reader");
    let colours = Colours {
        blue: vec![reader.address],
        green: vec![reader.address],
    };
    let edge = blocking(|| Edge::start(colours, Colour::Blue)).expect("edge");
    let ready = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let page = ready
            .get(format!("{}/payments?limit=1", edge.url()))
            .send()
            .await;
        if matches!(&page, Ok(r) if r.status() == 200) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the edge never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut model = TrafficModel::builtin();
    // Enough abusive arrivals to outrun their tier (burst 2, 1 a second per key).
    model.abusive.share = 0.2;
    model.streams.open = 2;
    let plan = Plan {
        target: edge.url(),
        model,
        shape: Shape::Steady {
            rate: RATE,
            secs: SECS,
        },
        p99_limit_ms: 100.0,
        popularity_url: None,
        accounts: 1000,
        writer_health: Vec::new(),
        stack_pid: None,
        seed: 7,
        notes: "integration test".into(),
    };
    let results = tokio::time::timeout(Duration::from_secs(60), loadtest::load::run(&plan))
        .await
        .expect("the run is bounded")
        .expect("the run");

    let phase = &results.phases[0];
    // Open loop: explorers' followed pages come on top of the scheduled arrivals.
    let scheduled = (RATE * SECS as f64) as u64;
    let followed: u64 = phase.classes.get("explorer").map_or(0, |e| e.requests);
    let arrivals: u64 = phase
        .classes
        .iter()
        .filter(|(c, _)| c.as_str() != "explorer")
        .map(|(_, f)| f.requests)
        .sum();
    assert!(
        arrivals <= scheduled && arrivals + followed >= scheduled,
        "{arrivals} + {followed} explorer pages for {scheduled} arrivals"
    );
    for class in ["wallet", "explorer", "keyed", "abusive"] {
        assert!(
            phase.classes.get(class).is_some_and(|f| f.requests > 0),
            "no {class} requests: {:?}",
            phase.classes.keys()
        );
    }
    let abusive = &phase.classes["abusive"];
    assert!(
        abusive.status.get("429").copied().unwrap_or(0) > 0,
        "{abusive:?}"
    );
    assert_eq!(phase.all.errors, 0, "{:?}", phase.all.status);
    let wallet = &phase.classes["wallet"];
    assert!(
        wallet.status.keys().all(|s| s == "200" || s == "304"),
        "{wallet:?}"
    );
    // Anonymous pages pass the edge's cache; keyed ones bypass it.
    assert!(wallet.cache.keys().any(|c| c != "-"), "{wallet:?}");
    assert!(phase.classes["keyed"].cache.contains_key("BYPASS"));
    assert_eq!(results.streams.opened, 2, "{:?}", results.streams);
    assert!(results.streams.events > 0, "{:?}", results.streams);
    assert!(!results.observations.is_empty());
    assert!(results
        .observations
        .iter()
        .any(|o| o.cpu.contains_key("loadgen")));

    let html = report::render(&results);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.matches("<svg").count() >= 6, "{html}");
    assert!(html.contains("Latency percentiles") && html.contains("wallet"));
    // The results file round-trips.
    let json = serde_json::to_string(&results).expect("json");
    let again: loadtest::load::results::Results = serde_json::from_str(&json).expect("parse");
    assert_eq!(again.phases[0].all, results.phases[0].all);

    drop(edge);
    stop.cancel();
    let _ = writer.await;
    reader.shutdown().await.expect("reader shutdown");
    simnet.shutdown().await;
}
