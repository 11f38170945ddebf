//! The edge of the local stack and of the tests: nginx (through the test kit) in front of
//! a blue and a green set of readers, with the behaviour every deployment shares from
//! `deploy/nginx/edge-locations.conf`, and the colour switch.
//!
//! What must hold: traffic goes to exactly one colour, named in `readers.conf`; a switch
//! first waits until every reader of the new colour is ready, then rewrites that file and
//! reloads nginx gracefully (requests in flight finish on the old workers, new ones go
//! to the new colour), and only then reports the old colour drained. A switch to a
//! colour that is not ready changes nothing.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use shared::testkit::NginxServer;

/// The edge's shared behaviour, as shipped for every deployment: server level.
pub const EDGE_LOCATIONS: &str = include_str!("../../deploy/nginx/edge-locations.conf");
/// The same: http level.
pub const EDGE_HTTP: &str = include_str!("../../deploy/nginx/edge-http.conf");

/// Worker processes of the local edge.
const WORKERS: usize = 2;

/// A reader colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Colour {
    /// Blue.
    Blue,
    /// Green.
    Green,
}

impl Colour {
    /// The other colour.
    pub fn other(self) -> Self {
        match self {
            Self::Blue => Self::Green,
            Self::Green => Self::Blue,
        }
    }

    /// `blue` or `green`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blue => "blue",
            Self::Green => "green",
        }
    }
}

impl fmt::Display for Colour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The readers of each colour.
#[derive(Clone, Debug)]
pub struct Colours {
    /// Blue readers' addresses.
    pub blue: Vec<SocketAddr>,
    /// Green readers' addresses.
    pub green: Vec<SocketAddr>,
}

impl Colours {
    /// The readers of `colour`.
    pub fn of(&self, colour: Colour) -> &[SocketAddr] {
        match colour {
            Colour::Blue => &self.blue,
            Colour::Green => &self.green,
        }
    }
}

/// How long a switch took, phase by phase.
#[derive(Clone, Copy, Debug)]
pub struct SwitchReport {
    /// The colour now live.
    pub to: Colour,
    /// Waiting for the new colour's readiness.
    pub ready_wait: Duration,
    /// Rewriting the upstream and reloading nginx.
    pub reload: Duration,
    /// Waiting for the old workers (and their requests) to finish.
    pub drain: Duration,
}

/// nginx in front of blue and green readers, one colour live.
#[derive(Debug)]
pub struct Edge {
    nginx: NginxServer,
    colours: Colours,
    live: Colour,
    client: reqwest::blocking::Client,
}

impl Edge {
    /// Starts the edge with `live` taking the traffic. Blocking (the test kit's calls).
    pub fn start(colours: Colours, live: Colour) -> anyhow::Result<Self> {
        Self::start_on(None, colours, live)
    }

    /// Like [`Self::start`], on `port` of 127.0.0.1 when given (else a free one).
    pub fn start_on(port: Option<u16>, colours: Colours, live: Colour) -> anyhow::Result<Self> {
        let upstream = upstream_conf(colours.of(live));
        let config = |port: u16, prefix: &Path| {
            // The included files are written before nginx checks the configuration.
            let _ = std::fs::write(prefix.join("readers.conf"), &upstream);
            let _ = std::fs::write(prefix.join("edge-locations.conf"), EDGE_LOCATIONS);
            let _ = std::fs::write(prefix.join("edge-http.conf"), EDGE_HTTP);
            nginx_conf(port, prefix)
        };
        let nginx = match port {
            Some(port) => NginxServer::start_on(port, config),
            None => NginxServer::start(config),
        }
        .context("starting the nginx edge")?;
        Ok(Self {
            nginx,
            colours,
            live,
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .context("an HTTP client")?,
        })
    }

    /// `http://127.0.0.1:PORT`: what users call.
    pub fn url(&self) -> String {
        self.nginx.url()
    }

    /// The colour taking traffic.
    pub fn live(&self) -> Colour {
        self.live
    }

    /// The readers of each colour.
    pub fn colours(&self) -> &Colours {
        &self.colours
    }

    /// Moves traffic to `to`: waits (up to `ready_timeout`) until each of its readers
    /// answers `/health/ready` with 200, switches the upstream with a graceful reload,
    /// then waits (up to `drain_timeout`) for the old workers to finish their requests.
    /// Blocking. Switching to the live colour re-checks it and reloads nothing.
    pub fn switch(
        &mut self,
        to: Colour,
        ready_timeout: Duration,
        drain_timeout: Duration,
    ) -> anyhow::Result<SwitchReport> {
        let started = Instant::now();
        for reader in self.colours.of(to) {
            wait_ready(&self.client, *reader, ready_timeout).with_context(|| {
                format!("the {to} reader {reader} is not ready: nothing switched")
            })?;
        }
        let ready_wait = started.elapsed();
        if to == self.live {
            return Ok(SwitchReport {
                to,
                ready_wait,
                reload: Duration::ZERO,
                drain: Duration::ZERO,
            });
        }
        let reloading = Instant::now();
        let old_generation = self
            .nginx
            .write_and_reload("readers.conf", &upstream_conf(self.colours.of(to)))
            .context("reloading the edge")?;
        self.live = to;
        let reload = reloading.elapsed();
        let draining = Instant::now();
        if !self.nginx.wait_exited(&old_generation, drain_timeout) {
            bail!(
                "traffic moved to {to}, but the old workers still hold requests after {drain_timeout:?}"
            );
        }
        Ok(SwitchReport {
            to,
            ready_wait,
            reload,
            drain: draining.elapsed(),
        })
    }
}

/// Polls a reader's `/health/ready` until it answers 200, or fails with the last answer.
pub fn wait_ready(
    client: &reqwest::blocking::Client,
    reader: SocketAddr,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match client.get(format!("http://{reader}/health/ready")).send() {
            Ok(answer) if answer.status().is_success() => return Ok(()),
            Ok(answer) => format!("status {}", answer.status()),
            Err(error) => error.to_string(),
        };
        if Instant::now() >= deadline {
            bail!("not ready after {timeout:?} (last: {last})");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The upstream block for a colour's readers.
pub fn upstream_conf(readers: &[SocketAddr]) -> String {
    let mut text =
        String::from("# Written by the colour switch: the live readers.\nupstream readers {\n");
    for reader in readers {
        text.push_str(&format!(
            "    server {reader} max_fails=1 fail_timeout=2s;\n"
        ));
    }
    text.push_str("    keepalive 32;\n}\n");
    text
}

/// The local edge's `nginx.conf`: the http block, the cache and the server that includes
/// the shared behaviour.
pub fn nginx_conf(port: u16, prefix: &Path) -> String {
    let user = NginxServer::worker_user_directive();
    let prefix = prefix.display();
    format!(
        "# Written by the local stack for its nginx edge.
{user}
worker_processes {WORKERS};
# Event streams hold a worker for as long as they are open: a reload does not wait for
# them longer than this.
worker_shutdown_timeout 10s;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_temp;
    proxy_temp_path {prefix}/proxy_temp;
    fastcgi_temp_path {prefix}/fastcgi_temp;
    uwsgi_temp_path {prefix}/uwsgi_temp;
    scgi_temp_path {prefix}/scgi_temp;
    proxy_cache_path {prefix}/cache levels=1:2 keys_zone=edge:16m max_size=512m inactive=10m use_temp_path=off;
    include {prefix}/edge-http.conf;
    include {prefix}/readers.conf;
    server {{
        listen 127.0.0.1:{port};
        include {prefix}/edge-locations.conf;
    }}
}}
"
    )
}
