//! Tests of `loadtest simnet` on the recorded pubnet ledgers: the re-chaining keeps every
//! ledger extractable, the real Stellar RPC client reads the simulator, the JSON has the
//! shape of recorded real RPC responses, and errors and fault knobs behave as documented.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use stellar_xdr::{GeneralizedTransactionSet, LedgerCloseMeta, Limits, ReadXdr, WriteXdr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use loadtest::simnet::{self, chain::header_entry, Faults, Simnet, SimnetConfig};

fn fixtures() -> PathBuf {
    shared::testkit::fixtures::dir()
}

fn pubnet_dir() -> PathBuf {
    shared::testkit::fixtures::path("ledgers/pubnet")
}

/// The recorded pubnet ledgers as read from disk, in file order.
fn recorded() -> &'static Vec<LedgerCloseMeta> {
    static RECORDED: OnceLock<Vec<LedgerCloseMeta>> = OnceLock::new();
    RECORDED.get_or_init(|| {
        let mut all = Vec::new();
        for file in shared::ledger_file::ledger_files_in(&pubnet_dir()).expect("list fixtures") {
            all.extend(shared::ledger_file::read_ledger_file(&file).expect("read fixture"));
        }
        assert_eq!(all.len(), 6, "expected the six recorded pubnet ledgers");
        all
    })
}

/// The recorded pubnet ledgers, re-chained from the lowest sequence.
fn chain() -> &'static Vec<LedgerCloseMeta> {
    static CHAIN: OnceLock<Vec<LedgerCloseMeta>> = OnceLock::new();
    CHAIN.get_or_init(|| simnet::load_chain(&pubnet_dir(), None).expect("load chain"))
}

fn seq(meta: &LedgerCloseMeta) -> u32 {
    header_entry(meta).header.ledger_seq
}

fn tx_set_previous_hash(meta: &LedgerCloseMeta) -> [u8; 32] {
    match meta {
        LedgerCloseMeta::V0(m) => m.tx_set.previous_ledger_hash.0,
        LedgerCloseMeta::V1(m) => match &m.tx_set {
            GeneralizedTransactionSet::V1(s) => s.previous_ledger_hash.0,
        },
        LedgerCloseMeta::V2(m) => match &m.tx_set {
            GeneralizedTransactionSet::V1(s) => s.previous_ledger_hash.0,
        },
    }
}

fn tx_count(meta: &LedgerCloseMeta) -> usize {
    match meta {
        LedgerCloseMeta::V0(m) => m.tx_processing.len(),
        LedgerCloseMeta::V1(m) => m.tx_processing.len(),
        LedgerCloseMeta::V2(m) => m.tx_processing.len(),
    }
}

async fn start(initially_closed: usize) -> Simnet {
    let mut config = SimnetConfig::new(chain().clone());
    config.initially_closed = initially_closed;
    Simnet::start(config).await.expect("start simnet")
}

/// A minimal HTTP/1.1 exchange, to see status codes and raw JSON.
async fn http(simnet: &Simnet, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(simnet.addr())
        .await
        .expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        simnet.addr(),
        body.len()
    );
    // A server refusing an oversized body may close before all of it is sent: the
    // answer is still there to read.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8(response).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, body.to_owned())
}

async fn rpc(simnet: &Simnet, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params});
    let (status, body) = http(simnet, "POST", "/", &body.to_string()).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("JSON body")
}

fn error_code(response: &Value) -> i64 {
    response["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("expected an error, got {response}"))
}

fn decode_meta(b64: &str) -> Result<LedgerCloseMeta, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("base64: {e}"))?;
    LedgerCloseMeta::from_xdr(bytes, Limits::none()).map_err(|e| format!("xdr: {e}"))
}

