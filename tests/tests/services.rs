//! Every host import exercised from the Rust test guest over real sockets: groups (lifecycle,
//! errors, TTL, broadcast past a stalled client), push and kick by uid, timers, RPC and remotes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kiwano_protocol::packet::PacketType;
use kiwano_tests::*;
use serde_json::{Value, json};

/// Tests that measure time run one at a time: the broadcast test moves 200 MB.
static TIMING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn bound(s: &TestServer, uid: &str) -> Client {
    let mut c = s.client(Transport::Tcp).await;
    let r = c.request("test.bind", uid.as_bytes()).await.unwrap();
    assert_eq!(&r.data[..], b"bound");
    c
}

fn g(op: &str, name: &str) -> Value {
    json!({"op": op, "name": name})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_lifecycle_and_every_error() {
    let s = TestServer::start().await;
    let mut c = s.client(Transport::Ws).await;
    let e = |code: &str, msg: &str| PitayaError::new(code, msg);
    assert_eq!(err_json(&mut c, "test.group", g("members", "room")).await, e("PIT-404", "group not found"));
    assert_eq!(ok_json(&mut c, "test.group", g("create", "room")).await, json!("ok"));
    assert_eq!(err_json(&mut c, "test.group", g("create", "room")).await, e("PIT-400", "group already exists"));
    for uid in ["ann", "bob", "cid"] {
        assert_eq!(ok_json(&mut c, "test.group", json!({"op": "add", "name": "room", "uid": uid})).await, json!("ok"));
    }
    let add_ann = json!({"op": "add", "name": "room", "uid": "ann"});
    assert_eq!(err_json(&mut c, "test.group", add_ann).await, e("PIT-400", "member already exists in group"));
    let add_empty = json!({"op": "add", "name": "room", "uid": ""});
    assert_eq!(err_json(&mut c, "test.group", add_empty).await, e("PIT-400", "empty uid"));
    assert_eq!(ok_json(&mut c, "test.group", g("members", "room")).await, json!(["ann", "bob", "cid"]));
    assert_eq!(ok_json(&mut c, "test.group", g("count", "room")).await, json!(3));
    assert_eq!(ok_json(&mut c, "test.group", json!({"op": "contains", "name": "room", "uid": "bob"})).await, json!(true));
    assert_eq!(ok_json(&mut c, "test.group", json!({"op": "remove", "name": "room", "uid": "bob"})).await, json!("ok"));
    assert_eq!(ok_json(&mut c, "test.group", json!({"op": "contains", "name": "room", "uid": "bob"})).await, json!(false));
    let remove_bob = json!({"op": "remove", "name": "room", "uid": "bob"});
    assert_eq!(err_json(&mut c, "test.group", remove_bob).await, e("PIT-404", "member not found in the group"));
    assert_eq!(err_json(&mut c, "test.group", g("renew", "room")).await, e("PIT-404", "memory group TTL not found"));
    assert_eq!(ok_json(&mut c, "test.group", g("remove_all", "room")).await, json!("ok"));
    assert_eq!(ok_json(&mut c, "test.group", g("count", "room")).await, json!(0));
    assert_eq!(ok_json(&mut c, "test.group", g("delete", "room")).await, json!("ok"));
    assert_eq!(err_json(&mut c, "test.group", g("delete", "room")).await, e("PIT-404", "group not found"));
    let bc = json!({"op": "broadcast", "name": "room", "route": "onX", "body": "x"});
    assert_eq!(err_json(&mut c, "test.group", bc).await, e("PIT-404", "group not found"));
}

/// A group's TTL over the wire, judged by measured times rather than sleeps: a group renewed
/// within its TTL is there, one left alone goes within TTL + a sweep, never before its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_ttl_expires_unless_renewed() {
    let _timing = TIMING.lock().await;
    const TTL: Duration = Duration::from_millis(1000);
    let s = TestServer::with(TestConfig { extra: "[groups]\nsweep_interval = \"50ms\"".into(), ..Default::default() }).await;
    let mut c = s.client(Transport::Tcp).await;
    // `renewed`: when the last renewal (or the creation) was sent; it took effect after that.
    let mut renewed = Instant::now();
    ok_json(&mut c, "test.group", json!({"op": "create", "name": "short", "ttl_ms": TTL.as_millis() as u64})).await;
    ok_json(&mut c, "test.group", g("create", "forever")).await;
    // Renewed for more than two TTLs: there throughout, whenever the renewal came within a TTL
    // of the previous one (which the measured times tell, however slow the machine).
    let start = Instant::now();
    while start.elapsed() < 2 * TTL + TTL / 2 {
        let sent = Instant::now();
        let r = c.request("test.group", g("renew", "short").to_string().as_bytes()).await.unwrap();
        let gap = renewed.elapsed();
        renewed = sent;
        if gap < TTL {
            assert!(!r.error, "renewed within {gap:?} of the previous renewal, yet gone");
        }
        let tick = Instant::now();
        while tick.elapsed() < TTL / 5 {
            ok_json(&mut c, "test.group", g("count", "forever")).await;
        }
    }
    // Left alone, it goes.
    let left = Instant::now();
    loop {
        let r = c.request("test.group", g("count", "short").to_string().as_bytes()).await.unwrap();
        if r.error {
            assert_eq!(error_of(&r), PitayaError::new("PIT-404", "group not found"));
            break;
        }
        assert!(left.elapsed() < TTL + Duration::from_secs(5), "not swept");
    }
    assert!(renewed.elapsed() >= TTL, "swept {:?} after its last renewal, before its TTL", renewed.elapsed());
    assert_eq!(ok_json(&mut c, "test.group", g("count", "forever")).await, json!(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_members_promptly_past_a_stalled_one() {
    let _timing = TIMING.lock().await;
    let s = TestServer::with(TestConfig {
        extra: "[protocol]\ncompression = false\n[session]\noutgoing_queue = 16".into(),
        ..Default::default()
    })
    .await;
    let mut sender = bound(&s, "sender").await;
    ok_json(&mut sender, "test.group", g("create", "hall")).await;
    let mut stalled = bound(&s, "stalled").await;
    ok_json(&mut stalled, "test.group", json!({"op": "add", "name": "hall", "uid": "stalled"})).await;
    let members = 20;
    let rounds = 40;
    let start = Instant::now();
    let mut readers = Vec::new();
    for i in 0..members {
        let uid = format!("m{i}");
        let mut c = bound(&s, &uid).await;
        ok_json(&mut c, "test.group", json!({"op": "add", "name": "hall", "uid": uid})).await;
        readers.push(tokio::spawn(async move {
            let mut arrivals = Vec::new();
            while arrivals.len() < rounds {
                let m = c.next_message().await.expect("push");
                assert_eq!(m.route, "onHall");
                arrivals.push(start.elapsed());
            }
            arrivals
        }));
    }
    let body = "b".repeat(256 << 10);
    let mut sent = Vec::new();
    for _ in 0..rounds {
        let cmd = json!({"op": "broadcast", "name": "hall", "route": "onHall", "body": body});
        sent.push(start.elapsed());
        ok_json(&mut sender, "test.group", cmd).await;
    }
    let mut worst = Duration::ZERO;
    for r in readers {
        let arrivals = tokio::time::timeout(Duration::from_secs(20), r).await.expect("members served").unwrap();
        for (a, s) in arrivals.iter().zip(&sent) {
            worst = worst.max(*a - *s);
        }
    }
    assert!(worst < Duration::from_secs(1), "slowest broadcast delivery {worst:?}");
    // The stalled member (10 MB unread) was disconnected rather than waited for.
    assert!(logs().contains("outgoing queue full"), "stalled member not disconnected");
    let got = expect_closed(&mut stalled, Duration::from_secs(5)).await;
    assert!(got.len() < rounds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_kick_by_uid() {
    let s = TestServer::start().await;
    let mut u1 = bound(&s, "u1").await;
    let mut u2 = bound(&s, "u2").await;
    let mut admin = s.client(Transport::Wss).await;
    let missed = ok_json(&mut admin, "test.pushusers", json!({"route": "onHello", "body": "{\"hi\":1}", "uids": ["u1", "u2", "ghost"]})).await;
    assert_eq!(missed, json!(["ghost"]));
    for c in [&mut u1, &mut u2] {
        let m = c.next_message().await.unwrap();
        assert_eq!((m.kind, m.route.as_str(), &m.data[..]), (MessageType::Push, "onHello", &br#"{"hi":1}"#[..]));
    }
    assert_eq!(ok_json(&mut admin, "test.kickusers", json!(["u2", "ghost"])).await, json!(["ghost"]));
    let got = expect_closed(&mut u2, Duration::from_secs(2)).await;
    assert!(got.iter().any(|p| p.kind == PacketType::Kick));
    assert_eq!(&u1.request("test.uid", b"").await.unwrap().data[..], b"u1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_fire_in_order_on_their_instance_and_cancelled_ones_never() {
    let _timing = TIMING.lock().await;
    let s = TestServer::with(TestConfig { testbed: "instances = 1".into(), ..Default::default() }).await;
    let mut c = bound(&s, "tim").await;
    // Set in one call, so their delays are exact relative to each other.
    let three = json!([{"ms": 90, "uid": "tim", "tag": "c"}, {"ms": 30, "uid": "tim", "tag": "a"}, {"ms": 60, "uid": "tim", "tag": "b"}]);
    ok_json(&mut c, "test.timers", three).await;
    let mut tags = Vec::new();
    for _ in 0..3 {
        let m = c.next_message().await.unwrap();
        assert_eq!(m.route, "onTimer");
        tags.push(String::from_utf8_lossy(&m.data).split('#').next().unwrap_or_default().to_owned());
    }
    assert_eq!(tags, ["a", "b", "c"]);

    // A timer that comes due while its instance runs a call fires after that call: the call
    // sets a 1 ms timer and spins 200 ms, so the tick waits for it however fast the machine.
    let id = c.send_request("test.timer", json!({"ms": 1, "uid": "tim", "tag": "late", "spin_ms": 200}).to_string().as_bytes()).await.unwrap();
    let first = c.next_message().await.unwrap();
    assert_eq!((first.kind, first.id), (MessageType::Response, id), "{:?}", String::from_utf8_lossy(&first.data));
    let second = c.next_message().await.unwrap();
    assert!(second.route == "onTimer" && second.data.starts_with(b"late#"), "{second:?}");

    // Cancelled timers never fire, even when their tick was already queued: this one comes due
    // during the call that then cancels it.
    let queued = json!({"ms": 1, "uid": "tim", "tag": "never", "spin_ms": 50, "cancel": true});
    let once = ok_json(&mut c, "test.timer", queued).await;
    assert_eq!(ok_json(&mut c, "test.cancel", once).await, json!(false), "already cancelled");
    let every = ok_json(&mut c, "test.timer", json!({"ms": 40, "every": true, "uid": "tim", "tag": "tick"})).await;
    for _ in 0..3 {
        let m = c.next_message().await.unwrap();
        assert!(m.data.starts_with(b"tick#"), "{:?}", m);
    }
    assert_eq!(ok_json(&mut c, "test.cancel", every).await, json!(true));
    // Ticks that fired before the cancel reached the instance came before its response.
    for m in c.take_queued() {
        assert!(m.data.starts_with(b"tick#"), "{m:?}");
    }
    // Were it still live, it would come due during these 200 ms on the instance and its push
    // would come before the next response: the next two messages are the two responses.
    let spin = c.send_request("test.spin", b"200000").await.unwrap();
    let echo = c.send_request("test.echo", b"after").await.unwrap();
    for want in [spin, echo] {
        let m = c.next_message().await.unwrap();
        assert_eq!((m.kind, m.id), (MessageType::Response, want), "a cancelled timer fired: {m:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_and_remotes() {
    let s = Arc::new(TestServer::start().await);
    let id = s.server.server_id("testbed").unwrap().to_owned();
    let mut c = s.client(Transport::Tcp).await;
    let rpc = |route: &str, body: &str, server: Option<&str>, timeout: Option<u64>| {
        json!({"route": route, "body": body, "server_id": server, "timeout_ms": timeout})
    };
    // A remote of this very server type, by server id; it runs on the remote pool.
    let r = ok_json(&mut c, "test.rpc", rpc("testbed.remote.add", r#"{"a":2,"b":40}"#, Some(&id), None)).await;
    assert_eq!(r, json!(r#"{"sum":42}"#));
    assert_eq!(ok_json(&mut c, "test.rpc", rpc("testbed.remote.whoami", "", Some(&id), None)).await, json!("remote instance 0"));
    // Errors.
    let e = err_json(&mut c, "test.rpc", rpc("lobby.svc.method", "", None, None)).await;
    assert_eq!(e, PitayaError::new("PIT-500", "no servers available of this type: lobby"));
    let e = err_json(&mut c, "test.rpc", rpc("testbed.remote.add", "{}", None, None)).await;
    assert_eq!(e.code, "PIT-000");
    assert!(e.msg.starts_with("you are making a rpc that may be processed locally"), "{}", e.msg);
    let mut want = PitayaError::new("RM-042", "remote refused");
    want.metadata.insert("why".into(), "test".into());
    assert_eq!(err_json(&mut c, "test.rpc", rpc("testbed.remote.fail", "", Some(&id), None)).await, want);
    let mut want = PitayaError::new("PIT-404", "route not found");
    want.metadata.insert("route".into(), "remote.nope".into());
    assert_eq!(err_json(&mut c, "test.rpc", rpc("testbed.remote.nope", "", Some(&id), None)).await, want);
    let e = err_json(&mut c, "test.rpc", rpc("testbed.remote.add", "", Some("other-server"), None)).await;
    assert_eq!(e, PitayaError::new("PIT-500", "server \"other-server\" not found"));
    let e = err_json(&mut c, "test.rpc", rpc("remote.add", "", Some(&id), None)).await;
    assert_eq!(e.code, "PIT-400");
    // A slow remote: the caller gets PIT-408 with Pitaya's metadata, and is not itself killed
    // by its call deadline while it waits.
    let start = Instant::now();
    let e = err_json(&mut c, "test.rpc", rpc("testbed.remote.slow", "400", Some(&id), Some(150))).await;
    assert!(start.elapsed() >= Duration::from_millis(150));
    assert_eq!((e.code.as_str(), e.msg.as_str()), ("PIT-408", "rpc client: request timeout"));
    assert_eq!(e.metadata.get("timeout").map(String::as_str), Some("150ms"));
    assert_eq!(e.metadata.get("route").map(String::as_str), Some("testbed.remote.slow"));
    assert_eq!(e.metadata.get("server").map(String::as_str), Some(id.as_str()));
    assert_eq!(&c.request("test.echo", b"still here").await.unwrap().data[..], b"still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waiting_on_an_rpc_still_ends_at_its_deadline() {
    let _timing = TIMING.lock().await;
    let s = TestServer::with(TestConfig { testbed: "instances = 1\ncall_timeout = \"300ms\"".into(), ..Default::default() }).await;
    let id = s.server.server_id("testbed").unwrap().to_owned();
    let mut c = s.client(Transport::Tcp).await;
    // Within the deadline: the remote spins 100 ms.
    let r = ok_json(&mut c, "test.rpc", json!({"route": "testbed.remote.slow", "body": "100", "server_id": id})).await;
    assert_eq!(r, json!("slow done"));
    // Past it: the caller's wait ends at its own 300 ms deadline (wall clock), as a call spinning
    // that long would, not at the RPC's 5 s timeout.
    let start = std::time::Instant::now();
    let e = err_json(&mut c, "test.rpc", json!({"route": "testbed.remote.slow", "body": "2000", "server_id": id})).await;
    assert_eq!((e.code.as_str(), e.msg.as_str()), ("PIT-500", "internal error handling testbed.test.rpc"));
    assert!(start.elapsed() < std::time::Duration::from_secs(2), "ended after {:?}", start.elapsed());
    assert!(logs().contains("guest call exceeded its 300ms deadline"));
}
