//! An nginx server as the edge in front of the readers (the local stand-in for
//! Cloudflare), for the tests and the local stack.
//!
//! [`NginxServer`] runs `nginx` in the foreground (`daemon off`, so the child *is* the
//! master process) with a prefix directory of its own holding the configuration, the
//! cache, temporary files, the pid file and the logs. The caller writes the
//! configuration: [`NginxServer::start`] takes a function from the chosen port and the
//! prefix directory to the text of `nginx.conf`. Other files the configuration includes
//! can be rewritten and applied with a graceful reload ([`NginxServer::write_and_reload`]):
//! the configuration is checked with `nginx -t` first, so a bad file is an error here
//! rather than a reload nginx silently refuses; then the master gets `SIGHUP`, starts
//! workers with the new configuration and lets the old ones finish their requests.
//!
//! `nginx` is looked for in `$TESTKIT_NGINX`, then `PATH`, `/usr/sbin` and
//! `/usr/local/sbin`. When the kit runs as root the workers run as root too (the prefix
//! directory is private to this server).

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{
    find_program, free_port_except, is_executable, log_tail, open_log, poll, reap, remove_dir, run,
    running_as_root, temp_dir, TestkitError, POLL_INTERVAL, PORT_ATTEMPTS, SHUTDOWN_TIMEOUT,
    STARTUP_TIMEOUT,
};

const INSTALL_HINT: &str = "apt-get install -y nginx (or run scripts/install-deps.sh)";

/// A throw-away nginx on a free port of 127.0.0.1. Dropping it stops it (`SIGQUIT`, a
/// graceful stop, then `SIGKILL` if it lingers) and deletes its directory.
#[derive(Debug)]
pub struct NginxServer {
    binary: PathBuf,
    port: u16,
    root: PathBuf,
    /// The master process, while it runs.
    child: Option<Child>,
    /// `None` only while dropping.
    dir: Option<tempfile::TempDir>,
}

impl NginxServer {
    /// Starts nginx with the configuration `config(port, prefix)` returns, and blocks until
    /// it accepts connections on 127.0.0.1:`port`. The configuration must listen on that
    /// port, keep its files under the prefix directory and must not daemonise (the kit
    /// passes `daemon off` and the pid file on the command line).
    pub fn start(config: impl Fn(u16, &Path) -> String) -> Result<Self, TestkitError> {
        Self::launch_on(None, config)
    }

