//! Test kit: throw-away PostgreSQL and Redis servers for integration tests.
//!
//! The writer and the reader talk to a PostgreSQL primary, a streaming hot-standby
//! replica and Redis. Their tests need the real servers (replication lag, a read-only
//! standby, a dead replica or cache are behaviours no mock reproduces faithfully), yet
//! they must not touch whatever already runs on the machine (the system PostgreSQL on
//! 5432, Redis on 6379) and must be able to run in parallel. So every server started
//! here gets its own directory under `/tmp` and its own free loopback port, is a child
//! process owned by the value that started it, and is stopped and wiped when that value
//! is dropped.
//!
//! * [`PostgresCluster`]: a primary (with a `payments` database) and, optionally, a
//!   streaming replica that can be killed and restarted.
//! * [`RedisServer`]: a non-persistent `redis-server` that can be killed and restarted.
//! * [`NginxServer`]: nginx as the edge proxy in front of the readers, reloadable.
//! * [`TestCa`]: a certificate authority made at test time, for servers started with
//!   TLS ([`PostgresCluster::start_tls`], [`RedisServer::start_tls`]).
//! * [`fixtures`]: the recorded Stellar data in the repository's `testdata/`.
//!
//! The local stack (`loadtest stack`) uses the same servers with their data kept in a
//! directory of the user's ([`PostgresCluster::open_kept`], [`RedisServer::open_kept`]).
//!
//! The API is blocking (plain `std::process`), so it works from sync tests and from
//! tokio tests alike. The kit never installs anything: when a server binary is missing it
//! fails with [`TestkitError::Missing`], which says what to install
//! (`scripts/install-deps.sh` does it). It is compiled only with the `testkit` feature.

pub mod fixtures;
mod nginx;
mod postgres;
mod redis;
mod tls;

pub use self::nginx::NginxServer;
pub use self::postgres::PostgresCluster;
pub use self::redis::RedisServer;
pub use self::tls::TestCa;

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server gets to start accepting connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server gets to shut down before it is killed.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How many lines of a server log an error carries.
const LOG_TAIL_LINES: usize = 40;
/// How many fresh ports a first start tries before giving up.
const PORT_ATTEMPTS: usize = 5;

/// Everything that can go wrong while starting, driving or stopping a test server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// A program the kit needs is not installed. The kit does not install it: the message
    /// says what is missing and the command that installs it.
    #[error("{what}; install with: {hint}")]
    Missing {
        /// What was looked for, and where.
        what: String,
        /// The command that installs it.
        hint: String,
    },
    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A helper program (initdb, psql, pg_basebackup, ...) exited with an error.
    #[error("{command} failed ({status}): {output}")]
    Command {
        /// The command line.
        command: String,
        /// How it ended.
        status: String,
        /// What it printed (stderr, then stdout), trimmed.
        output: String,
    },
    /// A server did not start, did not become ready in time or misbehaved; carries the
    /// end of its log.
    #[error("{what}\n--- last lines of {} ---\n{tail}", log.display())]
    Server {
        /// What went wrong.
        what: String,
        /// The server's log file.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },
    /// The call does not apply to this value (e.g. a replica operation on a cluster
    /// started without one).
    #[error("{0}")]
    Usage(String),
}

impl TestkitError {
    fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    fn server(what: impl Into<String>, log: &Path) -> Self {
        Self::Server {
            what: what.into(),
            log: log.to_path_buf(),
            tail: log_tail(log, 0),
        }
    }
}

/// A port that was free on 127.0.0.1 a moment ago (bound to port 0, read, released).
/// Another process may take it before the server binds it: callers retry with a new one.
fn free_port() -> Result<u16, TestkitError> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| TestkitError::io("binding 127.0.0.1:0 to find a free port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| TestkitError::io("reading the port of 127.0.0.1:0", e))?
        .port();
    Ok(port)
}

/// A free port different from `other`.
fn free_port_except(other: u16) -> Result<u16, TestkitError> {
    loop {
        let port = free_port()?;
        if port != other {
            return Ok(port);
        }
    }
}

/// The last [`LOG_TAIL_LINES`] lines of `log` written at or after byte `from`, or a note
/// saying why they cannot be read.
fn log_tail(log: &Path, from: u64) -> String {
    let text = match read_from(log, from) {
        Ok(text) => text,
        Err(e) => return format!("(cannot read {}: {e})", log.display()),
    };
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    let tail = lines[start..].join("\n");
    if tail.is_empty() {
        "(empty)".to_owned()
    } else {
        tail
    }
}

