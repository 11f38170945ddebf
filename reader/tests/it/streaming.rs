//! Server-sent events: records from a cursor, new ledgers as they land, resumption with
//! Last-Event-ID, per-pod stream bounds, and streams ending at shutdown.

use std::time::Duration;

use crate::support::{ids, TestReader, World};
use futures_util::StreamExt;
use serde_json::Value;

/// Reads server-sent events from a response.
struct Events {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

#[derive(Debug)]
struct Event {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

impl Events {
    fn new(response: reqwest::Response) -> Self {
        Self {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next event (comments and keep-alives skipped); None when the stream ends.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Event {
                    id: None,
                    event: None,
                    data: String::new(),
                };
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().to_owned());
                        any = true;
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.event = Some(v.trim().to_owned());
                        any = true;
                    } else if let Some(v) = line.strip_prefix("data:") {
                        event.data.push_str(v.trim_start());
                        any = true;
                    }
                }
                if any && (event.id.is_some() || event.event.is_some() || !event.data.is_empty()) {
                    return Some(event);
                }
                continue;
            }
            match tokio::time::timeout(Duration::from_secs(20), self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(_) => return None,
                Err(_) => panic!("no event within 20 s"),
            }
        }
    }

    /// The next `n` record events' JSON.
    async fn records(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        while out.len() < n {
            let e = self.next().await.expect("stream still open");
            if e.event.as_deref() == Some("open") {
                continue;
            }
            let v: Value = serde_json::from_str(&e.data).expect("record json");
            assert_eq!(e.id.as_deref(), v["paging_token"].as_str());
            out.push(v);
        }
        out
    }
}

async fn open(reader: &TestReader, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut all = vec![("accept", "text/event-stream")];
    all.extend_from_slice(headers);
    reader.get_with(path, &all).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_follow_the_chain_and_resume() {
    let world = World::start(8, false).await;
    world.wait_replica();
    let reader = TestReader::over(&world, &["--max-streams", "2"]).await;
    let successful: Vec<_> = world
        .records_through(world.ledgers.last().expect("ledgers").ledger.sequence)
        .into_iter()
        .filter(|r| r.successful())
        .collect();
    let through = |tip: u32| successful.iter().filter(|r| r.id.ledger_seq <= tip).count();
    let start = successful[4].id.to_i64();

    let response = open(&reader, &format!("/payments?cursor={start}"), &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    assert_eq!(
        response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-cache")
    );
    let mut events = Events::new(response);
    let first = events.next().await.expect("open event");
    assert_eq!(first.event.as_deref(), Some("open"));
    let tip = world.latest();
    let have = events.records(through(tip) - 5).await;
    let want: Vec<String> = successful[5..through(tip)]
        .iter()
        .map(|r| r.id.to_string())
        .collect();
    assert_eq!(ids(&have), want);
    assert_eq!(
        have[0],
        shared::horizon::payment_json(successful[5], &reader.links(), false)
    );

    // New ledgers arrive on the open stream.
    let mut new_tip = tip;
    while through(new_tip) == through(tip) {
        new_tip = world.close_next().await;
    }
    let more = events.records(through(new_tip) - through(tip)).await;
    let want: Vec<String> = successful[through(tip)..through(new_tip)]
        .iter()
        .map(|r| r.id.to_string())
        .collect();
    assert_eq!(ids(&more), want);

    // Reconnecting with Last-Event-ID resumes right after it (over `cursor`).
    let resume_after = successful[10].id.to_string();
    let response = open(
        &reader,
        "/payments?cursor=0",
        &[("last-event-id", &resume_after)],
    )
    .await;
    let mut resumed = Events::new(response);
    let again = resumed.records(3).await;
    assert_eq!(
        ids(&again),
        successful[11..14]
            .iter()
            .map(|r| r.id.to_string())
            .collect::<Vec<_>>()
    );

    // Two streams are open: a third is refused with a problem document.
    let refused = open(&reader, "/payments?cursor=now", &[]).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    drop(resumed);
    // The slot is released once the server notices the closed connection.
    let mut reopened = false;
    for _ in 0..100 {
        let r = open(&reader, "/payments?cursor=now", &[]).await;
        if r.status() == 200 {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reopened, "a closed stream frees its slot");

    // Shutdown ends open streams.
    reader.stop().await;
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while events.next().await.is_some() {}
    })
    .await;
    assert!(drained.is_ok(), "the stream ended with the server");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_streams_list_only_the_account() {
    let world = World::start(12, false).await;
    world.wait_replica();
    let reader = TestReader::over(&world, &[]).await;
    let records = world.records_through(world.latest());
    let account = records
        .iter()
        .filter(|r| r.successful())
        .flat_map(|r| r.participants())
        .map(|p| p.address.to_strkey())
        .next()
        .expect("an account");
    let theirs: Vec<String> = records
        .iter()
        .filter(|r| {
            r.successful()
                && r.participants()
                    .iter()
                    .any(|p| p.address.to_strkey() == account)
        })
        .map(|r| r.id.to_string())
        .collect();
    let response = open(&reader, &format!("/accounts/{account}/payments"), &[]).await;
    let mut events = Events::new(response);
    let got = events.records(theirs.len()).await;
    assert_eq!(ids(&got), theirs);
    reader.stop().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_client_that_stopped_reading() {
    use tokio::io::AsyncWriteExt;

    let world = World::start(12, false).await;
    world.wait_replica();
    let reader = TestReader::over(&world, &["--shutdown-grace-ms", "2000"]).await;
    let address = reader.running.as_ref().expect("running").address;
    // A client with a tiny receive window that asks for every record with its
    // transaction, then never reads.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(2048).expect("rcvbuf");
    let mut stalled = socket.connect(address).await.expect("connect");
    stalled
        .write_all(
            b"GET /payments?include_failed=true&join=transactions HTTP/1.1\r\n\
              Host: reader.test\r\nAccept: text/event-stream\r\n\r\n",
        )
        .await
        .expect("request");
    // Let the stream fill every buffer on the way.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stopped = tokio::time::timeout(Duration::from_secs(30), reader.stop()).await;
    assert!(
        stopped.is_ok(),
        "shutdown waited on a stalled stream client"
    );
    drop(stalled);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_share_one_query_per_new_ledger() {
    let world = World::start(8, false).await;
    world.wait_replica();
    let reader = TestReader::over(&world, &[]).await;
    let streams = 5;
    let mut open_streams = Vec::new();
    for _ in 0..streams {
        let mut events = Events::new(open(&reader, "/payments?cursor=now", &[]).await);
        let first = events.next().await.expect("open event");
        assert_eq!(first.event.as_deref(), Some("open"));
        open_streams.push(events);
    }
    // Let every stream make its first (empty) read at this tip.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = reader.db_queries();
    let tip = world.close_next().await;
    world.wait_replica();
    let want: Vec<String> = world.ledgers[(tip - crate::support::FIRST) as usize]
        .payments
        .iter()
        .filter(|p| p.successful())
        .map(|p| p.id.to_string())
        .collect();
    assert!(!want.is_empty(), "the new ledger holds payments");
    for events in &mut open_streams {
        let got = events.records(want.len()).await;
        assert_eq!(ids(&got), want);
    }
    let queries = reader.db_queries() - before;
    // One query per page of the new ledger (and perhaps one more after it), for all
    // the streams together; one per stream would be `streams` times that.
    let pages = (want.len() as u64 / 200) + 1;
    assert!(
        queries <= pages + 1,
        "{queries} queries for {streams} streams over {pages} page(s)"
    );
    drop(open_streams);
    reader.stop().await;
    world.stop().await;
}
