//! An ephemeral, non-persistent Redis server.
//!
//! The services use Redis as a cache and must keep working when it disappears. A
//! [`RedisServer`] is a `redis-server` child process on a free port of 127.0.0.1, with
//! persistence off (`--save ''`, `--appendonly no`) and its working directory and log in a
//! fresh `/tmp/testkit-redis-*` directory. It can be SIGKILLed and restarted on the same
//! port to simulate an outage; dropping it kills it and deletes the directory.
//!
//! [`RedisServer::open_kept`] is the local stack's variant: its data (an append-only
//! file) lives in a directory that outlives it, and it stops with a clean `SIGTERM`.
//!
//! [`RedisServer::start_tls`] starts it with TLS only (`--port 0`, `--tls-port`, the
//! certificate and key of a [`TestCa`] copied into its directory, no client
//! certificates): [`RedisServer::url`] is then `rediss://localhost:PORT`, and a plain
//! connection gets no answer. Its readiness is probed with `redis-cli --tls`.
//!
//! `redis-server` is looked for in `$TESTKIT_REDIS_SERVER`, then `PATH`, `/usr/bin` and
//! `/usr/local/bin`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::tls::{ServerFiles, TestCa};
use super::{
    file_len, find_program, free_port_except, is_executable, log_tail, open_log, read_from,
    remove_dir, temp_dir, TestkitError, POLL_INTERVAL, PORT_ATTEMPTS, STARTUP_TIMEOUT,
};

/// A throw-away `redis-server` on a free port of 127.0.0.1.
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    root: PathBuf,
    log: PathBuf,
    /// The server, while it runs.
    child: Option<Child>,
    /// The throw-away directory; `None` for a kept server, and while dropping.
    dir: Option<tempfile::TempDir>,
    /// Persistence on (append-only file in `root`), clean stop, `root` kept.
    kept: bool,
    /// TLS only, with these files, probed with this `redis-cli`.
    tls: Option<(ServerFiles, PathBuf)>,
}

impl RedisServer {
    /// Starts a server and blocks until it answers `PING`.
    pub fn start() -> Result<Self, TestkitError> {
        Self::start_with(None)
    }

    /// Starts a server that speaks TLS only, with `ca`'s server certificate (it names
    /// `localhost`), and blocks until it answers `PING` over TLS.
    pub fn start_tls(ca: &TestCa) -> Result<Self, TestkitError> {
        Self::start_with(Some(ca))
    }

    fn start_with(ca: Option<&TestCa>) -> Result<Self, TestkitError> {
        let binary = locate_redis_server()?;
        let dir = temp_dir("testkit-redis-")?;
        let root = dir.path().to_path_buf();
        let tls = match ca {
            Some(ca) => Some((ca.install_server_files(&root, None)?, locate_redis_cli()?)),
            None => None,
        };
        let mut server = Self {
            binary,
            port: free_port_except(0)?,
            log: root.join("redis.log"),
            root,
            child: None,
            dir: Some(dir),
            kept: false,
            tls,
        };
        server.launch(true)?;
        Ok(server)
    }

    /// A server on 127.0.0.1:`port` whose data (an append-only file) lives in `dir` and
    /// survives it: the next open on the same directory finds the same keys. Fails at
    /// once, naming the port, when it is taken. For the local stack, not for tests.
    pub fn open_kept(dir: &Path, port: u16) -> Result<Self, TestkitError> {
        let binary = locate_redis_server()?;
        std::fs::create_dir_all(dir)
            .map_err(|e| TestkitError::io(format!("creating {}", dir.display()), e))?;
        let root = std::fs::canonicalize(dir)
            .map_err(|e| TestkitError::io(format!("resolving {}", dir.display()), e))?;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            return Err(TestkitError::Usage(format!(
                "port {port} of 127.0.0.1 is taken (is another stack running?); choose another \
                 Redis port"
            )));
        }
        let mut server = Self {
            binary,
            port,
            log: root.join("redis.log"),
            root,
            child: None,
            dir: None,
            kept: true,
            tls: None,
        };
        server.launch(false)?;
        Ok(server)
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://localhost:PORT` for a TLS server.
    pub fn url(&self) -> String {
        if self.tls.is_some() {
            format!("rediss://localhost:{}", self.port)
        } else {
            format!("redis://127.0.0.1:{}", self.port)
        }
    }

    /// The server's port on 127.0.0.1 (kept across [`kill`](Self::kill) and
    /// [`restart`](Self::restart)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's directory (working directory and log); deleted on drop.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// SIGKILLs the server, as a crash would, and reaps it. Does nothing if it is down.
    pub fn kill(&mut self) -> Result<(), TestkitError> {
        if let Some(mut child) = self.child.take() {
            child
                .kill()
                .map_err(|e| TestkitError::io(format!("SIGKILL redis-server {}", child.id()), e))?;
            child
                .wait()
                .map_err(|e| TestkitError::io(format!("reaping redis-server {}", child.id()), e))?;
        }
        Ok(())
    }

