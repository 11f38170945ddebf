//! `loadtest bench reader-cache` and `loadtest bench reader-history`: the reader's HTTP
//! throughput and latency, each against the trivial `/constant` route of the same reader
//! in the same run (the ceiling: the HTTP stack, the router and its middleware, and the
//! load generator itself, with no handler work).
//!
//! The release `reader` binary runs as its own process, as in production, and the load
//! comes from `wrk` (one thread, a fixed number of keep-alive connections), driven by a
//! generated Lua script. Why `wrk` rather than a Rust client in this process: on a
//! 2-core machine the client competes with the reader and Postgres for the same cores,
//! so the cheapest client gives the most trustworthy ceiling. `wrk` is a C event loop
//! that formats nothing per request (requests are preformatted in Lua) and parses
//! responses in place; a hyper or reqwest client costs several times more CPU per
//! request (futures, allocation, header maps), which would cap `/constant` well below
//! what the reader can serve and flatter every ratio. Every variant goes through the
//! same Lua `request()` hook, so the client's cost is the same for all of them.
//!
//! [`cache`] measures the response cache (hits and `If-None-Match` 304s) on a small
//! chain; [`history`] measures uncached account history on a large one.

pub mod cache;
pub mod history;
mod pg;
mod wrk;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use shared::Network;
use tokio_postgres::NoTls;

use crate::synth::{write_datalake, DatalakeSummary, SynthConfig};

/// Requests/s of a cache hit or a 304 (any encoding) as a share of `/constant`'s: at
/// least 0.8 (issues #11 and #14).
pub const TARGET_RATIO: f64 = 0.8;

