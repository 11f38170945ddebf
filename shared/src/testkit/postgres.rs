//! An ephemeral PostgreSQL primary, optionally with a streaming hot-standby replica.
//!
//! The reader serves queries from a replica and must cope with one that lags or dies;
//! the writer needs a primary. [`PostgresCluster`] builds exactly that from the
//! PostgreSQL server binaries of the machine:
//!
//! 1. `initdb` a primary in a fresh `/tmp/testkit-pg-*` directory (trust authentication
//!    on loopback and the local socket, replication included), start it on a free port
//!    and create the `payments` database;
//! 2. for a replica, `pg_basebackup -R -X stream` the primary into a second data
//!    directory and start it on a second free port as a hot standby.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root every server-side
//! program (`initdb`, `postgres`, `pg_basebackup`, `pg_ctl`) runs as the `postgres` OS
//! user, which owns the directory. `postgres` itself is spawned directly (not through
//! `pg_ctl start`), so the child process *is* the postmaster named in `postmaster.pid`:
//! [`PostgresCluster::kill_replica`] SIGKILLs it and reaps it, and nothing is left as a
//! zombie or an orphan. Durability is switched off (`fsync`, `full_page_writes`,
//! `synchronous_commit`) because the data dies with the test, except in the `*_durable`
//! variants that benchmarks use.
//!
//! [`PostgresCluster::start_tls`] and [`PostgresCluster::start_tls_with_replica`] start
//! the same servers with `ssl = on` (certificate and key from a [`TestCa`], copied into
//! the cluster directory, key 0600, owned by the server user) and a pg_hba that accepts
//! TCP connections over TLS only (`hostssl`): a plain TCP connection is refused with "no
//! encryption", so a client that silently dropped TLS fails. The kit's own `psql`,
//! `pg_isready`, `pg_basebackup` and the replica's walreceiver use libpq's default
//! `sslmode=prefer`, which encrypts without verifying.
//!
//! The server binaries are looked for in `$TESTKIT_PG_BINDIR`, then `pg_config --bindir`,
//! then `/usr/lib/postgresql/*/bin` (newest first), then `PATH`.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::tls::{ServerFiles, TestCa};
use super::{
    file_len, find_program, free_port_except, is_executable, log_tail, open_log, os_user, poll,
    read_from, reap, remove_dir, run, running_as_root, temp_dir, TestkitError, POLL_INTERVAL,
    PORT_ATTEMPTS, SHUTDOWN_TIMEOUT, STARTUP_TIMEOUT,
};

/// The database created on the primary for the application.
const DATABASE: &str = "payments";
/// The superuser `initdb` creates, and the OS user the servers run as when we are root.
const SUPERUSER: &str = "postgres";
/// Programs the kit runs from the PostgreSQL bin directory.
const REQUIRED: [&str; 6] = [
    "initdb",
    "postgres",
    "pg_ctl",
    "pg_basebackup",
    "pg_isready",
    "psql",
];
const INSTALL_HINT: &str = "apt-get install -y postgresql (or run scripts/install-deps.sh)";
/// WAL page size and the longest page header: see [`caught_up`].
const WAL_PAGE: u64 = 8192;
const WAL_LONG_PAGE_HEADER: u64 = 40;

/// A throw-away PostgreSQL primary (with a `payments` database) and, optionally, a
/// streaming hot-standby replica, each on its own free port of 127.0.0.1.
///
/// Dropping it stops both servers (immediate shutdown) and deletes their directory,
/// except for a cluster opened with [`PostgresCluster::open_kept`], whose servers stop
/// cleanly and whose data stays for the next start.
#[derive(Debug)]
pub struct PostgresCluster {
    ctx: Context,
    primary: Server,
    replica: Option<Server>,
    /// The throw-away directory; `None` for a kept cluster, and while dropping.
    dir: Option<tempfile::TempDir>,
}

/// What every server-side command needs.
#[derive(Debug)]
struct Context {
    bin_dir: PathBuf,
    /// Uid and gid to run server programs as (`postgres`), when we are root.
    run_as: Option<(u32, u32)>,
    /// The cluster directory: data directories, logs and Unix sockets.
    root: PathBuf,
    /// Keep PostgreSQL's durable defaults (for benchmarks that claim durability figures).
    durable: bool,
    /// Data kept across runs: durable, no Unix sockets (the directory may have a path
    /// too long for one), a clean shutdown, and never deleted.
    kept: bool,
    /// `ssl = on` with these files, and TCP connections over TLS only.
    tls: Option<ServerFiles>,
}

