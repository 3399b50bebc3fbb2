//! How connections end, as a client sees it: a kick arrives after whole packets even when the
//! client is megabytes behind; at shutdown every request the server has read is answered and
//! the socket closes without a reset and without a kick (libpitaya reconnects after a close,
//! and gives up after a kick).

use std::time::Duration;

use kiwano_protocol::message;
use kiwano_protocol::packet::PacketType;
use kiwano_protocol::RouteDictionary;
use kiwano_tests::*;
use serde_json::json;

/// Responses the laggard asks for and does not read: 80 × 200 kB = 16 MB, under the packet
/// limit (100) and the byte limit set below.
const BIG: usize = 200_000;
const COUNT: usize = 80;

async fn kick_when_behind(s: &TestServer, transport: Transport) {
    let mut laggard = s.client(transport).await;
    let uid = format!("laggard-{transport:?}");
    assert_eq!(&laggard.request("test.bind", uid.as_bytes()).await.unwrap().data[..], b"bound");
    let mut watcher = s.client(Transport::Tcp).await;
    let watcher_uid = format!("watcher-{transport:?}");
    watcher.request("test.bind", watcher_uid.as_bytes()).await.unwrap();
    for _ in 0..COUNT {
        laggard.send_request("test.big", BIG.to_string().as_bytes()).await.unwrap();
    }
    // Handled after the big ones: by then their responses are queued or on the wire.
    let done = json!({"route": "onDone", "body": "", "uids": [watcher_uid]});
    laggard.send_request("test.pushusers", done.to_string().as_bytes()).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(20), watcher.next_message()).await.expect("onDone").unwrap();
    assert_eq!(m.route, "onDone");
    assert_eq!(ok_json(&mut watcher, "test.kickusers", json!([uid])).await, json!([]));

    // Now the laggard reads: whole responses, then the kick, then the end of the stream.
    let mut responses = 0;
    let mut last = None;
    loop {
        let p = tokio::time::timeout(Duration::from_secs(20), laggard.recv_packet())
            .await
            .expect("the connection ends")
            .unwrap_or_else(|e| panic!("{transport:?}: after {responses} whole responses: {e}"));
        let Some(p) = p else { break };
        assert_ne!(last, Some(PacketType::Kick), "{transport:?}: a packet after the kick");
        if p.kind == PacketType::Data {
            let m = message::decode(&p.body, &RouteDictionary::default(), 1 << 20).unwrap();
            // Ids 2..=81 are the big ones (1 was the bind, 82 the push request).
            if m.id <= COUNT as u64 + 1 {
                assert_eq!(m.data.len(), BIG, "{transport:?}: response {}", m.id);
            }
            responses += 1;
        }
        last = Some(p.kind);
    }
    assert_eq!(last, Some(PacketType::Kick), "{transport:?}: the kick arrives after {responses} whole responses");
    assert!(responses < COUNT, "{transport:?}: the responses not started were dropped ({responses})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_follows_whole_packets_when_the_client_is_behind() {
    let s = TestServer::with(TestConfig { extra: "[session]\noutgoing_queue_bytes = 67108864\n[protocol]\ncompression = false\n".into(), ..Default::default() }).await;
    kick_when_behind(&s, Transport::Tcp).await;
    kick_when_behind(&s, Transport::Ws).await;
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_what_was_read_and_closes_without_reset_or_kick() {
    for transport in [Transport::Tcp, Transport::Ws] {
        // Calls on the instances' threads (a call deadline past the heartbeat interval): the
        // connection reads all five requests at once, while the first runs.
        let s = TestServer::with(TestConfig { testbed: "instances = 2\ncall_timeout = \"60s\"".into(), ..Default::default() }).await;
        let mut c = s.client(transport).await;
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(c.send_request("test.spin", b"300000").await.unwrap());
        }
        let first = c.response(ids[0]).await.unwrap();
        assert!(!first.error);
        let stopping = tokio::spawn(s.server.shutdown());
        // Sent while the server drains: never read, so never answered; they must not turn the
        // close into a reset.
        for _ in 0..3 {
            let _ = c.send_request("test.echo", b"late").await;
        }
        let mut answered = vec![ids[0]];
        let end = loop {
            match c.recv_packet().await {
                Ok(Some(p)) if p.kind == PacketType::Data => {
                    let m = message::decode(&p.body, &RouteDictionary::default(), 1 << 20).unwrap();
                    assert!(!m.error, "{transport:?}: {:?}", String::from_utf8_lossy(&m.data));
                    answered.push(m.id);
                }
                Ok(Some(p)) if p.kind == PacketType::Heartbeat => {}
                other => break other.map(|p| p.map(|p| p.kind)),
            }
        };
        assert!(matches!(end, Ok(None)), "{transport:?}: the connection ended with {end:?}, not a clean close");
        assert_eq!(answered.get(..5), Some(&ids[..]), "{transport:?}: every request read before shutdown is answered, in order (answered {answered:?})");
        drop(c);
        stopping.await.unwrap();
    }
}
