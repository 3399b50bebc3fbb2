//! Sessions as handlers see them: bind, data, handshake, address, push, kick, close, logs.

use std::time::Duration;

use kiwano_protocol::packet::PacketType;
use kiwano_tests::*;
use serde_json::json;

async fn text(c: &mut Client, route: &str, body: &str) -> String {
    let r = c.request(route, body.as_bytes()).await.unwrap();
    assert!(!r.error, "{route}: {}", String::from_utf8_lossy(&r.data));
    String::from_utf8_lossy(&r.data).into_owned()
}

#[tokio::test]
async fn bind_errors_and_uid() {
    let s = TestServer::start().await;
    let mut c = s.client(Transport::Tcp).await;
    assert_eq!(text(&mut c, "test.uid", "").await, "");
    let e = error_of(&c.request("test.bind", b"").await.unwrap());
    assert_eq!(e, PitayaError::new("PIT-400", "illegal uid: the uid is empty"));
    assert_eq!(text(&mut c, "test.bind", "alice").await, "bound");
    assert_eq!(text(&mut c, "test.uid", "").await, "alice");
    let e = error_of(&c.request("test.bind", b"bob").await.unwrap());
    assert_eq!(e, PitayaError::new("PIT-400", "session is already bound to an uid (\"alice\")"));
}

#[tokio::test]
async fn binding_a_held_uid_kicks_the_old_session_which_cannot_unbind_the_new() {
    let s = TestServer::start().await;
    let mut old = s.client(Transport::Ws).await;
    assert_eq!(text(&mut old, "test.bind", "carol").await, "bound");
    let old_id: u64 = text(&mut old, "test.sessionid", "").await.parse().unwrap();
    let mut new = s.client(Transport::Tcp).await;
    assert_eq!(text(&mut new, "test.bind", "carol").await, "bound");
    let new_id: u64 = text(&mut new, "test.sessionid", "").await.parse().unwrap();
    let got = expect_closed(&mut old, Duration::from_secs(2)).await;
    assert!(got.iter().any(|p| p.kind == PacketType::Kick), "old session kicked: {got:?}");
    // Once the old connection's close has run (its session forgotten), the new binding stands.
    eventually("the old session forgotten", Duration::from_secs(10), || s.server.sessions().get(old_id).is_none()).await;
    let holder = s.server.sessions().by_uid("carol").expect("carol stays bound");
    assert_eq!(holder.id(), new_id);
    assert_ne!(old_id, new_id);
    assert_eq!(text(&mut new, "test.uid", "").await, "carol");
    // A session that closes normally unbinds its uid.
    drop(new);
    eventually("carol unbound", Duration::from_secs(10), || s.server.sessions().by_uid("carol").is_none()).await;
}