/// One postmaster.
#[derive(Debug)]
struct Server {
    name: &'static str,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    /// The postmaster, while it runs.
    child: Option<Child>,
    /// For a replica: the primary's port, which its `primary_conninfo` names.
    upstream: Option<u16>,
}

/// Whether a start may move the server to another port when its port is taken.
#[derive(Clone, Copy)]
enum Port {
    /// First start: any free port except this one (the other server's).
    Movable { avoid: u16 },
    /// Restart: the same port, retried until the startup timeout.
    Fixed,
}

enum Startup {
    Ready,
    Exited(ExitStatus),
    TimedOut,
}

impl PostgresCluster {
    /// Starts a primary alone. Blocks until it accepts connections and `payments` exists.
    pub fn start() -> Result<Self, TestkitError> {
        Self::launch(false, false, None)
    }

    /// Like [`Self::start`], with TLS on and plain TCP connections refused; the server
    /// certificate is `ca`'s (it names `localhost`).
    pub fn start_tls(ca: &TestCa) -> Result<Self, TestkitError> {
        Self::launch(false, false, Some(ca))
    }

    /// Like [`Self::start_with_replica`], with TLS on and plain TCP connections refused
    /// on both servers.
    pub fn start_tls_with_replica(ca: &TestCa) -> Result<Self, TestkitError> {
        Self::launch(true, false, Some(ca))
    }

    /// Starts a primary and a streaming hot-standby replica of it. Blocks until both
    /// accept connections and the replica is in recovery.
    pub fn start_with_replica() -> Result<Self, TestkitError> {
        Self::launch(true, false, None)
    }

    /// Like [`Self::start`], but with durability on (fsync, full page writes and
    /// synchronous commit at PostgreSQL's defaults): for benchmarks whose figures must
    /// hold on a production primary.
    pub fn start_durable() -> Result<Self, TestkitError> {
        Self::launch(false, true, None)
    }

    /// Like [`Self::start_with_replica`], with durability on.
    pub fn start_durable_with_replica() -> Result<Self, TestkitError> {
        Self::launch(true, true, None)
    }

    fn launch(
        with_replica: bool,
        durable: bool,
        ca: Option<&TestCa>,
    ) -> Result<Self, TestkitError> {
        let bin_dir = locate_bin_dir()?;
        let run_as = server_user()?;
        let dir = temp_dir("testkit-pg-")?;
        let root = dir.path().to_path_buf();
        give_to(&root, run_as)?;
        let tls = ca
            .map(|ca| ca.install_server_files(&root, run_as))
            .transpose()?;
        let primary = Server::new("primary", &root, free_port_except(0)?);
        // From here on, dropping `cluster` (on any error too) stops what was started.
        let mut cluster = Self {
            ctx: Context {
                bin_dir,
                run_as,
                root,
                durable,
                kept: false,
                tls,
            },
            primary,
            replica: None,
            dir: Some(dir),
        };
        cluster.ctx.init_primary(&cluster.primary)?;
        cluster
            .ctx
            .start(&mut cluster.primary, Port::Movable { avoid: 0 })?;
        cluster.create_database()?;
        if with_replica {
            let port = free_port_except(cluster.primary.port)?;
            cluster.add_replica(port)?;
        }
        Ok(cluster)
    }

