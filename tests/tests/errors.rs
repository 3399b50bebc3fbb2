//! Every row of the routing and error table, asserted on what the client receives.

use std::time::Duration;

use kiwano_tests::*;

async fn error(c: &mut Client, route: &str, body: &[u8]) -> PitayaError {
    let r = c.request(route, body).await.unwrap();
    error_of(&r)
}

fn pe(code: &str, msg: &str) -> PitayaError {
    PitayaError::new(code, msg)
}

#[tokio::test]
async fn error_table_on_every_transport() {
    let s = TestServer::with(TestConfig {
        testbed: "instances = 2\ncall_timeout = \"300ms\"\nmemory_limit = 33554432\nmax_response = 4096".into(),
        ..Default::default()
    })
    .await;
    for t in TRANSPORTS {
        let mut c = s.client(t).await;
        // Route shape.
        assert_eq!(error(&mut c, "echo", b"").await, pe("PIT-400", "invalid route: echo"));
        assert_eq!(error(&mut c, "a.b.c.d", b"").await, pe("PIT-400", "invalid route: a.b.c.d"));
        assert_eq!(error(&mut c, "testbed..echo", b"").await, pe("PIT-400", "route field can not be empty: testbed..echo"));
        assert_eq!(error(&mut c, "test. ", b"").await, pe("PIT-400", "route field can not be empty: test. "));
        // Handler kinds.
        assert_eq!(
            error(&mut c, "test.notify", b"").await,
            pe("PIT-400", "tried to request a notify route: testbed.test.notify")
        );
        assert_eq!(error(&mut c, "test.nope", b"").await, pe("PIT-404", "pitaya/handler: testbed.test.nope not found"));
        assert_eq!(
            error(&mut c, "lobby.room.join", b"").await,
            pe("PIT-500", "no servers available of this type: lobby.room.join")
        );
        // Guest failures: a generic message, the cause only in the log.
        for route in ["test.trap", "test.loop", "test.oom"] {
            assert_eq!(error(&mut c, route, b"").await, pe("PIT-500", &format!("internal error handling testbed.{route}")));
            // The next call is served by a fresh instance.
            assert_eq!(&c.request("test.echo", route.as_bytes()).await.unwrap().data[..], route.as_bytes());
        }
        assert_eq!(error(&mut c, "test.big", b"5000").await, pe("PIT-500", "internal error handling testbed.test.big"));
        assert_eq!(c.request("test.big", b"4096").await.unwrap().data.len(), 4096);
        // Guest errors pass through; an empty code becomes PIT-000.
        let mut custom = pe("RH-001", "custom failure");
        custom.metadata.insert("failed".into(), "bind".into());
        custom.metadata.insert("route".into(), "test.error".into());
        assert_eq!(error(&mut c, "test.error", b"").await, custom);
        assert_eq!(error(&mut c, "test.errnocode", b"").await, pe("PIT-000", "no code"));
    }
    let logs = logs();
    for cause in [
        "guest trapped",
        "testbed trap requested",
        "guest call exceeded its 300ms deadline",
        "guest ran out of memory (limit 33554432 bytes)",
        "guest response of 5000 bytes exceeds the 4096-byte limit",
    ] {
        assert!(logs.contains(cause), "log lacks {cause:?}");
    }
}

#[tokio::test]
async fn error_bytes_are_exact_json() {
    let s = TestServer::with(TestConfig { extra: "[protocol]\ncompression = false".into(), ..Default::default() }).await;
    let mut c = s.client(Transport::Tcp).await;
    let r = c.request("test.error", b"").await.unwrap();
    assert!(r.error);
    assert_eq!(&r.data[..], br#"{"code":"RH-001","msg":"custom failure","metadata":{"failed":"bind","route":"test.error"}}"#);
    let r = c.request("test.errnocode", b"").await.unwrap();
    assert_eq!(&r.data[..], br#"{"code":"PIT-000","msg":"no code"}"#);
}

#[tokio::test]
async fn notify_is_never_answered_and_runs_request_handlers() {
    let s = TestServer::start().await;
    let mut c = s.client(Transport::Tcp).await;
    // Notify to a request handler: handled (the counter moves), nothing sent back.
    c.notify("test.incr", b"").await.unwrap();
    c.notify("test.incr", b"").await.unwrap();
    // Notifies that fail are not answered either.
    c.notify("test.nope", b"").await.unwrap();
    c.notify("nowhere.a.b", b"").await.unwrap();
    c.notify("test.trap", b"").await.unwrap();
    // A notify handler runs: it pushes.
    c.notify("test.notify", b"n1").await.unwrap();
    let push = tokio::time::timeout(Duration::from_secs(2), c.next_message()).await.unwrap().unwrap();
    assert_eq!((push.kind, push.route.as_str(), &push.data[..]), (MessageType::Push, "onNotify", &b"n1"[..]));
    let r = c.request("test.get", b"count").await.unwrap();
    assert_eq!(&r.data[..], b"2");
    // The request's response is the next message: nothing was sent for the notifies.
    let r = c.request("test.echo", b"last").await.unwrap();
    assert_eq!(&r.data[..], b"last");
    assert!(tokio::time::timeout(Duration::from_millis(200), c.next_message()).await.is_err());
}