#[tokio::test]
async fn session_data_get_set_and_whole_map() {
    let s = TestServer::start().await;
    let mut c = s.client(Transport::Tls).await;
    assert_eq!(text(&mut c, "test.data", "").await, r#"{"ipversion":"ipv4"}"#);
    assert_eq!(text(&mut c, "test.set", r#"room={"id":7,"name":"blue"}"#).await, "set");
    assert_eq!(text(&mut c, "test.get", "room").await, r#"{"id":7,"name":"blue"}"#);
    assert_eq!(text(&mut c, "test.get", "missing").await, "none");
    let e = error_of(&c.request("test.set", b"bad={").await.unwrap());
    assert_eq!(e.code, "PIT-400");
    assert!(e.msg.starts_with("session data value for \"bad\" is not JSON"), "{}", e.msg);
    assert_eq!(text(&mut c, "test.setdata", r#"{"a":1,"b":[true]}"#).await, "set");
    assert_eq!(text(&mut c, "test.data", "").await, r#"{"a":1,"b":[true]}"#);
    let e = error_of(&c.request("test.setdata", b"[1]").await.unwrap());
    assert_eq!(e, PitayaError::new("PIT-400", "session data must be a JSON object"));
}

#[tokio::test]
async fn handshake_and_remote_address_are_visible_to_handlers() {
    let s = TestServer::start().await;
    let mut c = s.raw(Transport::Tcp).await;
    let hs = json!({"sys": {"platform": "android", "libVersion": "4.6.3", "clientBuildNumber": "20", "clientVersion": "1.0.0"},
                    "user": {"name": "dave", "level": 3}});
    c.handshake(&hs).await.unwrap();
    let got: serde_json::Value = serde_json::from_str(&text(&mut c, "test.handshake", "").await).unwrap();
    assert_eq!(got, hs);
    let addr = text(&mut c, "test.addr", "").await;
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    assert_ne!(addr, s.addr(Transport::Tcp));
}

#[tokio::test]
async fn push_reaches_the_session_before_the_response() {
    let s = TestServer::start().await;
    for t in TRANSPORTS {
        let mut c = s.client(t).await;
        let id = c.send_request("test.push", br#"{"content":"hi"}"#).await.unwrap();
        let push = c.next_message().await.unwrap();
        assert_eq!((push.kind, push.route.as_str(), &push.data[..]), (MessageType::Push, "onPush", &br#"{"content":"hi"}"#[..]));
        let resp = c.next_message().await.unwrap();
        assert_eq!((resp.kind, resp.id, &resp.data[..]), (MessageType::Response, id, &b"pushed"[..]));
    }
}

#[tokio::test]
async fn a_client_that_does_not_read_is_disconnected() {
    let s = TestServer::with(TestConfig {
        extra: "[app]\nhttp = \"127.0.0.1:0\"\n[protocol]\ncompression = false\n[session]\noutgoing_queue = 4\nwrite_timeout = \"30s\"".into(),
        testbed: "instances = 2\nmax_response = 2000000".into(),
        metrics: true,
        ..Default::default()
    })
    .await;
    let mut slow = s.client(Transport::Tcp).await;
    let mut other = s.client(Transport::Tcp).await;
    // ~40 MB of responses that the client never reads: socket buffers fill, then the queue.
    for _ in 0..40 {
        slow.send_request("test.big", b"1000000").await.unwrap();
    }
    eventually("the slow client disconnected", Duration::from_secs(20), || {
        logs().contains("outgoing queue full: the client does not read its messages")
    })
    .await;
    // Its connection is closed at once, not after the 30 s write deadline.
    let mut got = 0usize;
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(p)) = slow.recv_packet().await {
            got += p.body.len();
        }
    })
    .await;
    assert!(drained.is_ok(), "slow client's connection still open");
    assert!(got < 40_000_000, "it did not receive everything ({got} bytes)");
    assert_eq!(&other.request("test.echo", b"fine").await.unwrap().data[..], b"fine");
    // Counted: the packet its full queue refused.
    let metrics = http_request(s.server.http_address().expect("http"), "GET", "/metrics").await.text();
    let dropped = |reason: &str| {
        let series = format!("kiwano_outgoing_dropped_total{{game=\"\",reason=\"{reason}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(&series)).and_then(|v| v.parse::<f64>().ok())
    };
    assert!(dropped("full").is_some_and(|n| n >= 1.0), "{metrics}");
    assert_eq!(dropped("too_large"), Some(0.0), "{metrics}");
}

#[tokio::test]
async fn guest_logs_and_output_are_tagged_and_session_close_reaches_the_guest() {
    let s = TestServer::start().await;
    let mut c = s.client(Transport::Tcp).await;
    let id = text(&mut c, "test.sessionid", "").await;
    c.request("test.log", b"marker-42").await.unwrap();
    let logs = logs();
    let line = logs.lines().find(|l| l.contains("guest says marker-42")).expect("guest log line");
    for tag in ["server_type=\"testbed\"", "route=\"test.log\"", &format!("session={id}")] {
        assert!(line.contains(tag), "{line} lacks {tag}");
    }
    assert!(logs.lines().any(|l| l.contains("[stdout] stdout says marker-42") && l.contains("route=\"test.log\"")));
    assert!(logs.lines().any(|l| l.contains("[stderr] stderr says marker-42")));
    drop(c);
    let want = format!("session {id} closed, uid None");
    eventually("on-session-close logged", Duration::from_secs(10), || kiwano_tests::logs().contains(&want)).await;
}

#[tokio::test]
async fn shutdown_finishes_in_flight_calls_and_calls_guest_shutdown() {
    let s = TestServer::start().await;
    let mut c = s.client(Transport::Tcp).await;
    // The spin is under way once the log line before it shows.
    c.send_request("test.log", b"before the spin").await.unwrap();
    let id = c.send_request("test.spin", b"300000").await.unwrap();
    eventually("the spin under way", Duration::from_secs(10), || logs().contains("guest says before the spin")).await;
    let TestServer { server, .. } = s;
    let stop = tokio::spawn(server.shutdown());
    let r = c.response(id).await.unwrap();
    assert_eq!(&r.data[..], b"300000");
    expect_closed(&mut c, Duration::from_secs(3)).await;
    tokio::time::timeout(Duration::from_secs(5), stop).await.unwrap().unwrap();
    assert!(logs().contains("testbed shutting down"));
}