    /// A primary and a streaming replica whose data lives in `dir` and outlives this
    /// value: the first call creates them there, later calls start them again where they
    /// stopped (the replica catches up from the primary). Durable settings; the servers
    /// listen on the given ports of 127.0.0.1 and the call fails at once, naming the port,
    /// when one is taken. Dropping the cluster shuts both servers down cleanly and keeps
    /// `dir`. For the local stack, not for tests.
    pub fn open_kept(
        dir: &Path,
        primary_port: u16,
        replica_port: u16,
    ) -> Result<Self, TestkitError> {
        let bin_dir = locate_bin_dir()?;
        let run_as = server_user()?;
        fs::create_dir_all(dir)
            .map_err(|e| TestkitError::io(format!("creating {}", dir.display()), e))?;
        let root = fs::canonicalize(dir)
            .map_err(|e| TestkitError::io(format!("resolving {}", dir.display()), e))?;
        give_to(&root, run_as)?;
        if let Some((uid, gid)) = run_as {
            // Every parent must let the server user through, or initdb fails obscurely.
            let reachable = Command::new("test")
                .arg("-w")
                .arg(&root)
                .uid(uid)
                .gid(gid)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !reachable {
                return Err(TestkitError::Usage(format!(
                    "the `{SUPERUSER}` user cannot reach {}: make its parent folders \
                     traversable (chmod o+x) or choose another data directory",
                    root.display()
                )));
            }
        }
        for port in [primary_port, replica_port] {
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                return Err(TestkitError::Usage(format!(
                    "port {port} of 127.0.0.1 is taken (is another stack running?); \
                     choose other PostgreSQL ports"
                )));
            }
        }
        let mut cluster = Self {
            ctx: Context {
                bin_dir,
                run_as,
                root: root.clone(),
                durable: true,
                kept: true,
                tls: None,
            },
            primary: Server::new("primary", &root, primary_port),
            replica: None,
            dir: None,
        };
        let fresh = !cluster.primary.data.join("PG_VERSION").is_file();
        if fresh {
            cluster.ctx.init_primary(&cluster.primary)?;
        }
        cluster.ctx.start(&mut cluster.primary, Port::Fixed)?;
        if fresh {
            cluster.create_database()?;
        }
        let replica_data = root.join("replica");
        if replica_data.join("PG_VERSION").is_file() {
            let mut replica = Server::new("replica", &root, replica_port);
            replica.upstream = Some(primary_port);
            let replica = cluster.replica.insert(replica);
            cluster.ctx.start(replica, Port::Fixed)?;
            cluster.ctx.wait_in_recovery(replica)?;
        } else {
            // A half-made replica (a base backup cut short) is made again.
            if replica_data.exists() {
                fs::remove_dir_all(&replica_data).map_err(|e| {
                    TestkitError::io(format!("removing {}", replica_data.display()), e)
                })?;
            }
            cluster.add_replica(replica_port)?;
        }
        Ok(cluster)
    }

    fn create_database(&self) -> Result<(), TestkitError> {
        self.ctx
            .psql(
                self.primary.port,
                "postgres",
                &format!("CREATE DATABASE {DATABASE}"),
            )
            .map(drop)
            .map_err(|e| {
                TestkitError::server(format!("creating {DATABASE}: {e}"), &self.primary.log)
            })
    }

    fn add_replica(&mut self, port: u16) -> Result<(), TestkitError> {
        let mut replica = Server::new("replica", &self.ctx.root, port);
        replica.upstream = Some(self.primary.port);
        let replica = self.replica.insert(replica);
        let mut backup = Command::new(self.ctx.bin_dir.join("pg_basebackup"));
        backup
            .args(["-h", "127.0.0.1", "-p", &self.primary.port.to_string()])
            .args(["-U", SUPERUSER, "-D"])
            .arg(&replica.data)
            .args(["-R", "-X", "stream", "--checkpoint=fast", "--no-sync"]);
        self.ctx.as_server_user(&mut backup);
        run(&mut backup).map_err(|e| {
            TestkitError::server(format!("pg_basebackup failed: {e}"), &self.primary.log)
        })?;
        let avoid = self.primary.port;
        let placement = if self.ctx.kept {
            Port::Fixed
        } else {
            Port::Movable { avoid }
        };
        self.ctx.start(replica, placement)?;
        self.ctx.wait_in_recovery(replica)
    }

    /// `postgres://postgres@127.0.0.1:PORT/payments` for the primary.
    pub fn primary_url(&self) -> String {
        url(self.primary.port)
    }

    /// The same URL for the replica, if the cluster has one.
    pub fn replica_url(&self) -> Option<String> {
        self.replica.as_ref().map(|r| url(r.port))
    }

    /// The primary's port on 127.0.0.1.
    pub fn primary_port(&self) -> u16 {
        self.primary.port
    }

    /// The replica's port on 127.0.0.1, if the cluster has one (it keeps it across
    /// [`kill_replica`](Self::kill_replica) and [`start_replica`](Self::start_replica)).
    pub fn replica_port(&self) -> Option<u16> {
        self.replica.as_ref().map(|r| r.port)
    }

    /// The primary postmaster's process id, while it runs.
    pub fn primary_pid(&self) -> Option<u32> {
        self.primary.child.as_ref().map(Child::id)
    }

    /// The replica postmaster's process id, while it runs.
    pub fn replica_pid(&self) -> Option<u32> {
        self.replica.as_ref()?.child.as_ref().map(Child::id)
    }

    /// The cluster's directory (data directories, logs, Unix sockets); deleted on drop
    /// unless the cluster is kept.
    pub fn dir(&self) -> &Path {
        &self.ctx.root
    }

    /// The PostgreSQL bin directory in use (`psql`, `pg_dump`, ... live there).
    pub fn bin_dir(&self) -> &Path {
        &self.ctx.bin_dir
    }

    /// Runs `sql` with `psql` as `postgres` against `database` on 127.0.0.1:`port` (the
    /// primary's or the replica's) and returns its unaligned, tuples-only output
    /// (columns separated by `|`, one row a line), trimmed. Stops at the first error,
    /// which comes back as [`TestkitError::Command`] with psql's message.
    pub fn psql(&self, port: u16, database: &str, sql: &str) -> Result<String, TestkitError> {
        self.ctx.psql(port, database, sql)
    }

    /// SIGKILLs the replica postmaster, as a crash would, and reaps it. Its children
    /// notice the postmaster's death and exit by themselves. Does nothing if the replica
    /// is already down; fails if the cluster has no replica.
    pub fn kill_replica(&mut self) -> Result<(), TestkitError> {
        let replica = self.replica.as_mut().ok_or_else(no_replica)?;
        if let Some(mut child) = replica.child.take() {
            // The child is the postmaster itself (the pid in postmaster.pid): `postgres`
            // is exec'd directly, with no pg_ctl or shell in between.
            child.kill().map_err(|e| {
                TestkitError::io(format!("SIGKILL replica postmaster {}", child.id()), e)
            })?;
            child.wait().map_err(|e| {
                TestkitError::io(format!("reaping replica postmaster {}", child.id()), e)
            })?;
        }
        Ok(())
    }

    /// Starts the replica again, on the same port and data directory, and waits until it
    /// accepts connections in recovery. After a SIGKILL this retries until the killed
    /// instance's children have let go of its shared memory. Does nothing if the replica
    /// runs; fails if the cluster has no replica.
    pub fn start_replica(&mut self) -> Result<(), TestkitError> {
        let replica = self.replica.as_mut().ok_or_else(no_replica)?;
        if let Some(child) = replica.child.as_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                return Ok(());
            }
            replica.child = None;
        }
        self.ctx.start(replica, Port::Fixed)?;
        self.ctx.wait_in_recovery(replica)
    }

    /// Waits until the replica has replayed everything the primary had written when the
    /// call began.
    ///
    /// The target is the primary's WAL *insert* position rather than
    /// `pg_current_wal_lsn()`: with `synchronous_commit=off` a commit may not have been
    /// written out yet when this is called, and the caller wants to see it on the
    /// replica. Fails if the replica has not caught up within `timeout` (also when it is
    /// down), with the end of the replica's log.
    pub fn wait_for_replica_replay(&self, timeout: Duration) -> Result<(), TestkitError> {
        let replica = self.replica.as_ref().ok_or_else(no_replica)?;
        let text = self.ctx.psql(
            self.primary.port,
            "postgres",
            "SELECT pg_current_wal_insert_lsn()",
        )?;
        let target = parse_lsn(&text).ok_or_else(|| {
            TestkitError::server(
                format!("unexpected WAL position from the primary: {text:?}"),
                &self.primary.log,
            )
        })?;
        let mut last = String::from("nothing yet");
        let done = poll(timeout, || {
            match self
                .ctx
                .psql(replica.port, "postgres", "SELECT pg_last_wal_replay_lsn()")
            {
                Ok(text) => match parse_lsn(&text) {
                    Some(replayed) if caught_up(replayed, target) => return Some(()),
                    _ => last = format!("replayed up to {text:?}"),
                },
                Err(e) => last = e.to_string(),
            }
            None
        });
        done.ok_or_else(|| {
            TestkitError::server(
                format!(
                    "the replica did not replay the primary's WAL up to {text} within \
                     {timeout:?} (last: {last})"
                ),
                &replica.log,
            )
        })
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        // The replica first: a primary stopping cleanly waits for its WAL senders.
        if let Some(replica) = self.replica.as_mut() {
            self.ctx.stop(replica);
        }
        self.ctx.stop(&mut self.primary);
        if let Some(dir) = self.dir.take() {
            remove_dir(dir);
        }
    }
}

