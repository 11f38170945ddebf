//! A PostgreSQL server on a data directory that outlives the benchmark, so a database
//! that took minutes to backfill can be measured again in a later run. (The test kit's
//! servers live in throw-away directories deleted when dropped.)
//!
//! `DIR/data` is the data directory (created with `initdb` on first use), `DIR/postgres.log`
//! the server log, and `DIR` the Unix socket directory. As root, the server programs run
//! as the `postgres` OS user, which then owns `DIR` (PostgreSQL refuses to run as root).
//! The postmaster is a child of this process; dropping the value stops it with a fast
//! shutdown (a clean checkpoint, so the next start needs no recovery).

use std::fs;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// Server settings. Durability is off: the data can be regenerated, and reads (what is
/// measured here) do not depend on it; it makes the backfill that fills it faster.
/// 512 MB of shared buffers is what a small production replica would have at least;
/// the operating system's page cache holds the rest of the database.
const SETTINGS: [(&str, &str); 10] = [
    ("listen_addresses", "127.0.0.1"),
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
    ("shared_buffers", "512MB"),
    ("max_connections", "100"),
    ("max_wal_size", "8GB"),
    ("checkpoint_timeout", "30min"),
    ("wal_level", "minimal"),
    ("max_wal_senders", "0"),
];

/// A running server on a kept directory.
#[derive(Debug)]
pub(crate) struct KeptPostgres {
    dir: PathBuf,
    bin_dir: PathBuf,
    run_as: Option<(u32, u32)>,
    port: u16,
    child: Option<Child>,
}

fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Uid and gid of the `postgres` OS user.
fn postgres_user() -> anyhow::Result<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .find_map(|l| {
            let fields: Vec<&str> = l.split(':').collect();
            if fields.first() == Some(&"postgres") {
                Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
            } else {
                None
            }
        })
        .context("no `postgres` OS user (apt-get install -y postgresql creates it)")
}

/// The PostgreSQL server programs: `$TESTKIT_PG_BINDIR`, the newest
/// `/usr/lib/postgresql/*/bin`, or the folder of `pg_ctl` on the `PATH`.
fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("TESTKIT_PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("postgres").is_file().then_some((version, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).find(|p| p.join("postgres").is_file()))
        .context("PostgreSQL server programs not found (apt-get install -y postgresql)")
}

impl KeptPostgres {
    /// Starts a server on `dir` (initialised first if it holds none yet) on a free port
    /// and waits until it accepts connections.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir)?;
        let dir = fs::canonicalize(dir)?;
        let run_as = if running_as_root() {
            Some(postgres_user()?)
        } else {
            None
        };
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
        }
        let mut server = Self {
            bin_dir: bin_dir()?,
            dir,
            run_as,
            port: super::free_port()?,
            child: None,
        };
        let data = server.data();
        if !data.join("PG_VERSION").is_file() {
            let output = server
                .command("initdb")
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
                .arg("--no-sync")
                .output()?;
            if !output.status.success() {
                bail!("initdb failed: {}", String::from_utf8_lossy(&output.stderr));
            }
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(server.log())?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(server.log(), Some(uid), Some(gid))?;
        }
        let mut postgres = server.command("postgres");
        postgres
            .arg("-D")
            .arg(&data)
            .args(["-p", &server.port.to_string()])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", server.dir.display()));
        for (name, value) in SETTINGS {
            postgres.arg("-c").arg(format!("{name}={value}"));
        }
        let child = postgres
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting postgres")?;
        server.child = Some(child);
        server.wait_accepting(Duration::from_secs(300)).await?;
        Ok(server)
    }

    /// The server's CPU time so far (the postmaster and every process it started).
    pub fn cpu_time(&self) -> Option<Duration> {
        super::tree_cpu_time(self.child.as_ref()?.id())
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(program));
        command.current_dir(&self.dir).env("HOME", &self.dir);
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits for connections (a reused directory may first replay its WAL).
    async fn wait_accepting(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!("postgres exited at start ({status}):\n{}", self.log_tail());
                }
            }
            if super::connect(&self.url("postgres")).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "postgres did not accept connections within {limit:?}:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates `database` unless it exists.
    pub async fn ensure_database(&self, database: &str) -> anyhow::Result<()> {
        let admin = super::connect(&self.url("postgres")).await?;
        let exists = admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
            .await?
            .is_some();
        if !exists {
            admin
                .batch_execute(&format!("CREATE DATABASE {database}"))
                .await?;
        }
        Ok(())
    }
}

impl Drop for KeptPostgres {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let stopped = self
            .command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "120"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}
