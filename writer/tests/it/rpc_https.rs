//! HTTPS to the RPC: the simulator serves `https://127.0.0.1:PORT` with a certificate
//! from a test CA, and a writer process told to trust that CA through `SSL_CERT_FILE`
//! (which the platform verifier reads on Linux instead of the system store) ingests
//! from it. A writer trusting another CA, or one reaching the RPC under a name its
//! certificate does not carry, refuses the connection, says why in `/health` and its
//! log, and stores nothing. Plain HTTP is what every other test uses.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{
    connect, create_database, cursor, extracted, fixture_chain, free_port, get_json, get_text,
    wait_for_cursor, writer_command, Reaped,
};
use loadtest::simnet::{Simnet, SimnetConfig, SimnetTls};
use shared::testkit::{PostgresCluster, TestCa};
use stellar_xdr::LedgerCloseMeta;

const FIRST: u32 = 1_000_000;

/// A simulator serving `chain` over HTTPS with `ca`'s server certificate.
async fn https_simnet(chain: Vec<LedgerCloseMeta>, closed: usize, ca: &TestCa) -> Simnet {
    let mut config = SimnetConfig::new(chain);
    config.initially_closed = closed;
    config.tls = Some(
        SimnetTls::from_pem(
            ca.server_cert_pem().as_bytes(),
            ca.server_key_pem().as_bytes(),
        )
        .expect("TLS identity"),
    );
    Simnet::start(config).await.expect("simnet starts")
}

/// `writer run` as a process trusting only the certificates in `trusted` (PEM), its
/// health on `port`, its log (warnings) in `log` when given.
fn spawn_trusting(
    database_url: &str,
    rpc_url: &str,
    port: u16,
    trusted: &std::path::Path,
    log: Option<&std::path::Path>,
) -> Reaped {
    let mut command = writer_command(database_url, rpc_url, &format!("127.0.0.1:{port}"), &[]);
    command
        .env("SSL_CERT_FILE", trusted)
        .env_remove("SSL_CERT_DIR");
    if let Some(log) = log {
        command.stderr(Stdio::from(std::fs::File::create(log).expect("log file")));
    }
    Reaped(command.spawn().expect("writer starts"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_ingests_over_https_trusting_the_ca_in_ssl_cert_file() {
    let cluster = PostgresCluster::start().expect("postgres");
    let url = cluster.primary_url();
    let ca = TestCa::for_names(&["127.0.0.1"]).expect("test CA");
    let chain = fixture_chain();
    let expected = extracted(&chain);
    let sim = https_simnet(chain, 4, &ca).await;
    assert!(sim.url().starts_with("https://127.0.0.1:"), "{}", sim.url());
    // The port speaks TLS only: a plain request gets no answer.
    let plain = get_text(&format!("http://{}/admin/state", sim.addr())).await;
    assert!(
        !matches!(plain, Some((200, _))),
        "answered in plain: {plain:?}"
    );

    let port = free_port();
    let writer = spawn_trusting(&url, &sim.url(), port, ca.ca_file(), None);
    wait_for_cursor(&url, FIRST + 3, Duration::from_secs(60)).await;
    // And it follows the chain as ledgers close.
    for _ in 0..2 {
        sim.close_next().expect("another ledger");
    }
    wait_for_cursor(&url, FIRST + 5, Duration::from_secs(30)).await;
    let health = get_json(&format!("http://127.0.0.1:{port}/health"))
        .await
        .expect("health");
    assert_eq!(health["role"], "active");
    assert_eq!(health["last_ledger"], FIRST + 5);
    drop(writer);

    let rows = connect(&url)
        .await
        .query("SELECT sequence, hash FROM ledgers ORDER BY sequence", &[])
        .await
        .expect("ledgers");
    assert_eq!(rows.len(), 6);
    for (row, ledger) in rows.iter().zip(&expected) {
        assert_eq!(row.get::<_, i32>(0) as u32, ledger.ledger.sequence);
        assert_eq!(row.get::<_, Vec<u8>>(1), ledger.ledger.hash.to_vec());
    }
    sim.shutdown().await;
}

/// Waits until the writer's `/health` reports an error containing `wanted`; returns it.
async fn reported_error(port: u16, wanted: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health = get_json(&format!("http://127.0.0.1:{port}/health")).await;
        let error = health
            .as_ref()
            .and_then(|h| h["last_error"].as_str())
            .map(str::to_owned);
        if let Some(error) = error.filter(|e| e.contains(wanted)) {
            return error;
        }
        assert!(
            Instant::now() < deadline,
            "no error naming {wanted:?}: {health:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_rpc_certificate_is_refused_by_name_and_nothing_is_stored() {
    let cluster = PostgresCluster::start().expect("postgres");
    let logs = tempfile::tempdir().expect("log dir");

    // A certificate from a CA the writer does not trust.
    let ca = TestCa::for_names(&["127.0.0.1"]).expect("test CA");
    let other = TestCa::new().expect("another CA");
    let sim = https_simnet(fixture_chain(), 4, &ca).await;
    let untrusted_url = create_database(&cluster.primary_url(), "untrusted").await;
    let untrusted_port = free_port();
    let untrusted_log = logs.path().join("untrusted.log");
    let untrusted = spawn_trusting(
        &untrusted_url,
        &sim.url(),
        untrusted_port,
        other.ca_file(),
        Some(untrusted_log.as_path()),
    );

    // A trusted CA, but the certificate names `localhost` and the URL `127.0.0.1`.
    let localhost_ca = TestCa::new().expect("localhost CA");
    let misnamed = https_simnet(fixture_chain(), 4, &localhost_ca).await;
    let misnamed_url = create_database(&cluster.primary_url(), "misnamed").await;
    let misnamed_port = free_port();
    let misnamed_writer = spawn_trusting(
        &misnamed_url,
        &misnamed.url(),
        misnamed_port,
        localhost_ca.ca_file(),
        None,
    );

    let error = reported_error(untrusted_port, "invalid peer certificate").await;
    assert!(
        error.starts_with("RPC unavailable") && error.contains("UnknownIssuer"),
        "{error}"
    );
    let error = reported_error(misnamed_port, "not valid for name \"127.0.0.1\"").await;
    assert!(error.starts_with("RPC unavailable"), "{error}");
    // The log says so too.
    let log = std::fs::read_to_string(&untrusted_log).expect("log");
    assert!(
        log.contains("invalid peer certificate") && log.contains("UnknownIssuer"),
        "{log}"
    );
    // Retried, never past the handshake: nothing stored.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for url in [&untrusted_url, &misnamed_url] {
        assert_eq!(cursor(url).await, None, "no cursor in {url}");
        let stored: i64 = connect(url)
            .await
            .query_one("SELECT count(*) FROM ledgers", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(stored, 0, "ledgers stored in {url}");
    }
    drop(untrusted);
    drop(misnamed_writer);
    sim.shutdown().await;
    misnamed.shutdown().await;
}
