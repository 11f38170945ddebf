//! Driving `wrk` (one thread, keep-alive connections) with a generated Lua script and
//! reading back its summary.
//!
//! Requests come from a file of lines `PATH` or `PATH<TAB>IF-NONE-MATCH`, preformatted
//! once in the script's `init` and handed out in turn by `request()`. With `follow`, the
//! script also reads each response: when a page is full (as many records as its `limit`)
//! it follows the page's `next` link with that probability, before taking the next line
//! (so a line starts a chain of pages, as a client paging through history does).
//! `done()` prints one `RESULT` line with the counts and the latency percentiles.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};

/// What `wrk` reported for one run.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WrkResult {
    /// Responses completed.
    pub requests: u64,
    /// Wall time of the run.
    pub duration: Duration,
    /// Response bytes read.
    pub bytes: u64,
    /// Connect, read, write and timeout errors, and responses with a status >= 400.
    pub errors: u64,
    /// Latency percentiles and maximum.
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub mean: Duration,
    /// CPU time `wrk` used (user + system).
    pub client_cpu: Option<Duration>,
}

impl WrkResult {
    /// Responses per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.duration.as_secs_f64().max(1e-9)
    }
}

/// A load of requests for `wrk`.
#[derive(Debug)]
pub(crate) struct Load {
    script: PathBuf,
}

