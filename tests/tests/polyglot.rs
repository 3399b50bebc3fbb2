//! Guests written in Python (componentize-py) and JavaScript (componentize-js), built from
//! source, answer on the wire byte for byte like a Rust guest: echo, a guest error carrying a
//! per-call context value, the client's address, and an unanswered notify.

use std::time::Duration;

use kiwano_tests::*;

/// Serves `component` as server type `echo`, without compression so payload bytes are exact.
async fn server(component: std::path::PathBuf) -> TestServer {
    TestServer::with(TestConfig {
        server_type: "echo".into(),
        component: Some(component),
        testbed: "instances = 2".into(),
        extra: "[protocol]\ncompression = false".into(),
        ..Default::default()
    })
    .await
}

/// Runs the echo checks on TCP then WebSocket; `code` and `lang` are the guest's error code and
/// language name.
async fn check(s: &TestServer, code: &str, lang: &str) {
    // Session ids start at 1 per server and grow by one per connection.
    for (session, t) in [(1u64, Transport::Tcp), (2, Transport::Ws)] {
        let mut c = s.client(t).await;

        let r = c.request("echo.echo", br#"{"x":1}"#).await.unwrap();
        assert!(!r.error, "{lang} {t:?} echo: {}", String::from_utf8_lossy(&r.data));
        assert_eq!(&r.data[..], br#"{"x":1}"#, "{lang} {t:?} echo");

        let r = c.request("echo.fail", b"").await.unwrap();
        assert!(r.error, "{lang} {t:?} fail: not an error: {}", String::from_utf8_lossy(&r.data));
        let want = format!(
            r#"{{"code":"{code}","msg":"{lang} refuses session {session}","metadata":{{"lang":"{lang}","route":"echo.fail"}}}}"#
        );
        assert_eq!(String::from_utf8_lossy(&r.data), want, "{lang} {t:?} fail");
        let e = error_of(&r);
        assert_eq!((e.code.as_str(), e.metadata.len()), (code, 2));

        let r = c.request("echo.who", b"").await.unwrap();
        assert!(!r.error, "{lang} {t:?} who: {}", String::from_utf8_lossy(&r.data));
        let who = String::from_utf8(r.data.to_vec()).expect("utf-8 address");
        assert!(who.starts_with("127.0.0.1:"), "{lang} {t:?} who: {who}");
        assert_ne!(who, s.addr(t), "{lang} {t:?}: the client's address, not the acceptor's");

        // An undeclared route is refused by the host and never reaches the guest.
        let e = error_of(&c.request("echo.nope", b"").await.unwrap());
        assert_eq!(e, PitayaError::new("PIT-404", "pitaya/handler: echo.echo.nope not found"), "{lang} {t:?}");

        // A notify is handled and never answered: the next message is the next request's response.
        c.notify("echo.note", b"hello").await.unwrap();
        let id = c.send_request("echo.echo", b"after").await.unwrap();
        let m = tokio::time::timeout(Duration::from_secs(10), c.next_message()).await.expect("a reply").unwrap();
        assert_eq!(
            (m.kind, m.id, m.error, &m.data[..]),
            (MessageType::Response, id, false, &b"after"[..]),
            "{lang} {t:?}"
        );
        assert!(tokio::time::timeout(Duration::from_millis(200), c.next_message()).await.is_err(), "{lang} {t:?}");
    }
}

#[tokio::test]
async fn python_guest_on_the_wire() {
    let s = server(kiwano_tests::polyglot::python_guest()).await;
    check(&s, "PY-001", "python").await;
}

#[tokio::test]
async fn javascript_guest_on_the_wire() {
    let s = server(kiwano_tests::polyglot::js_guest()).await;
    check(&s, "JS-001", "javascript").await;
}

/// The Python SDK's own tests (with its in-memory host), the Python chat room's and the Python
/// conformance server's.
#[test]
fn the_python_sdk_and_its_example_pass_their_own_tests() {
    for dir in ["guest-sdk/python/tests", "examples/chat-python/tests", "tests/conformance/python/tests"] {
        let out = std::process::Command::new("python3")
            .current_dir(root())
            .args(["-m", "unittest", "discover", "-s", dir])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .expect("python3 runs");
        assert!(out.status.success(), "{dir}:\n{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// The JavaScript SDK's own tests (in-memory host, its components run under Node), the
/// JavaScript chat room's and the JavaScript conformance server's.
#[test]
fn the_javascript_sdk_and_its_example_pass_their_own_tests() {
    for dir in ["guest-sdk/js/test/", "examples/chat-js/test/", "tests/conformance/js/test/"] {
        let out = std::process::Command::new("node").current_dir(root()).args(["--test", dir]).output().expect("node runs");
        assert!(out.status.success(), "{dir}:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
}

/// A garbage-collected guest's heap grows until its collector cannot get more memory and the
/// call in progress crashes (SpiderMonkey: "unhandlable oom"). An instance past three quarters
/// of `memory_limit` after a call is replaced before its next one: no call fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_guest_near_its_memory_limit_is_replaced_between_calls() {
    let s = TestServer::with(TestConfig {
        server_type: "echo".into(),
        component: Some(kiwano_tests::polyglot::js_guest()),
        testbed: "instances = 1\nmemory_limit = 33554432".into(),
        extra: "[protocol]\ncompression = false".into(),
        ..Default::default()
    })
    .await;
    let mut c = s.client(Transport::Tcp).await;
    let body = format!("\"{}\"", "x".repeat(64 << 10));
    let pool = s.server.pool("echo").expect("the echo pool");
    let mut calls = 0;
    while pool.stats().recycled.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        let r = c.request("echo.echo", body.as_bytes()).await.unwrap();
        assert!(!r.error, "call {calls} failed: {}", String::from_utf8_lossy(&r.data));
        calls += 1;
        assert!(calls < 20_000, "never recycled");
    }
    // And on past it.
    for _ in 0..200 {
        assert!(!c.request("echo.echo", body.as_bytes()).await.unwrap().error);
    }
    assert!(!logs().contains("ran out of memory"), "a call failed for memory");
}

/// A guest built against an earlier contract (`kiwano:server@0.1.1`, a frozen copy of its WIT,
/// raw bindings, no SDK) runs on this host unchanged: every change to the contract since was
/// additive (`metrics` in 0.1.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_of_the_0_1_1_contract_runs_unchanged() {
    let s = TestServer::with(TestConfig {
        server_type: "old".into(),
        component: Some(guest("contract-0-1-1-guest")),
        testbed: "instances = 1".into(),
        extra: "[protocol]\ncompression = false".into(),
        ..Default::default()
    })
    .await;
    let mut c = s.client(Transport::Tcp).await;
    let r = c.request("old.echo", b"hello").await.unwrap();
    assert_eq!((r.error, String::from_utf8_lossy(&r.data).into_owned()), (false, "- hello".to_owned()));
    s.server.shutdown().await;
}