#[test]
fn rechain_links_every_ledger_and_keeps_payments() {
    let original = recorded();
    let chained = chain();
    let mut by_seq: Vec<&LedgerCloseMeta> = original.iter().collect();
    by_seq.sort_by_key(|l| seq(l));
    let first = seq(by_seq[0]);
    assert_eq!(first, 30_820_015);
    assert_eq!(chained.len(), original.len());

    let mut extractor = shared::Extractor::new(shared::Network::pubnet());
    for (i, (ledger, before)) in chained.iter().zip(&by_seq).enumerate() {
        let entry = header_entry(ledger);
        assert_eq!(entry.header.ledger_seq, first + i as u32);
        let header_xdr = entry.header.to_xdr(Limits::none()).expect("encode header");
        let hash: [u8; 32] = Sha256::digest(&header_xdr).into();
        assert_eq!(entry.hash.0, hash, "hash of ledger #{i}");
        if i == 0 {
            let own = &header_entry(before).header.previous_ledger_hash;
            assert_eq!(&entry.header.previous_ledger_hash, own);
        } else {
            let prev = header_entry(&chained[i - 1]).hash.0;
            assert_eq!(entry.header.previous_ledger_hash.0, prev);
            assert_eq!(tx_set_previous_hash(ledger), prev);
        }
        // Everything but the links and the hashes over them is untouched, and the
        // hashes verify as a real ledger's do.
        let old = header_entry(before);
        assert_eq!(
            entry.header.scp_value.close_time,
            old.header.scp_value.close_time
        );
        assert_eq!(
            entry.header.scp_value.upgrades,
            old.header.scp_value.upgrades
        );
        assert_eq!(
            entry.header.tx_set_result_hash,
            old.header.tx_set_result_hash
        );
        shared::extract::verify_ledger(ledger).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(entry.header.ledger_version, old.header.ledger_version);
        assert_eq!(tx_count(ledger), tx_count(before));

        let new_payments = extractor.extract(ledger).expect("extract re-chained");
        let old_payments = extractor.extract(before).expect("extract recorded");
        assert_eq!(
            new_payments.payments.len(),
            old_payments.payments.len(),
            "payments of ledger #{i}"
        );
    }
}

#[test]
fn rechain_sorts_drops_duplicates_and_renumbers() {
    let mut shuffled: Vec<LedgerCloseMeta> = recorded().iter().rev().cloned().collect();
    shuffled.push(recorded()[2].clone());
    let chained = simnet::rechain(shuffled, 1000).expect("rechain");
    let seqs: Vec<u32> = chained.iter().map(seq).collect();
    assert_eq!(seqs, (1000..1006).collect::<Vec<_>>());
    // Same content as the default re-chaining, apart from the numbering.
    for (a, b) in chained.iter().zip(chain()) {
        assert_eq!(tx_count(a), tx_count(b));
        assert_eq!(
            header_entry(a).header.scp_value.close_time,
            header_entry(b).header.scp_value.close_time
        );
    }
    assert!(simnet::rechain(recorded().clone(), u32::MAX - 2).is_err());
}

#[test]
fn load_chain_reads_other_formats() {
    let early = simnet::load_chain(&fixtures().join("ledgers/pubnet-early"), Some(2))
        .expect("base64 lines");
    assert_eq!(
        early.iter().map(seq).collect::<Vec<_>>(),
        vec![2, 3, 4, 5, 6]
    );
    let lake = simnet::load_chain(&fixtures().join("datalake/pubnet"), None).expect("data lake");
    assert_eq!(lake.iter().map(seq).collect::<Vec<_>>(), vec![53_312_000]);
    assert!(simnet::load_chain(&fixtures().join("rpc"), None).is_err());
}

#[tokio::test]
async fn start_streamed_serves_the_chain_then_the_streamed_ledgers() {
    let all = chain().clone();
    let head = &all[..2];
    let mut config = SimnetConfig::new(head.to_vec());
    config.initially_closed = all.len();
    let sim = Simnet::start_streamed(config, chain()[2..].iter().cloned())
        .await
        .expect("start");
    assert_eq!(sim.total(), all.len());
    let page = rpc(
        &sim,
        "getLedgers",
        json!({"startLedger": seq(&all[0]), "pagination": {"limit": 10}}),
    )
    .await;
    let served = page["result"]["ledgers"].as_array().expect("ledgers");
    assert_eq!(served.len(), all.len());
    for (ledger, expected) in served.iter().zip(&all) {
        let meta =
            decode_meta(ledger["metadataXdr"].as_str().expect("metadataXdr")).expect("decodes");
        assert_eq!(
            meta.to_xdr(Limits::none()).expect("encode"),
            expected.to_xdr(Limits::none()).expect("encode")
        );
    }
    sim.shutdown().await;

    // Nothing at all, or a gap where the stream joins the chain, is refused as by `start`.
    let empty = Simnet::start_streamed(SimnetConfig::new(Vec::new()), std::iter::empty()).await;
    assert!(empty.is_err());
    let gapped = Simnet::start_streamed(
        SimnetConfig::new(head.to_vec()),
        chain()[3..].iter().cloned(),
    )
    .await;
    assert!(gapped.is_err());
}