impl Server {
    fn new(name: &'static str, root: &Path, port: u16) -> Self {
        Self {
            name,
            data: root.join(name),
            log: root.join(format!("{name}.log")),
            port,
            child: None,
            upstream: None,
        }
    }
}

impl Context {
    /// Makes `cmd` run as the server user, from the cluster directory (which that user
    /// can enter, unlike root's home).
    fn as_server_user(&self, cmd: &mut Command) {
        cmd.current_dir(&self.root).env("HOME", &self.root);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
    }

    fn init_primary(&self, primary: &Server) -> Result<(), TestkitError> {
        let mut initdb = Command::new(self.bin_dir.join("initdb"));
        initdb
            .arg("-D")
            .arg(&primary.data)
            .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync");
        self.as_server_user(&mut initdb);
        run(&mut initdb)?;
        // Spelled out rather than left to initdb's defaults: trust on the socket and on
        // loopback, for every database and for replication (pg_basebackup, walreceiver);
        // with TLS, loopback TCP over TLS only.
        let tcp = if self.tls.is_some() {
            "hostssl"
        } else {
            "host"
        };
        let hba = primary.data.join("pg_hba.conf");
        fs::write(
            &hba,
            format!(
                "# Written by the stellar-payments test kit.\n\
                 local all         all              trust\n\
                 {tcp:<5} all         all 127.0.0.1/32 trust\n\
                 local replication all              trust\n\
                 {tcp:<5} replication all 127.0.0.1/32 trust\n"
            ),
        )
        .map_err(|e| TestkitError::io(format!("writing {}", hba.display()), e))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&hba, Some(uid), Some(gid))
                .map_err(|e| TestkitError::io(format!("chown {}", hba.display()), e))?;
        }
        Ok(())
    }

    /// Spawns the postmaster with the kit's settings, its output appended to its log.
    fn spawn(&self, server: &Server) -> Result<Child, TestkitError> {
        let (stdout, stderr) = open_log(&server.log)?;
        let mut postgres = Command::new(self.bin_dir.join("postgres"));
        postgres
            .arg("-D")
            .arg(&server.data)
            .args(["-p", &server.port.to_string()]);
        let socket_dir = if self.kept {
            String::new()
        } else {
            self.root.display().to_string()
        };
        let durability = if self.durable { "on" } else { "off" };
        let settings: [(&str, &str); 12] = [
            ("listen_addresses", "127.0.0.1"),
            ("unix_socket_directories", &socket_dir),
            ("fsync", durability),
            ("synchronous_commit", durability),
            ("full_page_writes", durability),
            ("shared_buffers", "64MB"),
            ("max_connections", "60"),
            ("wal_level", "replica"),
            ("max_wal_senders", "5"),
            ("hot_standby", "on"),
            ("hot_standby_feedback", "on"),
            // So a replica killed for a while can still catch up from the primary.
            ("wal_keep_size", "256MB"),
        ];
        for (name, value) in settings {
            postgres.arg("-c").arg(format!("{name}={value}"));
        }
        if let Some(tls) = &self.tls {
            postgres
                .arg("-c")
                .arg("ssl=on")
                .arg("-c")
                .arg(format!("ssl_cert_file={}", tls.cert.display()))
                .arg("-c")
                .arg(format!("ssl_key_file={}", tls.key.display()));
        }
        // The primary's port as of now, over whatever `pg_basebackup -R` wrote then.
        if let Some(upstream) = server.upstream {
            postgres.arg("-c").arg(format!(
                "primary_conninfo=host=127.0.0.1 port={upstream} user={SUPERUSER}"
            ));
        }
        self.as_server_user(&mut postgres);
        postgres
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| TestkitError::io(format!("spawning the {} postmaster", server.name), e))
    }

    /// Starts `server` and waits until it accepts connections.
    fn start(&self, server: &mut Server, port: Port) -> Result<(), TestkitError> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let from = file_len(&server.log);
            let mut child = self.spawn(server)?;
            let status = match self.wait_accepting(server, &mut child, deadline) {
                Startup::Ready => {
                    server.child = Some(child);
                    return Ok(());
                }
                Startup::Exited(status) => status,
                Startup::TimedOut => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(TestkitError::server(
                        format!(
                            "the {} did not accept connections on 127.0.0.1:{} within {:?}",
                            server.name, server.port, STARTUP_TIMEOUT
                        ),
                        &server.log,
                    ));
                }
            };
            let output = read_from(&server.log, from).unwrap_or_default();
            let port_taken = output.contains("could not bind")
                || output.contains("could not create any TCP/IP sockets");
            match port {
                Port::Movable { avoid } if port_taken && attempts < PORT_ATTEMPTS => {
                    server.port = free_port_except(avoid)?;
                    continue;
                }
                // The port, or the shared memory, may still be held by the children of a
                // postmaster killed a moment ago: they exit once they notice.
                Port::Fixed if Instant::now() < deadline => {
                    thread::sleep(POLL_INTERVAL * 4);
                    continue;
                }
                _ => {}
            }
            return Err(TestkitError::Server {
                what: format!(
                    "the {} postmaster exited during startup on port {} ({status})",
                    server.name, server.port
                ),
                log: server.log.clone(),
                tail: log_tail(&server.log, 0),
            });
        }
    }

    /// Polls `pg_isready` until the server accepts connections, exits or `deadline`.
    fn wait_accepting(&self, server: &Server, child: &mut Child, deadline: Instant) -> Startup {
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Startup::Exited(status),
                Ok(None) => {}
                Err(_) => return Startup::TimedOut,
            }
            let ready = Command::new(self.bin_dir.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &server.port.to_string()])
                .args(["-U", SUPERUSER, "-d", "postgres", "-t", "1"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            // Still ours: not another server that grabbed the port while ours failed.
            if ready && matches!(child.try_wait(), Ok(None)) {
                return Startup::Ready;
            }
            if Instant::now() >= deadline {
                return Startup::TimedOut;
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Waits until `pg_is_in_recovery()` is true on the replica.
    fn wait_in_recovery(&self, replica: &Server) -> Result<(), TestkitError> {
        let in_recovery = poll(STARTUP_TIMEOUT, || {
            let answer = self
                .psql(replica.port, "postgres", "SELECT pg_is_in_recovery()")
                .ok()?;
            (answer == "t").then_some(())
        });
        in_recovery.ok_or_else(|| {
            TestkitError::server(
                format!(
                    "the replica on port {} is not in recovery after {STARTUP_TIMEOUT:?}",
                    replica.port
                ),
                &replica.log,
            )
        })
    }

    fn psql(&self, port: u16, database: &str, sql: &str) -> Result<String, TestkitError> {
        let mut psql = Command::new(self.bin_dir.join("psql"));
        psql.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-U", SUPERUSER, "-d", database, "-c", sql])
            .env("PGCONNECT_TIMEOUT", "5")
            .env_remove("PGOPTIONS");
        run(&mut psql)
    }

    /// Immediate shutdown (`pg_ctl stop -m immediate`; `-m fast`, a clean checkpointed
    /// stop, for a kept cluster), then SIGKILL if it lingers. Never panics: called from
    /// `Drop`.
    fn stop(&self, server: &mut Server) {
        let Some(mut child) = server.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            let mut pg_ctl = Command::new(self.bin_dir.join("pg_ctl"));
            pg_ctl
                .arg("-D")
                .arg(&server.data)
                .args(["-m", if self.kept { "fast" } else { "immediate" }])
                .args(["-w", "-t"])
                .arg(SHUTDOWN_TIMEOUT.as_secs().to_string())
                .arg("stop");
            self.as_server_user(&mut pg_ctl);
            let _ = run(&mut pg_ctl);
        }
        reap(&mut child, SHUTDOWN_TIMEOUT);
    }
}

/// The OS user to run the server programs as: `postgres` when we are root.
fn server_user() -> Result<Option<(u32, u32)>, TestkitError> {
    if !running_as_root() {
        return Ok(None);
    }
    os_user(SUPERUSER)
        .map(Some)
        .ok_or_else(|| TestkitError::Missing {
            what: format!(
                "the `{SUPERUSER}` OS user (PostgreSQL refuses to run as root, so the test \
                 kit runs it as `{SUPERUSER}`) does not exist"
            ),
            hint: format!("{INSTALL_HINT}; the package creates the user"),
        })
}

/// Hands `dir` to the server user, when there is one.
fn give_to(dir: &Path, run_as: Option<(u32, u32)>) -> Result<(), TestkitError> {
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))
            .map_err(|e| TestkitError::io(format!("chown {}", dir.display()), e))?;
    }
    Ok(())
}