    /// Starts the server again on the same port (empty: nothing is persisted) and blocks
    /// until it answers `PING`. Does nothing if it runs.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        if let Some(child) = self.child.as_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                return Ok(());
            }
            self.child = None;
        }
        self.launch(false)
    }

    /// Spawns the server and waits for `PING`. On a first start (`may_move`) a port taken
    /// meanwhile by someone else means another free port; on a restart the same port is
    /// retried until the startup timeout.
    fn launch(&mut self, may_move: bool) -> Result<(), TestkitError> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let from = file_len(&self.log);
            let (stdout, stderr) = open_log(&self.log)?;
            let persistence: [&str; 4] = if self.kept {
                ["--save", "60 1", "--appendonly", "yes"]
            } else {
                ["--save", "", "--appendonly", "no"]
            };
            let mut command = Command::new(&self.binary);
            match &self.tls {
                None => command.args(["--port", &self.port.to_string()]),
                Some((files, _)) => command
                    .args(["--port", "0", "--tls-port", &self.port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(&files.cert)
                    .arg("--tls-key-file")
                    .arg(&files.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&files.ca)
                    .args(["--tls-auth-clients", "no"]),
            };
            let mut child = command
                .args(["--bind", "127.0.0.1"])
                .args(persistence)
                .args(["--daemonize", "no", "--dir"])
                .arg(&self.root)
                .current_dir(&self.root)
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .spawn()
                .map_err(|e| TestkitError::io(format!("spawning {}", self.binary.display()), e))?;
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break Some(status),
                    Ok(None) => {}
                    Err(e) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(TestkitError::io("waiting for redis-server", e));
                    }
                }
                let answers = match &self.tls {
                    None => answers_ping(self.port),
                    Some((_, cli)) => answers_tls_ping(cli, self.port),
                };
                if answers && matches!(child.try_wait(), Ok(None)) {
                    self.child = Some(child);
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    break None;
                }
                thread::sleep(POLL_INTERVAL);
            };
            let Some(status) = status else {
                let _ = child.kill();
                let _ = child.wait();
                return Err(TestkitError::server(
                    format!(
                        "redis-server did not answer PING on 127.0.0.1:{} within {STARTUP_TIMEOUT:?}",
                        self.port
                    ),
                    &self.log,
                ));
            };
            let output = read_from(&self.log, from).unwrap_or_default();
            if output.contains("Address already in use")
                || output.contains("Could not create server TCP")
            {
                if may_move && attempts < PORT_ATTEMPTS {
                    self.port = free_port_except(0)?;
                    continue;
                }
                if !may_move && Instant::now() < deadline {
                    thread::sleep(POLL_INTERVAL * 4);
                    continue;
                }
            }
            return Err(TestkitError::Server {
                what: format!(
                    "redis-server exited during startup on port {} ({status})",
                    self.port
                ),
                log: self.log.clone(),
                tail: log_tail(&self.log, 0),
            });
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.kept {
            // SIGTERM: Redis flushes its append-only file and exits.
            if let Some(mut child) = self.child.take() {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(child.id().to_string())
                    .status();
                super::reap(&mut child, super::SHUTDOWN_TIMEOUT);
            }
            return;
        }
        let _ = self.kill();
        if let Some(dir) = self.dir.take() {
            remove_dir(dir);
        }
    }
}

/// Whether something on 127.0.0.1:`port` answers an inline `PING` with `+PONG`.
fn answers_ping(port: u16) -> bool {
    let timeout = Duration::from_millis(500);
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, timeout) else {
        return false;
    };
    if stream.set_read_timeout(Some(timeout)).is_err() || stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    let mut read = 0;
    while read < reply.len() {
        match stream.read(&mut reply[read..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    reply[..read].starts_with(b"+PONG")
}

/// Whether something on 127.0.0.1:`port` answers `PING` over TLS (certificate not
/// checked: only whether the server is up and ours, a TLS one).
fn answers_tls_ping(cli: &Path, port: u16) -> bool {
    Command::new(cli)
        .args([
            "--tls",
            "--insecure",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .arg("PING")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "PONG")
        .unwrap_or(false)
}

/// `redis-cli` (which probes a TLS server) beside `redis-server`'s usual places.
fn locate_redis_cli() -> Result<PathBuf, TestkitError> {
    find_program(
        "redis-cli",
        &[PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")],
    )
    .ok_or_else(|| TestkitError::Missing {
        what:
            "redis-cli (to probe a TLS redis-server) not found in /usr/bin, /usr/local/bin or PATH"
                .to_owned(),
        hint: "apt-get install -y redis-tools (or run scripts/install-deps.sh)".to_owned(),
    })
}

/// `$TESTKIT_REDIS_SERVER`, else `redis-server` on `PATH`, in `/usr/bin` or
/// `/usr/local/bin`.
fn locate_redis_server() -> Result<PathBuf, TestkitError> {
    if let Some(path) = std::env::var_os("TESTKIT_REDIS_SERVER") {
        let path = PathBuf::from(path);
        if is_executable(&path) {
            return Ok(path);
        }
    }
    find_program(
        "redis-server",
        &[PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")],
    )
    .ok_or_else(|| TestkitError::Missing {
        what: "redis-server not found in $TESTKIT_REDIS_SERVER, /usr/bin, /usr/local/bin or PATH"
            .to_owned(),
        hint: "apt-get install -y redis-server (or run scripts/install-deps.sh)".to_owned(),
    })
}