#[tokio::test]
async fn start_rejects_empty_and_gapped_chains() {
    assert!(Simnet::start(SimnetConfig::new(Vec::new())).await.is_err());
    let mut gapped = chain().clone();
    gapped.remove(2);
    assert!(Simnet::start(SimnetConfig::new(gapped)).await.is_err());
}

#[tokio::test]
async fn stellar_rpc_client_reads_the_simulator() {
    use stellar_rpc_client::LedgerStart;

    let simnet = start(4).await;
    let chain = chain();
    let first = seq(&chain[0]);
    let client = stellar_rpc_client::Client::new(&simnet.url()).expect("client");

    let network = client.get_network().await.expect("getNetwork");
    assert_eq!(network.passphrase, shared::network::PUBNET_PASSPHRASE);
    assert_eq!(
        network.protocol_version,
        header_entry(&chain[3]).header.ledger_version
    );

    let latest = client.get_latest_ledger().await.expect("getLatestLedger");
    assert_eq!(latest.sequence, first + 3);
    assert_eq!(latest.id, hex::encode(header_entry(&chain[3]).hash.0));

    let health = client.get_health().await.expect("getHealth");
    assert_eq!(health.status, "healthy");
    assert_eq!(
        (health.oldest_ledger, health.latest_ledger),
        (first, first + 3)
    );

    // Follow cursors with a small page: every closed ledger once, in order.
    let mut seen = Vec::new();
    let mut page = client
        .get_ledgers(LedgerStart::Ledger(first), Some(3), None)
        .await
        .expect("first page");
    loop {
        assert_eq!(page.latest_ledger, simnet.latest());
        assert_eq!(page.oldest_ledger, first);
        for ledger in &page.ledgers {
            let index = (ledger.sequence - first) as usize;
            let meta = decode_meta(&ledger.metadata_xdr).expect("metadataXdr decodes");
            assert_eq!(&meta, &chain[index], "ledger {}", ledger.sequence);
            assert_eq!(ledger.hash, hex::encode(header_entry(&meta).hash.0));
            seen.push(ledger.sequence);
        }
        assert_eq!(
            page.cursor,
            seen.last().expect("non-empty page").to_string()
        );
        if page.cursor == simnet.latest().to_string() {
            // Real RPC answers a cursor at the tip with an error: wait for a close.
            assert!(client
                .get_ledgers(LedgerStart::Cursor(page.cursor.clone()), Some(3), None)
                .await
                .is_err());
            if simnet.close_next().is_none() {
                break;
            }
        }
        page = client
            .get_ledgers(LedgerStart::Cursor(page.cursor.clone()), Some(3), None)
            .await
            .expect("next page");
    }
    let expected: Vec<u32> = (first..first + chain.len() as u32).collect();
    assert_eq!(seen, expected);
    simnet.shutdown().await;
}