fn read_from(path: &Path, from: u64) -> io::Result<String> {
    let mut file = fs::File::open(path)?;
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The current length of a file (0 when it does not exist yet).
fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Opens (creating if needed) a log file for appending, to hand to a child's stdout and
/// stderr.
fn open_log(path: &Path) -> Result<(Stdio, Stdio), TestkitError> {
    let open = || {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| TestkitError::io(format!("opening log file {}", path.display()), e))
    };
    Ok((Stdio::from(open()?), Stdio::from(open()?)))
}

/// Runs a helper program to completion; its trimmed stdout on success.
fn run(command: &mut Command) -> Result<String, TestkitError> {
    let line = describe(command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| TestkitError::io(format!("running {line}"), e))?;
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    let text = match (stderr.is_empty(), stdout.is_empty()) {
        (true, true) => "(no output)".to_owned(),
        (false, true) => stderr,
        (true, false) => stdout,
        (false, false) => format!("{stderr}\n{stdout}"),
    };
    Err(TestkitError::Command {
        command: line,
        status: output.status.to_string(),
        output: text,
    })
}

/// A command line as text, for error messages.
fn describe(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        let arg = arg.to_string_lossy();
        if arg.is_empty() || arg.contains(char::is_whitespace) {
            line.push_str(&format!(" '{arg}'"));
        } else {
            line.push(' ');
            line.push_str(&arg);
        }
    }
    line
}

/// Whether this process runs with effective uid 0 (read from `/proc/self/status`, then
/// from `id -u`).
fn running_as_root() -> bool {
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
            // Uid: real effective saved filesystem
            if let Some(effective) = line.split_whitespace().nth(2) {
                return effective == "0";
            }
        }
    }
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Uid and gid of a named OS user, from `id`.
fn os_user(name: &str) -> Option<(u32, u32)> {
    let query = |flag: &str| -> Option<u32> {
        let output = Command::new("id").args([flag, name]).output().ok()?;
        if !output.status.success() {
            return None;
        }
        String::from_utf8_lossy(&output.stdout).trim().parse().ok()
    };
    Some((query("-u")?, query("-g")?))
}

/// Polls `probe` every [`POLL_INTERVAL`] until it yields `Some` or `timeout` passes.
fn poll<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Waits up to `timeout` for a child to exit; kills (SIGKILL) and reaps it if it does
/// not. Never panics: it is called from `Drop`.
fn reap(child: &mut std::process::Child, timeout: Duration) {
    let exited = poll(timeout, || match child.try_wait() {
        Ok(Some(_)) | Err(_) => Some(()),
        Ok(None) => None,
    });
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Removes a test directory, retrying for a while: processes killed a moment ago (the
/// orphaned children of a SIGKILLed postmaster) may still be writing in it.
fn remove_dir(dir: tempfile::TempDir) {
    let path = dir.path().to_path_buf();
    if dir.close().is_ok() {
        return;
    }
    let _ = poll(SHUTDOWN_TIMEOUT, || match fs::remove_dir_all(&path) {
        Ok(()) => Some(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some(()),
        Err(_) => None,
    });
}

/// A directory of its own under `/tmp` (not `$TMPDIR`: the `postgres` user must be able
/// to reach it, and Unix socket paths must stay short).
fn temp_dir(prefix: &str) -> Result<tempfile::TempDir, TestkitError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .map_err(|e| TestkitError::io(format!("creating a {prefix}* directory in /tmp"), e))
}

/// The first of `dirs`, then of `$PATH`, that holds an executable `name`.
fn find_program(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    dirs.iter()
        .chain(path_dirs.iter())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_says_what_and_how() {
        let error = TestkitError::Missing {
            what: "redis-server not found on PATH".to_owned(),
            hint: "apt-get install -y redis-server".to_owned(),
        };
        assert_eq!(
            error.to_string(),
            "redis-server not found on PATH; install with: apt-get install -y redis-server"
        );
    }

    #[test]
    fn free_ports_are_bindable() {
        let port = free_port().expect("free port");
        assert_ne!(port, 0);
        assert_ne!(free_port_except(port).expect("other port"), port);
    }

    #[test]
    fn describe_quotes_empty_and_spaced_arguments() {
        let mut command = Command::new("redis-server");
        command.args(["--save", "", "-o", "a b"]);
        assert_eq!(describe(&command), "redis-server --save '' -o 'a b'");
    }
}
