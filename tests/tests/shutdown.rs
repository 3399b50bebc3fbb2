//! Stopping the `kiwano` process while a guest is stuck in a call: the shutdown takes at most
//! `app.shutdown_timeout`, prints no panic, and a second signal ends it at once.

use std::time::{Duration, Instant};

use kiwano_tests::process::KiwanoProcess;
use kiwano_tests::*;

/// Starts a call that does not end by itself (`route`: `test.loop` spins, `test.sleep` waits in
/// WASI) after a logged one, so that once the log shows the first, the second is under way.
async fn stuck(p: &KiwanoProcess, route: &str) -> Client {
    let mut c = Client::connect(p.addr("Tcp"), Transport::Tcp, None).await.unwrap();
    c.handshake(&serde_json::json!({"sys": {}})).await.unwrap();
    c.send_request("test.log", b"before the stuck call").await.unwrap();
    c.send_request(route, b"600000").await.unwrap();
    eventually("the stuck call starts", Duration::from_secs(30), || p.logs().contains("guest says before the stuck call")).await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_by_its_timeout_while_a_guest_is_stuck() {
    // On the instance's own thread (a deadline longer than the heartbeat), and on an I/O
    // thread (shorter): a spinning guest and one waiting in WASI.
    for (route, call_timeout) in [("test.loop", "60s"), ("test.sleep", "20s")] {
        let mut p = KiwanoProcess::start(
            &format!("shutdown-{route}"),
            "[app]\nshutdown_timeout = \"2s\"\n",
            &format!("instances = 1\ncall_timeout = \"{call_timeout}\""),
        )
        .await;
        let _c = stuck(&p, route).await;
        let start = Instant::now();
        p.signal("TERM");
        let status = p.wait(Duration::from_secs(10)).await.unwrap_or_else(|| panic!("{route}: still running 10 s after SIGTERM"));
        let took = start.elapsed();
        assert!(took < Duration::from_secs(4), "{route}: the 2 s shutdown took {took:?}");
        assert!(status.success(), "{route}: {status}");
        let logs = p.logs();
        assert!(logs.contains("connections still open after the shutdown timeout"), "{logs}");
        assert!(!logs.contains("panicked") && !logs.contains("backtrace"), "{route}: {logs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_ends_the_shutdown_at_once() {
    let mut p = KiwanoProcess::start("second-signal", "[app]\nshutdown_timeout = \"60s\"\n", "instances = 1\ncall_timeout = \"60s\"").await;
    let _c = stuck(&p, "test.loop").await;
    p.signal("TERM");
    eventually("the shutdown starts", Duration::from_secs(10), || p.logs().contains("shutting down")).await;
    let start = Instant::now();
    p.signal("INT");
    let status = p.wait(Duration::from_secs(10)).await.expect("the second signal ends the process");
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
    assert_eq!(status.code(), Some(1));
    let logs = p.logs();
    assert!(logs.contains("second signal: stopping now"), "{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
}
