//! Watching the stack while the load runs, once a second: the active writer's last
//! ledger and the RPC's newest (its `/health`), and the CPU each component used (from
//! `/proc`: the stack process's descendants, grouped by the child of the stack they
//! descend from, plus this process).
//!
//! What must hold: a component's CPU counts every process of its tree exactly once:
//! live processes by their own time plus the time of children they have reaped
//! (`cutime`/`cstime`), so a backend that exits between two samples is neither lost nor
//! counted twice. A source that does not answer leaves its figure empty; it never stops
//! the load.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::results::Observation;

/// CPU ticks per second (`USER_HZ`, 100 on the architectures this runs on).
const TICKS_PER_SECOND: f64 = 100.0;

/// The shortest interval a CPU share is computed over.
const MIN_CPU_INTERVAL: Duration = Duration::from_millis(500);

/// One process, from `/proc/PID/stat`.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcStat {
    /// Process id.
    pub pid: u32,
    /// Parent's id.
    pub ppid: u32,
    /// Command name (at most 15 bytes).
    pub comm: String,
    /// Own user + system ticks.
    pub own: u64,
    /// Ticks of reaped children.
    pub children: u64,
}

/// Parses `/proc/PID/stat`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text[open + 1..close].to_owned();
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // After the name: state (3), ppid (4), ..., utime (14), stime (15), cutime (16),
    // cstime (17); index 0 here is field 3.
    let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some(ProcStat {
        pid,
        ppid: num(1)? as u32,
        comm,
        own: num(11)? + num(12)?,
        children: num(13)? + num(14)?,
    })
}

fn all_processes() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|t| parse_stat(&t))
        .collect()
}

/// The component a direct child of the stack belongs to.
fn component(child: &ProcStat) -> String {
    match child.comm.as_str() {
        "postgres" => {
            let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.pid)).unwrap_or_default();
            // The data directory names the server (`-c wal_level=replica` is on both).
            let text = String::from_utf8_lossy(&cmdline);
            if text.split('\0').any(|arg| arg.ends_with("/replica")) {
                "postgres replica".into()
            } else {
                "postgres primary".into()
            }
        }
        "redis-server" => "redis".into(),
        "reader" => "readers".into(),
        "writer" => "writers".into(),
        other => other.to_owned(),
    }
}

/// CPU ticks per component: the trees under each child of `root` (named by
/// [`component`]), `root` itself as `stack`, and `own` (this process) as `loadgen`.
pub fn ticks_by_component(
    processes: &[ProcStat],
    root: Option<u32>,
    own: u32,
) -> BTreeMap<String, u64> {
    let mut children: HashMap<u32, Vec<&ProcStat>> = HashMap::new();
    for p in processes {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut out = BTreeMap::new();
    if let Some(own) = processes.iter().find(|p| p.pid == own) {
        out.insert("loadgen".to_owned(), own.own);
    }
    let Some(root) = root else {
        return out;
    };
    if let Some(stack) = processes.iter().find(|p| p.pid == root) {
        *out.entry("stack".to_owned()).or_default() += stack.own;
    }
    for child in children.get(&root).into_iter().flatten() {
        let mut total = 0;
        let mut todo = vec![*child];
        while let Some(p) = todo.pop() {
            total += p.own + p.children;
            todo.extend(children.get(&p.pid).into_iter().flatten());
        }
        *out.entry(component(child)).or_default() += total;
    }
    out
}

/// The sampler's sources and last sample.
#[derive(Debug)]
pub struct Observer {
    client: reqwest::Client,
    writer_health: Vec<String>,
    stack_pid: Option<u32>,
    last: Option<(std::time::Instant, BTreeMap<String, u64>)>,
}

impl Observer {
    /// Watches the writers at `writer_health` (their `/health` URLs) and the processes
    /// under `stack_pid`.
    pub fn new(writer_health: Vec<String>, stack_pid: Option<u32>) -> anyhow::Result<Self> {
        Ok(Self {
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_millis(800))
                .build()?,
            writer_health,
            stack_pid,
            last: None,
        })
    }

    /// One observation (`t`, the lag and stream fields are the caller's to fill).
    pub async fn sample(&mut self) -> Observation {
        let mut observation = Observation::default();
        for url in &self.writer_health {
            let Ok(answer) = self.client.get(url).send().await else {
                continue;
            };
            let Ok(state) = answer.json::<serde_json::Value>().await else {
                continue;
            };
            if state.get("role").and_then(|r| r.as_str()) == Some("active") {
                let num = |k: &str| state.get(k).and_then(|v| v.as_u64()).map(|v| v as u32);
                observation.writer_last = num("last_ledger");
                observation.rpc_latest = num("rpc_latest");
            }
        }
        let root = self.stack_pid;
        let ticks = tokio::task::spawn_blocking(move || {
            ticks_by_component(&all_processes(), root, std::process::id())
        })
        .await
        .unwrap_or_default();
        let now = std::time::Instant::now();
        if let Some((then, before)) = &self.last {
            let wall = now.duration_since(*then);
            // Ticks are 10 ms: over less than half a second a share would be mostly
            // rounding. The next sample measures from the same start instead.
            if wall < MIN_CPU_INTERVAL {
                return observation;
            }
            let wall = wall.as_secs_f64();
            for (name, t) in &ticks {
                let delta = t.saturating_sub(before.get(name).copied().unwrap_or(*t));
                observation
                    .cpu
                    .insert(name.clone(), delta as f64 / TICKS_PER_SECOND / wall * 100.0);
            }
        }
        self.last = Some((now, ticks));
        observation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, ppid: u32, comm: &str, own: u64, children: u64) -> ProcStat {
        ProcStat {
            pid,
            ppid,
            comm: comm.into(),
            own,
            children,
        }
    }

    #[test]
    fn stat_lines_parse_even_with_spaces_in_the_name() {
        let line = "4242 (tokio worker 1) S 17 4242 17 0 -1 4194560 100 0 0 0 \
                    250 30 7 3 20 0 9 0 100 1000 50 18446744073709551615";
        let stat = parse_stat(line).expect("parses");
        assert_eq!(stat, p(4242, 17, "tokio worker 1", 280, 10));
        assert!(parse_stat("garbage").is_none());
        let mine = std::fs::read_to_string("/proc/self/stat").expect("own stat");
        assert_eq!(parse_stat(&mine).expect("own").pid, std::process::id());
    }

    #[test]
    fn each_tree_is_counted_once_under_its_component() {
        let processes = [
            p(10, 1, "loadtest", 5, 100),
            p(11, 10, "reader", 20, 0),
            p(12, 10, "reader", 30, 0),
            p(13, 10, "redis-server", 4, 0),
            // A postmaster with a live backend; reaped backends are in its children.
            p(14, 10, "postgres", 10, 40),
            p(15, 14, "postgres", 6, 0),
            p(99, 1, "loadgen-self", 9, 0),
            p(50, 1, "unrelated", 1000, 0),
        ];
        let ticks = ticks_by_component(&processes, Some(10), 99);
        assert_eq!(ticks["readers"], 50);
        assert_eq!(ticks["redis"], 4);
        // /proc/14/cmdline is not this test's postmaster: it is called the primary.
        assert_eq!(ticks["postgres primary"], 56);
        assert_eq!(ticks["stack"], 5);
        assert_eq!(ticks["loadgen"], 9);
        assert!(!ticks.contains_key("unrelated"));
        assert_eq!(ticks.values().sum::<u64>(), 124);
    }
}
