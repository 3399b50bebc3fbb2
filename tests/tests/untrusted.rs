//! Untrusted mode (`servers.<type>.untrusted = true`): every call runs on a fresh instance, and
//! its host effects — session data, group changes, pushes to the session and to users, kicks,
//! timers — reach the world only when it returns. A call that traps, runs past its deadline or
//! out of memory leaves nothing behind; one that returns (its own error included) has its
//! effects applied in the order it made them, before its answer goes out.

use std::sync::atomic::Ordering;
use std::time::Duration;

use kiwano_tests::*;
use serde_json::{Value, json};

async fn server(untrusted: bool) -> TestServer {
    let mut keys = vec!["instances = 1", "call_timeout = \"400ms\"", "memory_limit = 33554432"];
    if untrusted {
        keys.push("untrusted = true");
    }
    TestServer::with(TestConfig { testbed: keys.join("\n"), ..Default::default() }).await
}

async fn bound(s: &TestServer, uid: &str) -> Client {
    let mut c = s.client(Transport::Tcp).await;
    assert_eq!(&c.request("testbed.test.bind", uid.as_bytes()).await.unwrap().data[..], b"bound");
    c
}

fn members(v: &Value) -> Value {
    v["members"].clone()
}

/// Everything `test.tx` can do, then the given ending.
fn all_effects(then: &str) -> Value {
    json!({"set": {"gold": 99}, "join": "room", "push": "to-me", "users": ["bob"], "timer_ms": 30, "then": then})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_traps_times_out_or_runs_out_of_memory_leaves_nothing_behind() {
    let s = server(true).await;
    let mut alice = bound(&s, "alice").await;
    let mut bob = bound(&s, "bob").await;
    let joined = ok_json(&mut bob, "testbed.test.tx", json!({"join": "room", "then": "ok"})).await;
    assert_eq!(members(&joined), json!(["bob"]));

    for ending in ["trap", "loop", "oom"] {
        let e = err_json(&mut alice, "testbed.test.tx", all_effects(ending)).await;
        assert_eq!((e.code.as_str(), e.msg.as_str()), ("PIT-500", "internal error handling testbed.test.tx"), "{ending}");
        // No push reached alice before her error answer (it would have been queued first)…
        assert!(alice.take_queued().is_empty(), "{ending}: alice got pushes");
        // …nor bob before the answer to his next request.
        assert_eq!(&bob.request("testbed.test.echo", b"ping").await.unwrap().data[..], b"ping");
        assert!(bob.take_queued().is_empty(), "{ending}: bob got pushes");
        // Session data and the group are as before the call.
        assert_eq!(&alice.request("testbed.test.get", b"gold").await.unwrap().data[..], b"none", "{ending}");
        let room = ok_json(&mut alice, "testbed.test.group", json!({"op": "members", "name": "room"})).await;
        assert_eq!(room, json!(["bob"]), "{ending}");
    }

    // The timers those calls set never fire: the first onTimer alice hears is from a call that
    // returned, set after them all with the same delay.
    let done = ok_json(&mut alice, "testbed.test.tx", json!({"timer_ms": 30, "then": "ok"})).await;
    assert_eq!(done, json!({"data": {"ipversion": "ipv4"}, "members": []}));
    let m = alice.next_message().await.unwrap();
    assert_eq!(m.route, "onTimer");
    assert!(String::from_utf8_lossy(&m.data).starts_with("tx#"), "{:?}", m.data);
    assert!(alice.take_queued().is_empty());

    let stats = s.server.pool("testbed").unwrap().stats();
    assert_eq!(stats.rebuilds.load(Ordering::Relaxed), 3, "one rebuild per failed call");
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_returns_applies_its_effects_in_order_and_reads_its_own_writes() {
    let s = server(true).await;
    let mut alice = bound(&s, "alice").await;
    let mut bob = bound(&s, "bob").await;
    ok_json(&mut bob, "testbed.test.tx", json!({"join": "room", "then": "ok"})).await;

    // The call sees its own writes: the data it set, itself in the group.
    let seen = ok_json(&mut alice, "testbed.test.tx", all_effects("ok")).await;
    assert_eq!(seen, json!({"data": {"gold": 99, "ipversion": "ipv4"}, "members": ["bob", "alice"]}));
    // Its push to alice came before its answer; its push to bob reached bob; its timer fires.
    let queued = alice.take_queued();
    assert_eq!(queued.iter().map(|m| (m.route.as_str(), &m.data[..])).collect::<Vec<_>>(), [("onTx", &b"to-me"[..])]);
    let m = bob.next_message().await.unwrap();
    assert_eq!((m.route.as_str(), &m.data[..]), ("onTxUsers", &b"hi"[..]));
    let m = alice.next_message().await.unwrap();
    assert_eq!(m.route, "onTimer");
    // And the world sees them.
    assert_eq!(&alice.request("testbed.test.get", b"gold").await.unwrap().data[..], b"99");
    let room = ok_json(&mut bob, "testbed.test.group", json!({"op": "members", "name": "room"})).await;
    assert_eq!(room, json!(["bob", "alice"]));

    // A call that returns its own error has returned: its effects stand.
    let e = err_json(&mut alice, "testbed.test.tx", json!({"set": {"gold": 5}, "push": "before-error", "then": "error"})).await;
    assert_eq!((e.code.as_str(), e.msg.as_str()), ("RH-TX", "refused after its effects"));
    assert_eq!(alice.take_queued().iter().map(|m| &m.data[..]).collect::<Vec<_>>(), [&b"before-error"[..]]);
    assert_eq!(&alice.request("testbed.test.get", b"gold").await.unwrap().data[..], b"5");

    // A host error comes at once, as the store would give it: alice is in the room already.
    let e = err_json(&mut alice, "testbed.test.tx", json!({"set": {"gold": 7}, "join": "room", "then": "ok"})).await;
    assert_eq!((e.code.as_str(), e.msg.as_str()), ("PIT-400", "member already exists in group"));
    // The handler passed the error on: the call returned, its `set` before the error stands.
    assert_eq!(&alice.request("testbed.test.get", b"gold").await.unwrap().data[..], b"7");

    // A kick is applied when the call returns: the connection is closed.
    ok_json(&mut alice, "testbed.test.tx", json!({"kick": true, "then": "ok"})).await;
    expect_closed(&mut alice, Duration::from_secs(5)).await;
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_gets_a_fresh_instance() {
    for (untrusted, want) in [(false, ["1", "2", "3"]), (true, ["1", "1", "1"])] {
        let s = server(untrusted).await;
        let mut c = s.client(Transport::Tcp).await;
        for w in want {
            assert_eq!(&c.request("testbed.test.calls", b"").await.unwrap().data[..], w.as_bytes(), "untrusted = {untrusted}");
        }
        let stats = s.server.pool("testbed").unwrap().stats();
        // The fresh instances of the three calls (the last one built after its answer went out).
        let fresh = stats.fresh.load(Ordering::Relaxed);
        if untrusted {
            eventually("three fresh instances", Duration::from_secs(5), || s.server.pool("testbed").unwrap().stats().fresh.load(Ordering::Relaxed) == 3).await;
        } else {
            assert_eq!(fresh, 0);
        }
        assert_eq!(stats.rebuilds.load(Ordering::Relaxed), 0);
        s.server.shutdown().await;
    }
}
