//! No guest can stall an instance, grow memory or lose a reply: what a guest does wrong (sleep
//! in WASI past its deadline, a timer slower than its period, a timer storm, a giant error, a
//! socket, a flood of output, an RPC to its own busy instance) fails that one call with a
//! Pitaya error code, in time, and the server goes on serving.

use std::time::{Duration, Instant};

use kiwano_tests::*;
use serde_json::json;

fn server_with(testbed: &str) -> TestConfig {
    TestConfig { testbed: testbed.into(), ..Default::default() }
}

/// A guest sleeping in WASI is woken at its deadline, on an I/O thread (calls inline: the
/// deadline is shorter than the heartbeat) and on its instance's own thread alike; a session
/// waiting behind it on the same instance is served right after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_sleeping_in_wasi_fails_at_its_deadline() {
    for (name, extra) in [("inline", ""), ("instance thread", "[protocol]\nheartbeat_interval = \"1s\"\n")] {
        let s = TestServer::with(TestConfig {
            extra: extra.into(),
            testbed: "instances = 1\ncall_timeout = \"2s\"".into(),
            ..Default::default()
        })
        .await;
        let (mut a, mut b) = (s.client(Transport::Tcp).await, s.client(Transport::Ws).await);
        let start = Instant::now();
        let slept = a.send_request("test.sleep", b"20000").await.unwrap();
        let other = b.send_request("test.echo", b"next").await.unwrap();
        let e = error_of(&a.response(slept).await.unwrap());
        let took = start.elapsed();
        assert_eq!((e.code.as_str(), e.msg.as_str()), ("PIT-500", "internal error handling testbed.test.sleep"), "{name}");
        assert!(took < Duration::from_secs(5), "{name}: the 20 s sleep ended after {took:?}, not at its 2 s deadline");
        assert_eq!(&b.response(other).await.unwrap().data[..], b"next", "{name}");
        assert!(start.elapsed() < Duration::from_secs(6), "{name}: the other session waited {:?}", start.elapsed());
        // The instance was rebuilt and serves.
        assert_eq!(&a.request("test.echo", b"again").await.unwrap().data[..], b"again", "{name}");
        s.server.shutdown().await;
    }
    assert!(logs().contains("guest call exceeded its 2s deadline"), "the cause is logged");
}

/// `every(1 ms)` with a handler busy 5 ms: the instance's client calls still run (cancel
/// among them), and late ticks are dropped instead of queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_slower_than_its_period_neither_starves_calls_nor_piles_up() {
    let s = TestServer::with(server_with("instances = 1")).await;
    let mut c = s.client(Transport::Tcp).await;
    let id: u64 = serde_json::from_value(ok_json(&mut c, "test.busytimer", json!([1, 5])).await).unwrap();
    let pool = s.server.pool("testbed").unwrap();
    eventually("ticks dropped", Duration::from_secs(10), || pool.stats().timer_ticks_dropped.load(std::sync::atomic::Ordering::Relaxed) > 50).await;
    for i in 0..20 {
        let start = Instant::now();
        let body = format!("call {i}");
        assert_eq!(&c.request("test.echo", body.as_bytes()).await.unwrap().data[..], body.as_bytes());
        assert!(start.elapsed() < Duration::from_secs(1), "call {i} waited {:?} behind the timer", start.elapsed());
    }
    assert_eq!(ok_json(&mut c, "test.cancel", json!(id)).await, json!(true));
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_per_instance_are_capped() {
    let s = TestServer::with(server_with("instances = 1\nmax_timers = 100")).await;
    let mut c = s.client(Transport::Tcp).await;
    let r = c.request("test.timerstorm", b"100000").await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r.data),
        "100 set, then PIT-500: timer not set: this instance holds its maximum of live timers"
    );
    s.server.shutdown().await;
}