fn lua_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Load {
    /// Writes the request list and the script into `dir` under `name`. `follow` is the
    /// probability of following a full page's `next` link (0: never read responses).
    pub fn new(
        dir: &Path,
        name: &str,
        lines: &[(String, Option<String>)],
        follow: f64,
        seed: u64,
    ) -> anyhow::Result<Self> {
        Self::with_headers(dir, name, lines, follow, seed, &[])
    }

    /// As [`Load::new`], every request (links followed too) also carrying `headers`.
    pub fn with_headers(
        dir: &Path,
        name: &str,
        lines: &[(String, Option<String>)],
        follow: f64,
        seed: u64,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let list = dir.join(format!("{name}.requests"));
        let mut text = String::new();
        for (path, condition) in lines {
            text.push_str(path);
            if let Some(tag) = condition {
                text.push('\t');
                text.push_str(tag);
            }
            text.push('\n');
        }
        std::fs::write(&list, text)?;
        let list = list.to_str().context("request list path")?;
        let responses = if follow > 0.0 {
            RESPONSE_HOOK.replace("FOLLOW", &format!("{follow}"))
        } else {
            String::new()
        };
        let script = SCRIPT
            .replace("LIST", &lua_string(list))
            .replace("SEED", &seed.to_string())
            .replace(
                "HEADERS",
                &headers
                    .iter()
                    .map(|(name, value)| {
                        format!("[{}] = {}, ", lua_string(name), lua_string(value))
                    })
                    .collect::<String>(),
            )
            .replace("RESPONSES", &responses);
        let path = dir.join(format!("{name}.lua"));
        std::fs::write(&path, script)?;
        Ok(Self { script: path })
    }

    /// Runs `wrk` against `address` for `duration` with `connections` keep-alive
    /// connections on one thread.
    pub async fn run(
        &self,
        wrk: &Path,
        address: SocketAddr,
        connections: usize,
        duration: Duration,
    ) -> anyhow::Result<WrkResult> {
        let mut command = Command::new(wrk);
        command
            .args(["-t1", "-c", &connections.to_string()])
            .args(["-d", &format!("{}s", duration.as_secs().max(1))])
            .args(["--timeout", "10s", "-s"])
            .arg(&self.script)
            .arg(format!("http://{address}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let wrk_path = wrk.to_path_buf();
        let (output, cpu) = tokio::task::spawn_blocking(move || run_measured(command))
            .await?
            .with_context(|| format!("running {} (apt-get install -y wrk)", wrk_path.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "wrk failed ({}): {}{}",
                output.status,
                stdout,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let mut result = parse_result(&stdout)
            .with_context(|| format!("no RESULT line in wrk's output:\n{stdout}"))?;
        result.client_cpu = cpu;
        Ok(result)
    }
}

/// Runs `command` to its end and returns its output and the CPU time it used, read
/// from `/proc` once it has exited and before it is reaped.
fn run_measured(mut command: Command) -> std::io::Result<(Output, Option<Duration>)> {
    let child = command.spawn()?;
    let pid = child.id();
    let mut cpu = None;
    loop {
        match super::proc_stat(pid) {
            Some(('Z', used)) => {
                cpu = Some(used);
                break;
            }
            Some(_) => std::thread::sleep(Duration::from_millis(20)),
            None => break,
        }
    }
    Ok((child.wait_with_output()?, cpu))
}

fn parse_result(output: &str) -> Option<WrkResult> {
    let line = output.lines().find(|l| l.starts_with("RESULT "))?;
    let field = |name: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
            .parse::<f64>()
            .ok()
            .map(|v| v as u64)
    };
    let micros = |name: &str| field(name).map(Duration::from_micros);
    Some(WrkResult {
        requests: field("requests")?,
        duration: micros("duration_us")?,
        bytes: field("bytes")?,
        errors: field("errors")?,
        p50: micros("p50_us")?,
        p90: micros("p90_us")?,
        p99: micros("p99_us")?,
        max: micros("max_us")?,
        mean: micros("mean_us")?,
        client_cpu: None,
    })
}

/// The script; `LIST`, `SEED`, `HEADERS` and `RESPONSES` are filled in.
const SCRIPT: &str = r#"-- Generated by loadtest bench reader-*.
local requests = {}
local next_line = 0
local pending = {}
local extra = { HEADERS}

-- The extra headers, and If-None-Match when a tag is given (a new table each time:
-- wrk.format adds Host to the one it is given).
local function headers(tag)
  local h = {}
  for name, value in pairs(extra) do
    h[name] = value
  end
  if tag then
    h["If-None-Match"] = tag
  end
  return h
end

-- Runs after wrk has set the Host header (the reader's links and ETags depend on it).
function init(args)
  math.randomseed(SEED)
  for line in io.lines(LIST) do
    local path, tag = line:match("^([^\t]+)\t(.+)$")
    if path then
      requests[#requests + 1] = wrk.format("GET", path, headers(tag))
    else
      requests[#requests + 1] = wrk.format("GET", line, headers(nil))
    end
  end
end

function request()
  local n = #pending
  if n > 0 then
    local path = pending[n]
    pending[n] = nil
    return wrk.format("GET", path, headers(nil))
  end
  next_line = next_line % #requests + 1
  return requests[next_line]
end

RESPONSES

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%.0f duration_us=%.0f bytes=%.0f errors=%.0f p50_us=%.0f p90_us=%.0f p99_us=%.0f max_us=%.0f mean_us=%.0f\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"#;

/// Follows full pages' `next` links with probability `FOLLOW`. Only plain substring
/// searches and anchored matches run over the body (the Lua pattern matcher and `gsub`
/// over pages of a hundred kilobytes would make the client, not the reader, the
/// bottleneck): the page's own `_links` come first, `self` then `next`, and records are
/// counted up to the page's limit by their `paging_token`.
const RESPONSE_HOOK: &str = r#"local LINKS = '{"_links":{"self":{"href":"'
function response(status, headers, body)
  if status ~= 200 or math.random() >= FOLLOW then
    return
  end
  if string.sub(body, 1, #LINKS) ~= LINKS then
    return
  end
  local links = string.sub(body, #LINKS + 1, #LINKS + 4096)
  local limit = tonumber(links:match('^[^"]*[?&]limit=(%d+)'))
  local href = links:match('^[^"]*"},"next":{"href":"https?://[^/"]+(/[^"]*)"')
  if not href or not limit then
    return
  end
  local found, from = 0, 1
  while found < limit do
    local i = string.find(body, '"paging_token":"', from, true)
    if not i then
      return
    end
    found = found + 1
    from = i + 16
  end
  pending[#pending + 1] = href
end"#;

/// Whether a page has the shape [`RESPONSE_HOOK`] reads: its own links first, `self`
/// then `next`.
pub(crate) fn page_links_first(body: &str) -> bool {
    body.starts_with("{\"_links\":{\"self\":{\"href\":\"")
        && body
            .find("\"},\"next\":{\"href\":\"http")
            .is_some_and(|at| at < 4096)
        && body.contains("\"paging_token\":\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_parse() {
        let out = "Running 1s test\nRESULT requests=100 duration_us=1000000 bytes=2048 errors=0 \
                   p50_us=150 p90_us=300 p99_us=900 max_us=1500 mean_us=180.5\n";
        let r = parse_result(out).expect("parsed");
        assert_eq!(r.requests, 100);
        assert_eq!(r.p99, Duration::from_micros(900));
        assert_eq!(r.mean, Duration::from_micros(180));
        assert!((r.rate() - 100.0).abs() < 1e-9);
        assert!(parse_result("nothing").is_none());
    }

    #[test]
    fn scripts_name_their_list_and_hooks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let lines = vec![
            ("/constant".to_owned(), None),
            ("/payments?limit=10".to_owned(), Some("\"t-1\"".to_owned())),
        ];
        let load = Load::new(dir.path(), "x", &lines, 0.5, 7).expect("written");
        let script = std::fs::read_to_string(&load.script).expect("script");
        assert!(script.contains("x.requests"));
        assert!(script.contains("function response"));
        assert!(script.contains("math.random() >= 0.5"));
        assert!(page_links_first(
            r#"{"_links":{"self":{"href":"http://h/p?limit=1"},"next":{"href":"http://h/p?cursor=1"}},"_embedded":{"records":[{"paging_token":"1"}]}}"#
        ));
        assert!(!page_links_first(
            r#"{"_embedded":{"records":[{"paging_token":"1"}]},"_links":{"next":{"href":"x"}}}"#
        ));
        assert!(!page_links_first(r#"{"_links":{"self":{"href":"x"}}}"#));
        let list = std::fs::read_to_string(dir.path().join("x.requests")).expect("list");
        assert_eq!(list, "/constant\n/payments?limit=10\t\"t-1\"\n");
        let plain = Load::new(dir.path(), "y", &lines, 0.0, 7).expect("written");
        let script = std::fs::read_to_string(&plain.script).expect("script");
        assert!(!script.contains("function response"));
    }
}