/// Connects to Postgres and drives the connection on a task.
pub(crate) async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// A port of 127.0.0.1 free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// A parsed HTTP response.
#[derive(Debug)]
pub(crate) struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The body (chunked transfer coding removed).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One blocking HTTP/1.1 GET on a fresh connection, for setup and checks (never for
/// load). The Host header is `address`, as `wrk` sends it, so links and ETags (which
/// depend on it) are the ones the load sees.
pub(crate) fn http_get(
    address: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers in the response")?;
    let head = std::str::from_utf8(&raw[..end])?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("truncated chunk")?;
        let size_text = std::str::from_utf8(&raw[..line_end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// [`http_get`] off the async runtime's threads.
pub(crate) async fn get(
    address: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<HttpResponse> {
    let path = path.to_owned();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        http_get(address, &path, &headers)
    })
    .await?
}

/// The reader's counters of interest, read from its `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ReaderCounters {
    /// Responses served from the response cache.
    pub hits: f64,
    /// Responses rendered from the database.
    pub misses: f64,
    /// 304 Not Modified responses.
    pub not_modified: f64,
    /// Database queries made.
    pub db_queries: f64,
}

impl ReaderCounters {
    /// What happened between `before` and `self`.
    pub fn since(self, before: Self) -> Self {
        Self {
            hits: self.hits - before.hits,
            misses: self.misses - before.misses,
            not_modified: self.not_modified - before.not_modified,
            db_queries: self.db_queries - before.db_queries,
        }
    }

    /// Responses counted.
    pub fn responses(self) -> f64 {
        self.hits + self.misses + self.not_modified
    }
}

pub(crate) fn metric_value(text: &str, name: &str, label: Option<&str>) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| label.is_none_or(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A `reader` process started for a benchmark; killed when dropped.
#[derive(Debug)]
pub(crate) struct ReaderProcess {
    child: Child,
    /// Where it listens.
    pub address: SocketAddr,
}

impl ReaderProcess {
    /// Starts `bin` on a free loopback port with `args` and waits until it is ready
    /// (a source is reachable and has a tip).
    pub async fn start(bin: &Path, args: &[String]) -> anyhow::Result<Self> {
        let address = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let child = Command::new(bin)
            .args(["--listen", &address.to_string()])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut reader = Self { child, address };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = reader.child.try_wait()? {
                bail!("the reader exited at start: {status}");
            }
            if let Ok(r) = get(address, "/health/ready", &[]).await {
                if r.status == 200 {
                    return Ok(reader);
                }
            }
            if Instant::now() > deadline {
                bail!("the reader was not ready within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The cache and query counters so far.
    pub async fn counters(&self) -> anyhow::Result<ReaderCounters> {
        let r = get(self.address, "/metrics", &[]).await?;
        let text = String::from_utf8_lossy(&r.body);
        Ok(ReaderCounters {
            hits: metric_value(&text, "reader_cache_total", Some("outcome=\"hit\"")),
            misses: metric_value(&text, "reader_cache_total", Some("outcome=\"miss\"")),
            not_modified: metric_value(
                &text,
                "reader_cache_total",
                Some("outcome=\"not_modified\""),
            ),
            db_queries: metric_value(&text, "reader_db_queries_total", None),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ReaderProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) a process has used, from `/proc/PID/stat`.
pub(crate) fn cpu_time(pid: u32) -> Option<Duration> {
    proc_stat(pid).map(|(_, cpu)| cpu)
}

/// The CPU time of a process and of its children: its own, that of its children that
/// have exited (as it reaped them) and that of its live children. A child that exits
/// between two readings moves from the third part to the second, so differences of
/// readings stay right.
pub(crate) fn tree_cpu_time(pid: u32) -> Option<Duration> {
    let fields = |pid: u32| -> Option<Vec<u64>> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = stat.rsplit_once(')')?.1.to_owned();
        // Numeric fields from field 4 (ppid) on; non-numeric ones read as 0.
        Some(
            rest.split_whitespace()
                .skip(1)
                .map(|f| f.parse().unwrap_or(0))
                .collect(),
        )
    };
    // From field 4: ppid is index 0, utime 10, stime 11, cutime 12, cstime 13.
    let own = fields(pid)?;
    let mut ticks = own.get(10)? + own.get(11)? + own.get(12)? + own.get(13)?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(f) = fields(child).filter(|f| f.first() == Some(&u64::from(pid))) {
            ticks += f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
        }
    }
    Some(Duration::from_millis(ticks * 10))
}

/// A process's state letter (`Z` once it has exited, until it is reaped) and CPU time.
pub(crate) fn proc_stat(pid: u32) -> Option<(char, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')',
    // with field 3 (the state): utime and stime, fields 14 and 15, are at 11 and 12.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Linux reports these in USER_HZ, which is 100 on the architectures this runs on.
    Some((state, Duration::from_millis(ticks * 10)))
}

/// The writer and reader binaries: given, or next to this one.
pub(crate) fn binary(given: &Option<PathBuf>, name: &str) -> anyhow::Result<PathBuf> {
    match given {
        Some(path) => Ok(path.clone()),
        None => crate::sibling_binary(name),
    }
}

/// The synthetic chain a benchmark loads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chain {
    pub first_seq: u32,
    pub ledgers: u32,
    pub payments_per_ledger: u32,
    pub accounts: u32,
    pub seed: u64,
}

impl Chain {
    /// The last ledger.
    pub fn last_seq(&self) -> u32 {
        self.first_seq + self.ledgers - 1
    }

    fn describe(&self) -> String {
        format!(
            "synthetic chain: ledgers {}-{}, {} payments per ledger, {} accounts (zipf 1.0), seed {}",
            self.first_seq,
            self.last_seq(),
            self.payments_per_ledger,
            self.accounts,
            self.seed
        )
    }

    /// Writes the chain as a data lake in `dir`, or checks that `dir` already holds it
    /// (a marker file records what was written there). Returns what was generated.
    pub async fn ensure_lake(&self, dir: &Path) -> anyhow::Result<Option<DatalakeSummary>> {
        let marker = dir.join("loadtest-chain.txt");
        let wanted = self.describe();
        if dir.join("config.json").is_file() {
            let held = std::fs::read_to_string(&marker).unwrap_or_default();
            if held.trim() != wanted {
                bail!(
                    "{} holds another data lake ({}); want {wanted}: choose another --lake",
                    dir.display(),
                    if held.is_empty() {
                        "unknown content"
                    } else {
                        held.trim()
                    }
                );
            }
            return Ok(None);
        }
        let config = SynthConfig {
            first_seq: self.first_seq,
            ledgers: self.ledgers,
            payments_per_ledger: self.payments_per_ledger,
            accounts: self.accounts,
            seed: self.seed,
            network: Network::pubnet(),
            first_close_time: 1_700_000_000,
            previous_hash: [0; 32],
            zipf_exponent: 1.0,
        };
        let lake = dir.to_path_buf();
        let summary =
            tokio::task::spawn_blocking(move || write_datalake(&lake, config, 1, 64_000)).await??;
        std::fs::write(&marker, format!("{wanted}\n"))?;
        Ok(Some(summary))
    }
}

/// Migrates the database at `url` and backfills `chain` from the lake in `lake` with the
/// real writer, unless every ledger of the chain is already there. Then makes the
/// database servable: a backfill alone leaves no live cursor, and the reader takes its
/// tip from the cursor, so the newest ledger becomes the cursor (as a live writer
/// starting there would record it), and the tables are vacuumed and analysed (what
/// autovacuum does after a bulk load on a real primary; index-only scans need the
/// visibility map). Returns whether a backfill ran.
pub(crate) async fn load_chain(
    writer_bin: &Path,
    url: &str,
    lake: &Path,
    chain: &Chain,
    workers: usize,
) -> anyhow::Result<bool> {
    let migrate = Command::new(writer_bin)
        .args(["migrate", "--database-url", url])
        .env("RUST_LOG", "warn")
        .output()?;
    if !migrate.status.success() {
        bail!(
            "writer migrate failed: {}",
            String::from_utf8_lossy(&migrate.stderr)
        );
    }
    let db = connect(url).await?;
    let held: i64 = db
        .query_one(
            "SELECT count(*) FROM ledgers WHERE sequence BETWEEN $1 AND $2",
            &[&(chain.first_seq as i32), &(chain.last_seq() as i32)],
        )
        .await?
        .get(0);
    let ran = held < i64::from(chain.ledgers);
    if ran {
        let started = Instant::now();
        let status = Command::new(writer_bin)
            .args(["backfill", "--database-url", url, "--network", "pubnet"])
            .args(["--source", lake.to_str().context("lake path")?])
            .args(["--from", &chain.first_seq.to_string()])
            .args(["--to", &chain.last_seq().to_string()])
            .args(["--workers", &workers.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("writer backfill failed ({status})");
        }
        println!(
            "backfilled ledgers {}-{} in {:.1} s",
            chain.first_seq,
            chain.last_seq(),
            started.elapsed().as_secs_f64()
        );
    }
    db.execute(
        "INSERT INTO ingest_cursor (network_passphrase, last_ledger, last_ledger_hash) \
         SELECT $1, sequence, hash FROM ledgers ORDER BY sequence DESC LIMIT 1 \
         ON CONFLICT (singleton) DO NOTHING",
        &[&Network::pubnet().passphrase()],
    )
    .await?;
    if ran {
        let started = Instant::now();
        db.batch_execute("VACUUM (ANALYZE)").await?;
        println!(
            "VACUUM (ANALYZE) in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(ran)
}

/// A small deterministic generator (splitmix64) for sampling requests.
#[derive(Debug)]
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The median of a non-empty list.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    super::median(&mut v)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_by_name_and_label() {
        let text = "# TYPE reader_cache_total counter\n\
                    reader_cache_total{outcome=\"hit\"} 5\n\
                    reader_cache_total{outcome=\"miss\"} 2\n\
                    reader_cache_total_other 7\n\
                    reader_db_queries_total 11\n";
        assert_eq!(
            metric_value(text, "reader_cache_total", Some("outcome=\"hit\"")),
            5.0
        );
        assert_eq!(metric_value(text, "reader_cache_total", None), 7.0);
        assert_eq!(metric_value(text, "reader_db_queries_total", None), 11.0);
    }

    #[test]
    fn chunked_bodies_are_joined() {
        let body = dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").expect("valid");
        assert_eq!(body, b"abcde");
        assert!(dechunk(b"5\r\nab").is_err());
    }

    #[test]
    fn cpu_time_of_this_process_is_readable() {
        assert!(cpu_time(std::process::id()).is_some());
        let own = cpu_time(std::process::id()).expect("own");
        let tree = tree_cpu_time(std::process::id()).expect("tree");
        assert!(tree >= own, "{tree:?} < {own:?}");
    }
}