fn url(port: u16) -> String {
    format!("postgres://{SUPERUSER}@127.0.0.1:{port}/{DATABASE}")
}

fn no_replica() -> TestkitError {
    TestkitError::Usage(
        "this PostgresCluster has no replica: start it with PostgresCluster::start_with_replica"
            .to_owned(),
    )
}

/// The first directory holding all of [`REQUIRED`]: `$TESTKIT_PG_BINDIR`,
/// `pg_config --bindir`, `/usr/lib/postgresql/*/bin` (newest version first), `PATH`.
fn locate_bin_dir() -> Result<PathBuf, TestkitError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("TESTKIT_PG_BINDIR") {
        candidates.push(dir.into());
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        if output.status.success() {
            let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            candidates.push(dir.into());
        }
    }
    let mut versioned: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let version = e.file_name().to_str()?.parse().ok()?;
                    Some((version, e.path().join("bin")))
                })
                .collect()
        })
        .unwrap_or_default();
    versioned.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    candidates.extend(versioned.into_iter().map(|(_, dir)| dir));
    if let Some(initdb) = find_program("initdb", &[]) {
        if let Some(dir) = initdb.parent() {
            candidates.push(dir.to_path_buf());
        }
    }
    candidates
        .into_iter()
        .find(|dir| REQUIRED.iter().all(|name| is_executable(&dir.join(name))))
        .ok_or_else(|| TestkitError::Missing {
            what: format!(
                "PostgreSQL server binaries ({}) not found in $TESTKIT_PG_BINDIR, \
                 `pg_config --bindir`, /usr/lib/postgresql/*/bin or PATH",
                REQUIRED.join(", ")
            ),
            hint: INSTALL_HINT.to_owned(),
        })
}