    /// Like [`Self::start`], on a given port of 127.0.0.1 (the local stack's public
    /// port); fails at once, naming the port, when it is taken.
    pub fn start_on(
        port: u16,
        config: impl Fn(u16, &Path) -> String,
    ) -> Result<Self, TestkitError> {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            return Err(TestkitError::Usage(format!(
                "port {port} of 127.0.0.1 is taken: choose another edge port"
            )));
        }
        Self::launch_on(Some(port), config)
    }

    fn launch_on(
        fixed: Option<u16>,
        config: impl Fn(u16, &Path) -> String,
    ) -> Result<Self, TestkitError> {
        let binary = locate_nginx()?;
        let dir = temp_dir("testkit-nginx-")?;
        let root = dir.path().to_path_buf();
        let mut server = Self {
            binary,
            port: 0,
            root,
            child: None,
            dir: Some(dir),
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            server.port = match fixed {
                Some(port) => port,
                None => free_port_except(0)?,
            };
            let text = config(server.port, &server.root);
            server.write("nginx.conf", &text)?;
            server.check()?;
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(error)
                    if fixed.is_none() && attempts < PORT_ATTEMPTS && server.port_was_taken() =>
                {
                    let _ = error;
                    continue;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The prefix directory (configuration, cache, logs); deleted on drop.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The master process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The error log (where nginx reports reloads and upstream failures).
    pub fn error_log(&self) -> PathBuf {
        self.root.join("error.log")
    }

    /// Writes `text` to `name` in the prefix directory, checks the whole configuration
    /// and reloads gracefully. Returns the previous generation's processes once the
    /// master has started workers with the new configuration: they may still be finishing
    /// requests (see [`Self::wait_exited`]). On a failed check nothing is reloaded and the
    /// old file is put back.
    pub fn write_and_reload(&self, name: &str, text: &str) -> Result<Vec<u32>, TestkitError> {
        let path = self.root.join(name);
        let previous = fs::read_to_string(&path).ok();
        self.write(name, text)?;
        if let Err(error) = self.check() {
            match previous {
                Some(old) => self.write(name, &old)?,
                None => {
                    let _ = fs::remove_file(&path);
                }
            }
            return Err(error);
        }
        self.reload()
    }

    /// Graceful reload (`SIGHUP` to the master) of the configuration as it is on disk,
    /// waiting until the new generation of workers is up; returns the old generation.
    pub fn reload(&self) -> Result<Vec<u32>, TestkitError> {
        let pid = self
            .pid()
            .ok_or_else(|| TestkitError::Usage("nginx is not running".to_owned()))?;
        let before = self.workers();
        signal(pid, "HUP")?;
        // New workers are new pids beside (or instead of) the old ones.
        let started = poll(STARTUP_TIMEOUT, || {
            let now = self.workers();
            now.iter().any(|w| !before.contains(w)).then_some(())
        });
        started.ok_or_else(|| {
            TestkitError::server(
                format!("nginx did not start new workers within {STARTUP_TIMEOUT:?} of a reload"),
                &self.error_log(),
            )
        })?;
        Ok(before)
    }

    /// Waits until none of `processes` (an old generation a reload returned) is left:
    /// they finished their requests and exited. Returns whether they did within
    /// `timeout`. The cache loader of the old generation, if still loading, counts too.
    pub fn wait_exited(&self, processes: &[u32], timeout: Duration) -> bool {
        poll(timeout, || {
            let current = self.workers();
            (!processes.iter().any(|p| current.contains(p))).then_some(())
        })
        .is_some()
    }

    /// The pids of the master's children: workers of every generation, the cache
    /// manager and loader.
    pub fn workers(&self) -> Vec<u32> {
        let Some(pid) = self.pid() else {
            return Vec::new();
        };
        let listed = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .or_else(|_| {
                Command::new("pgrep")
                    .arg("-P")
                    .arg(pid.to_string())
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            })
            .unwrap_or_default();
        listed
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// The `user` line an edge configuration needs: workers as root when the kit runs
    /// as root (the prefix directory belongs to root), nothing otherwise.
    pub fn worker_user_directive() -> &'static str {
        if running_as_root() {
            "user root root;"
        } else {
            ""
        }
    }

    fn write(&self, name: &str, text: &str) -> Result<(), TestkitError> {
        let path = self.root.join(name);
        fs::write(&path, text)
            .map_err(|e| TestkitError::io(format!("writing {}", path.display()), e))
    }

    fn args(&self) -> Vec<String> {
        let pid = self.root.join("nginx.pid");
        vec![
            "-p".to_owned(),
            format!("{}/", self.root.display()),
            "-c".to_owned(),
            self.root.join("nginx.conf").display().to_string(),
            "-g".to_owned(),
            format!("daemon off; pid {};", pid.display()),
        ]
    }

    /// `nginx -t`: the configuration parses and its files are reachable.
    fn check(&self) -> Result<(), TestkitError> {
        let mut test = Command::new(&self.binary);
        test.args(self.args()).arg("-t").arg("-q");
        run(&mut test).map(drop)
    }

    fn launch(&mut self) -> Result<(), TestkitError> {
        let log = self.root.join("nginx.out");
        let (stdout, stderr) = open_log(&log)?;
        let mut child = Command::new(&self.binary)
            .args(self.args())
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| TestkitError::io(format!("spawning {}", self.binary.display()), e))?;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(TestkitError::Server {
                    what: format!(
                        "nginx exited during startup on port {} ({status})",
                        self.port
                    ),
                    log: self.error_log(),
                    tail: format!("{}\n{}", log_tail(&log, 0), log_tail(&self.error_log(), 0)),
                });
            }
            let address = SocketAddr::from(([127, 0, 0, 1], self.port));
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
                && matches!(child.try_wait(), Ok(None))
            {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(TestkitError::server(
                    format!(
                        "nginx did not listen on 127.0.0.1:{} within {STARTUP_TIMEOUT:?}",
                        self.port
                    ),
                    &self.error_log(),
                ));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    fn port_was_taken(&self) -> bool {
        let log = fs::read_to_string(self.root.join("nginx.out")).unwrap_or_default()
            + &fs::read_to_string(self.error_log()).unwrap_or_default();
        log.contains("Address already in use")
    }
}

impl Drop for NginxServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGQUIT: graceful; event streams are cut when the timeout below runs out.
            let _ = signal(child.id(), "QUIT");
            reap(&mut child, SHUTDOWN_TIMEOUT);
        }
        if let Some(dir) = self.dir.take() {
            remove_dir(dir);
        }
    }
}

fn signal(pid: u32, name: &str) -> Result<(), TestkitError> {
    let mut kill = Command::new("kill");
    kill.arg(format!("-{name}")).arg(pid.to_string());
    run(&mut kill).map(drop)
}

/// `$TESTKIT_NGINX`, else `nginx` on `PATH`, in `/usr/sbin` or `/usr/local/sbin`.
fn locate_nginx() -> Result<PathBuf, TestkitError> {
    if let Some(path) = std::env::var_os("TESTKIT_NGINX") {
        let path = PathBuf::from(path);
        if is_executable(&path) {
            return Ok(path);
        }
    }
    find_program(
        "nginx",
        &[PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")],
    )
    .ok_or_else(|| TestkitError::Missing {
        what: "nginx not found in $TESTKIT_NGINX, /usr/sbin, /usr/local/sbin or PATH".to_owned(),
        hint: INSTALL_HINT.to_owned(),
    })
}