/// Same keys and JSON types, recursively (values are not compared).
fn assert_same_shape(ours: &Value, recorded: &Value, path: &str) {
    match (ours, recorded) {
        (Value::Object(a), Value::Object(b)) => {
            let mut ka: Vec<&String> = a.keys().collect();
            let mut kb: Vec<&String> = b.keys().collect();
            ka.sort();
            kb.sort();
            assert_eq!(ka, kb, "keys at {path}");
            for key in ka {
                assert_same_shape(&a[key], &b[key], &format!("{path}.{key}"));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if let (Some(x), Some(y)) = (a.first(), b.first()) {
                assert_same_shape(x, y, &format!("{path}[0]"));
            }
        }
        (Value::Number(a), Value::Number(b)) => {
            assert_eq!(a.is_f64(), b.is_f64(), "number kind at {path}");
        }
        (a, b) => assert_eq!(
            std::mem::discriminant(a),
            std::mem::discriminant(b),
            "type at {path}: {a} vs {b}"
        ),
    }
}

fn recorded_rpc(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join("rpc").join(name)).expect("rpc fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

#[tokio::test]
async fn wire_format_matches_recorded_rpc_responses() {
    let simnet = start(3).await;
    let first = simnet.oldest();

    let ours = rpc(
        &simnet,
        "getLedgers",
        json!({"startLedger": first, "pagination": {"limit": 2}}),
    )
    .await;
    assert_same_shape(&ours, &recorded_rpc("getLedgers-testnet-848581.json"), "$");
    let header = base64::engine::general_purpose::STANDARD
        .decode(
            ours["result"]["ledgers"][0]["headerXdr"]
                .as_str()
                .expect("headerXdr"),
        )
        .expect("base64");
    stellar_xdr::LedgerHeaderHistoryEntry::from_xdr(header, Limits::none())
        .expect("getLedgers headerXdr is a LedgerHeaderHistoryEntry");

    let ours = rpc(&simnet, "getLatestLedger", Value::Null).await;
    assert_same_shape(
        &ours,
        &recorded_rpc("getLatestLedger-testnet-1283415.json"),
        "$",
    );
    let header = base64::engine::general_purpose::STANDARD
        .decode(ours["result"]["headerXdr"].as_str().expect("headerXdr"))
        .expect("base64");
    let header = stellar_xdr::LedgerHeader::from_xdr(header, Limits::none())
        .expect("getLatestLedger headerXdr is a bare LedgerHeader");
    assert_eq!(header.ledger_seq, simnet.latest());
    simnet.shutdown().await;
}

#[tokio::test]
async fn errors_follow_real_rpc() {
    let simnet = start(2).await;
    let (first, latest) = (simnet.oldest(), simnet.latest());

    let beyond = rpc(&simnet, "getLedgers", json!({"startLedger": latest + 1})).await;
    assert_eq!(error_code(&beyond), -32600);
    let message = beyond["error"]["message"].as_str().expect("message");
    assert!(
        message.contains(&format!(
            "must be between the oldest ledger: {first} and the latest ledger: {latest}"
        )),
        "{message}"
    );
    let too_many = rpc(
        &simnet,
        "getLedgers",
        json!({"startLedger": first, "pagination": {"limit": 201}}),
    )
    .await;
    assert_eq!(error_code(&too_many), -32600);
    let both = rpc(
        &simnet,
        "getLedgers",
        json!({"startLedger": first, "pagination": {"cursor": "5"}}),
    )
    .await;
    assert_eq!(error_code(&both), -32600);
    let bad_cursor = rpc(
        &simnet,
        "getLedgers",
        json!({"pagination": {"cursor": "abc"}}),
    )
    .await;
    assert_eq!(error_code(&bad_cursor), -32602);
    let bad_params = rpc(&simnet, "getLedgers", json!({"startLedger": "x"})).await;
    assert_eq!(error_code(&bad_params), -32602);
    let bad_format = rpc(
        &simnet,
        "getLedgers",
        json!({"startLedger": first, "xdrFormat": "xml"}),
    )
    .await;
    assert_eq!(error_code(&bad_format), -32600);
    let unknown = rpc(&simnet, "getTransactionz", json!({})).await;
    assert_eq!(error_code(&unknown), -32601);
    assert_eq!(unknown["id"], 7);

    let (status, body) = http(&simnet, "POST", "/", "{not json").await;
    assert_eq!(status, 200);
    let parsed: Value = serde_json::from_str(&body).expect("JSON error");
    assert_eq!(error_code(&parsed), -32700);

    let (status, _) = http(&simnet, "GET", "/", "").await;
    assert_eq!(status, 405);
    let huge = format!("\"{}\"", "x".repeat(simnet::MAX_REQUEST_BYTES + 10));
    let (status, _) = http(&simnet, "POST", "/", &huge).await;
    assert_eq!(status, 413);

    // Batches and notifications; any path works.
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"getHealth"},
                    {"jsonrpc":"2.0","method":"getHealth"},
                    {"jsonrpc":"2.0","id":"b","method":"nope"}]"#;
    let (status, body) = http(&simnet, "POST", "/rpc", batch).await;
    assert_eq!(status, 200);
    let answers: Value = serde_json::from_str(&body).expect("batch JSON");
    assert_eq!(answers.as_array().map(Vec::len), Some(2));
    assert_eq!(answers[0]["result"]["status"], "healthy");
    assert_eq!(error_code(&answers[1]), -32601);
    let (status, _) = http(
        &simnet,
        "POST",
        "/",
        r#"{"jsonrpc":"2.0","method":"getHealth"}"#,
    )
    .await;
    assert_eq!(status, 204);
    simnet.shutdown().await;
}