/// A guest error is capped like a response: over `max_response` (and over the 16 MiB a packet
/// can carry, compression off), the request is still answered, with `PIT-500`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_giant_guest_error_is_answered_with_pit_500() {
    let s = TestServer::with(TestConfig {
        extra: "[protocol]\ncompression = false\n".into(),
        testbed: "instances = 1\nmemory_limit = 134217728".into(),
        ..Default::default()
    })
    .await;
    let mut c = s.client(Transport::Tcp).await;
    for size in ["5000000", "17000000"] {
        let e = error_of(&c.request("test.bigerror", size.as_bytes()).await.unwrap());
        assert_eq!((e.code.as_str(), e.msg.as_str()), ("PIT-500", "internal error handling testbed.test.bigerror"), "{size}");
    }
    let e = error_of(&c.request("test.bigerror", b"100").await.unwrap());
    assert_eq!((e.code.as_str(), e.msg.len()), ("RH-002", 100), "a small error goes through");
    assert!(logs().contains("guest error of 5000006 bytes exceeds the 1048576-byte limit"));
    s.server.shutdown().await;
}

/// Sockets and files are not linked: a socket call fails that one call (no panic on the I/O
/// thread it runs on), a file read finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_and_files_are_out_of_reach() {
    let s = TestServer::start().await;
    let mut c = s.client(Transport::Tcp).await;
    let e = error_of(&c.request("test.udp", b"").await.unwrap());
    assert_eq!((e.code.as_str(), e.msg.as_str()), ("PIT-500", "internal error handling testbed.test.udp"));
    let e = error_of(&c.request("test.readfile", b"/etc/passwd").await.unwrap());
    assert_eq!(e.code, "RH-004", "no file is reachable: {}", e.msg);
    assert_eq!(&c.request("test.echo", b"served").await.unwrap().data[..], b"served");
    let logs = logs();
    assert!(logs.contains("is not available to guests (no filesystem, no sockets)"), "{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
    s.server.shutdown().await;
}

/// 100 000 lines printed in one call: the log takes `log_rate` of them and says how many it
/// dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_output_is_rate_limited_and_the_drop_is_counted() {
    let s = TestServer::with(server_with("instances = 1\nlog_rate = 50")).await;
    let mut c = s.client(Transport::Tcp).await;
    let start = Instant::now();
    assert_eq!(&c.request("test.print", b"100000").await.unwrap().data[..], b"printed");
    let took = start.elapsed().as_secs_f64();
    let printed = logs().lines().filter(|l| l.contains("[stdout] line ")).count();
    // A second's worth at once, then 50 a second while the call runs.
    let most = 50 + (50.0 * took).ceil() as usize;
    assert!((50..=most).contains(&printed), "{printed} lines logged in {took:.2}s");
    // The drops are reported at most once a second, when a line passes or a call ends: calls
    // that print nothing bring the last report.
    let dropped = || -> usize {
        logs()
            .lines()
            .filter_map(|l| l.split("lines/s: ").nth(1))
            .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
            .sum()
    };
    let reported = Instant::now();
    while printed + dropped() < 100_000 {
        assert!(reported.elapsed() < Duration::from_secs(10), "{} lines neither logged nor counted", 100_000 - printed - dropped());
        c.request("test.echo", b"").await.unwrap();
    }
    assert_eq!(printed + dropped(), 100_000, "every line is logged or counted");
    let reports = logs().matches("guest output over its limit").count();
    assert!(reports as f64 <= took + 3.0, "{reports} reports: at most one a second");
    s.server.shutdown().await;
}

/// A remote calling its own type's single remote instance would wait for itself until the RPC
/// timeout: it fails at once instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_calling_its_own_busy_instance_fails_at_once() {
    let s = TestServer::start().await;
    let me = s.server.server_id("testbed").unwrap().to_owned();
    let mut c = s.client(Transport::Tcp).await;
    let start = Instant::now();
    let e = err_json(&mut c, "test.rpc", json!({"route": "testbed.remote.cycle", "body": "x", "server_id": me})).await;
    assert_eq!(e.code, "PIT-500");
    assert_eq!(e.msg, format!("rpc cycle: every remote instance of {me} is waiting up this call's chain (at testbed.remote.cycle)"));
    assert!(start.elapsed() < Duration::from_secs(1), "took {:?}", start.elapsed());
    s.server.shutdown().await;
}