/// `"16/B374D848"` → the 64-bit WAL position.
fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.trim().split_once('/')?;
    let high = u64::from_str_radix(high, 16).ok()?;
    let low = u64::from_str_radix(low, 16).ok()?;
    Some(high << 32 | low)
}

/// Whether a replica that replayed up to `replayed` has everything up to `target` (an
/// insert position). An insert position at the very start of a WAL page points past the
/// page header, while the end of the last record, which replay reports, is the page
/// boundary itself: that counts as caught up, or an idle primary would never be reached.
fn caught_up(replayed: u64, target: u64) -> bool {
    replayed >= target
        || (replayed.is_multiple_of(WAL_PAGE) && target - replayed <= WAL_LONG_PAGE_HEADER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_parse() {
        assert_eq!(parse_lsn("0/3000060"), Some(0x0300_0060));
        assert_eq!(parse_lsn("16/B374D848\n"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn(""), None);
        assert_eq!(parse_lsn("x/1"), None);
    }

    #[test]
    fn page_headers_do_not_count_as_lag() {
        assert!(caught_up(0x0300_0060, 0x0300_0060));
        assert!(caught_up(0x0300_0068, 0x0300_0060));
        assert!(!caught_up(0x0300_0058, 0x0300_0060));
        assert!(caught_up(0x0300_2000, 0x0300_2018));
        assert!(!caught_up(0x0300_1ff8, 0x0300_2018));
    }

    #[test]
    fn urls_name_the_payments_database() {
        assert_eq!(url(5555), "postgres://postgres@127.0.0.1:5555/payments");
    }
}
