//! The OpenAPI document states the real constraints: schemathesis, the OpenAPI fuzzer
//! users run, reads `/openapi.json` from a reader over the recorded ledgers and sends
//! schema-valid and schema-invalid requests to every route. Valid ones must be answered
//! 2xx or 404, never 400 or 5xx; invalid ones a 400 problem document; every response
//! must match the document's status codes, content types and body schemas
//! (`tests/schemathesis/schemathesis.toml`). Strkeys carry a checksum no pattern can
//! state: `tests/schemathesis/hooks.py` generates valid ones for the document's custom
//! formats, and the addresses and assets with history.
//!
//! Bounded: a fixed seed (override with `SCHEMATHESIS_SEED`), a fixed number of
//! examples per operation and a time budget. schemathesis comes from
//! `scripts/install-schemathesis.sh` (PyPI, into a virtualenv under `target/`), run by
//! `scripts/test.sh` or by this test when `SCHEMATHESIS` does not name an executable.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{TestReader, World};

const SEED: &str = "20261128";
const EXAMPLES_PER_OPERATION: &str = "300";
/// The run takes about a minute; the budget is for a loaded machine.
const TIME_BUDGET: Duration = Duration::from_secs(300);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The schemathesis executable: `SCHEMATHESIS`, else installed by the script.
fn schemathesis() -> PathBuf {
    if let Some(exe) = std::env::var_os("SCHEMATHESIS").map(PathBuf::from) {
        if exe.is_file() {
            return exe;
        }
    }
    let out = std::process::Command::new("bash")
        .arg(workspace().join("scripts/install-schemathesis.sh"))
        .output()
        .expect("run scripts/install-schemathesis.sh");
    assert!(
        out.status.success(),
        "installing schemathesis failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exe = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(exe.is_file(), "no schemathesis at {}", exe.display());
    exe
}

/// `reader_requests_total` by (route, status), from the Prometheus text.
fn requests_by_route(metrics: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("reader_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split("\",")
                .find_map(|l| l.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
        };
        if let (Some(route), Some(status), Ok(n)) =
            (label("route"), label("status"), value.trim().parse::<f64>())
        {
            out.insert((route, status), n);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_driven_requests_get_the_answers_the_document_promises() {
    let world = World::start(12, false).await;
    world.wait_replica();
    let reader = TestReader::over(&world, &[]).await;

    // Addresses and assets with history, for the hooks to mix into generated values.
    let records = world.records_through(world.latest());
    let mut addresses = BTreeSet::new();
    let mut assets = BTreeSet::new();
    for r in records.iter().filter(|r| r.successful()) {
        for p in r.participants() {
            addresses.insert(p.address.to_strkey());
        }
        for a in r.assets() {
            assets.insert(a.canonical());
        }
    }
    let addresses: Vec<String> = addresses.into_iter().take(40).collect();
    let assets: Vec<String> = assets.into_iter().take(40).collect();
    assert!(addresses.len() >= 10 && assets.len() >= 3);

    // Requests before the run (the harness's own) are not the run's.
    let metrics = reader.get("/metrics").await.text().await.expect("metrics");
    let before = requests_by_route(&metrics);

    let dir = workspace().join("reader/tests/schemathesis");
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| SEED.to_owned());
    let reports = tempfile::tempdir().expect("report dir");
    let mut command = tokio::process::Command::new(schemathesis());
    command
        .arg("--config-file")
        .arg(dir.join("schemathesis.toml"))
        .arg("--no-color")
        .arg("run")
        .arg(format!("{}/openapi.json", reader.base))
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--mode", "all"])
        .args(["--seed", &seed])
        .args(["--max-examples", EXAMPLES_PER_OPERATION])
        .args(["--workers", "2"])
        .args(["--generation-database", "none"])
        .args(["--request-timeout", "20"])
        .arg("--report-dir")
        .arg(reports.path())
        .current_dir(reports.path())
        .env("SCHEMATHESIS_HOOKS", dir.join("hooks.py"))
        .env("READER_KNOWN_ADDRESSES", addresses.join(","))
        .env("READER_KNOWN_ASSETS", assets.join(","))
        // Every request stays on loopback.
        .env("NO_PROXY", "*")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .kill_on_drop(true);
    let run = tokio::time::timeout(TIME_BUDGET, command.output())
        .await
        .expect("schemathesis finished within its time budget")
        .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "schemathesis found responses the document does not promise \
         (seed {seed}):\n{stdout}\n{stderr}"
    );

    // The run reached every payments route's handler with valid and with invalid values.
    let metrics = reader.get("/metrics").await.text().await.expect("metrics");
    let mut counts = requests_by_route(&metrics);
    for (key, n) in &before {
        if let Some(after) = counts.get_mut(key) {
            *after -= n;
        }
    }
    counts.retain(|_, n| *n > 0.0);
    // (Generated ledger sequences and hashes rarely exist: those routes answer 404.)
    for (route, found) in [
        ("/payments", &["200"][..]),
        ("/accounts/{account_id}/payments", &["200"]),
        ("/ledgers/{sequence}/payments", &["200", "404"]),
        ("/transactions/{hash}/payments", &["200", "404"]),
    ] {
        let n = |statuses: &[&str]| -> f64 {
            statuses
                .iter()
                .filter_map(|s| counts.get(&(route.to_owned(), (*s).to_owned())))
                .sum()
        };
        assert!(n(found) >= 20.0, "{route}: {counts:?}\n{stdout}");
        assert!(n(&["400"]) >= 20.0, "{route}: {counts:?}\n{stdout}");
    }
    // No 5xx: schemathesis's own `not_a_server_error` check holds every one of its
    // requests to that (the recorder is process-wide, and other tests of this binary
    // provoke 503s on purpose, so the counters above are a floor, not this run alone).

    reader.stop().await;
    world.stop().await;
}