#[tokio::test]
async fn only_closed_ledgers_are_served_and_closing_advances() {
    let simnet = start(2).await;
    let first = simnet.oldest();
    assert_eq!(simnet.latest(), first + 1);

    let not_closed = rpc(&simnet, "getLedgers", json!({"startLedger": first + 2})).await;
    assert_eq!(error_code(&not_closed), -32600);
    let page = rpc(
        &simnet,
        "getLedgers",
        json!({"startLedger": first, "pagination": {"limit": 200}}),
    )
    .await;
    let sequences: Vec<u64> = page["result"]["ledgers"]
        .as_array()
        .expect("ledgers")
        .iter()
        .filter_map(|l| l["sequence"].as_u64())
        .collect();
    assert_eq!(sequences, vec![u64::from(first), u64::from(first) + 1]);
    assert_eq!(page["result"]["cursor"], (first + 1).to_string());
    // Default page size is 50: still only the closed ones.
    let page = rpc(&simnet, "getLedgers", json!({"startLedger": first})).await;
    assert_eq!(page["result"]["ledgers"].as_array().map(Vec::len), Some(2));

    assert_eq!(simnet.close_next(), Some(first + 2));
    assert_eq!(simnet.latest(), first + 2);
    let next = rpc(
        &simnet,
        "getLedgers",
        json!({"pagination": {"cursor": (first + 1).to_string()}}),
    )
    .await;
    assert_eq!(next["result"]["ledgers"][0]["sequence"], first + 2);

    let (status, body) = http(&simnet, "POST", "/admin/close", "").await;
    assert_eq!(status, 200);
    let closed: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(closed["closed"], first + 3);
    while simnet.close_next().is_some() {}
    assert_eq!(simnet.latest(), first + 5);
    assert_eq!(simnet.close_next(), None);

    let (_, body) = http(&simnet, "GET", "/admin/state", "").await;
    let state: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        state,
        json!({"latest": first + 5, "oldest": first, "total": 6, "closed": 6})
    );
    simnet.shutdown().await;
}

#[tokio::test]
async fn retention_moves_oldest() {
    let simnet = start(5).await;
    let first = simnet.oldest();
    simnet.set_faults(Faults {
        retention: Some(2),
        ..Faults::default()
    });
    assert_eq!(simnet.oldest(), first + 3);
    let health = rpc(&simnet, "getHealth", Value::Null).await;
    assert_eq!(health["result"]["oldestLedger"], first + 3);
    assert_eq!(health["result"]["ledgerRetentionWindow"], 2);
    let gone = rpc(&simnet, "getLedgers", json!({"startLedger": first})).await;
    assert_eq!(error_code(&gone), -32600);
    simnet.close_next();
    assert_eq!(simnet.oldest(), first + 4);

    // The same through the admin endpoint, which merges and validates.
    let (status, body) = http(&simnet, "POST", "/admin/faults", r#"{"retention": null}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(simnet.oldest(), first);
    let (status, _) = http(&simnet, "POST", "/admin/faults", r#"{"retention": 0}"#).await;
    assert_eq!(status, 400);
    let (status, _) = http(&simnet, "POST", "/admin/faults", r#"{"eror_rate": 1}"#).await;
    assert_eq!(status, 400);
    let (status, _) = http(&simnet, "POST", "/admin/faults", r#"{"retention": 3}"#).await;
    assert_eq!(status, 200);
    assert_eq!(simnet.oldest(), first + 3);
    simnet.shutdown().await;
}

#[tokio::test]
async fn error_rate_one_fails_every_request_alternately() {
    let simnet = start(1).await;
    simnet.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let (mut outages, mut internal) = (0, 0);
    for _ in 0..6 {
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"getHealth"}"#;
        match http(&simnet, "POST", "/", body).await {
            (503, _) => outages += 1,
            (200, body) => {
                let parsed: Value = serde_json::from_str(&body).expect("JSON");
                assert_eq!(error_code(&parsed), -32603);
                internal += 1;
            }
            (status, body) => panic!("unexpected {status}: {body}"),
        }
    }
    assert_eq!((outages, internal), (3, 3));
    let client = stellar_rpc_client::Client::new(&simnet.url()).expect("client");
    assert!(client.get_latest_ledger().await.is_err());
    assert!(client.get_network().await.is_err());
    // Admin endpoints are not subject to faults.
    let (status, _) = http(&simnet, "POST", "/admin/faults", r#"{"error_rate": 0}"#).await;
    assert_eq!(status, 200);
    assert!(client.get_latest_ledger().await.is_ok());
    simnet.shutdown().await;
}

#[tokio::test]
async fn truncate_rate_one_cuts_metadata() {
    let simnet = start(6).await;
    simnet.set_faults(Faults {
        truncate_rate: 1.0,
        ..Faults::default()
    });
    let page = rpc(
        &simnet,
        "getLedgers",
        json!({"startLedger": simnet.oldest(), "pagination": {"limit": 6}}),
    )
    .await;
    let ledgers = page["result"]["ledgers"].as_array().expect("ledgers");
    assert_eq!(ledgers.len(), 6);
    for ledger in ledgers {
        let meta = ledger["metadataXdr"].as_str().expect("metadataXdr");
        assert!(base64::engine::general_purpose::STANDARD
            .decode(meta)
            .is_ok());
        let error = decode_meta(meta).expect_err("truncated meta must not decode");
        assert!(error.starts_with("xdr"), "{error}");
    }
    simnet.set_faults(Faults::default());
    let page = rpc(
        &simnet,
        "getLedgers",
        json!({"startLedger": simnet.oldest(), "pagination": {"limit": 1}}),
    )
    .await;
    decode_meta(
        page["result"]["ledgers"][0]["metadataXdr"]
            .as_str()
            .expect("meta"),
    )
    .expect("whole meta decodes");
    simnet.shutdown().await;
}

#[tokio::test]
async fn ledgers_close_on_their_own_until_the_chain_ends() {
    let mut config = SimnetConfig::new(chain().clone());
    config.close_interval = Some(Duration::from_millis(20));
    let simnet = Simnet::start(config).await.expect("start");
    let first = simnet.oldest();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while simnet.latest() < first + 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ledgers stopped closing"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(simnet.latest(), first + 5);
    simnet.shutdown().await;
}

#[tokio::test]
async fn latency_delays_requests() {
    let simnet = start(1).await;
    simnet.set_faults(Faults {
        latency_ms: 150,
        ..Faults::default()
    });
    let started = std::time::Instant::now();
    let _ = rpc(&simnet, "getHealth", Value::Null).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    simnet.shutdown().await;
}

#[test]
fn pubnet_replicas_are_distinct_verified_ledgers_with_paired_results() {
    let replicas = simnet::pubnet_replica_chain(&fixtures(), 2_000_000, 3).expect("replicas");
    let template = simnet::chain::load_chain(&pubnet_dir(), None)
        .expect("chain")
        .into_iter()
        .find(|l| tx_count(l) == 541)
        .expect("ledger 51000294");
    let mut extractor = shared::Extractor::new(shared::Network::pubnet());
    let reference = extractor.extract(&template).expect("template extracts");
    let mut seen = std::collections::HashSet::new();
    for (i, replica) in replicas.iter().enumerate() {
        let entry = header_entry(replica);
        assert_eq!(entry.header.ledger_seq, 2_000_000 + i as u32);
        assert_eq!(
            entry.header.scp_value.close_time.0,
            header_entry(&template).header.scp_value.close_time.0 + 5 * i as u64
        );
        if i > 0 {
            assert_eq!(
                entry.header.previous_ledger_hash,
                header_entry(&replicas[i - 1]).hash
            );
        }
        // Header, transaction set and result set hashes all verify.
        shared::extract::verify_ledger(replica).unwrap_or_else(|e| panic!("{e}"));
        // Results stay paired with their (renamed) transactions: the extractor joins
        // them by hash and finds the template's payments, with fresh hashes.
        let payments = extractor.extract(replica).expect("replica extracts");
        assert_eq!(payments.stats.transactions, 541);
        assert_eq!(payments.payments.len(), reference.payments.len());
        for (new, old) in payments.payments.iter().zip(&reference.payments) {
            assert_eq!(new.kind, old.kind);
            assert_eq!(new.successful(), old.successful());
            assert_ne!(new.transaction.hash, old.transaction.hash);
            assert_eq!(
                new.transaction.inner_hash.is_some(),
                old.transaction.inner_hash.is_some()
            );
        }
        for tx in payments.payments.iter().map(|p| p.transaction.hash) {
            seen.insert((i, tx));
        }
    }
    // No transaction hash is shared between copies.
    let hashes: std::collections::HashSet<_> = seen.iter().map(|(_, h)| *h).collect();
    assert_eq!(hashes.len(), seen.len());
}
