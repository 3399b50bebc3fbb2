//! The runtime model over real sockets: per-session order, affinity, a slow guest never holding
//! up other connections, instances rebuilt after traps, and long-lived instances. The server
//! runs on a multi-thread runtime, as under `kiwano run`: calls run on the I/O threads when
//! their instance is free, and a call outliving a tick hands its thread's connections over.

use std::time::{Duration, Instant};

use kiwano_protocol::packet::PacketType;
use kiwano_tests::*;
use rand::Rng;

/// The CPU-heavy and timing-sensitive tests of this file run one at a time: on a 2-core machine
/// they would otherwise measure each other.
static CPU: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn instance_of(c: &mut Client) -> u32 {
    let r = c.request("test.instance", b"").await.unwrap();
    String::from_utf8_lossy(&r.data).parse().unwrap()
}

/// Two clients whose sessions run on different instances.
async fn on_two_instances(s: &TestServer, t: Transport) -> (Client, Client) {
    let mut a = s.client(t).await;
    let ia = instance_of(&mut a).await;
    loop {
        let mut b = s.client(t).await;
        if instance_of(&mut b).await != ia {
            return (a, b);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_pipelined_requests_come_back_in_order() {
    let _cpu = CPU.lock().await;
    let s = TestServer::with(TestConfig { testbed: "instances = 3".into(), ..Default::default() }).await;
    for t in [Transport::Tcp, Transport::Ws] {
        let mut c = s.client(t).await;
        let bodies: Vec<String> = {
            let mut rng = rand::rng();
            (0..1000).map(|_| rng.random_range(0..400u32).to_string()).collect()
        };
        let mut ids = Vec::new();
        for b in &bodies {
            ids.push(c.send_request("test.spin", b.as_bytes()).await.unwrap());
        }
        for (id, b) in ids.iter().zip(&bodies) {
            let m = c.next_message().await.unwrap();
            assert_eq!((m.kind, m.id, &m.data[..]), (MessageType::Response, *id, b.as_bytes()), "{t:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_instance_does_not_delay_sessions_on_another() {
    let _cpu = CPU.lock().await;
    let s = TestServer::with(TestConfig { testbed: "instances = 2".into(), ..Default::default() }).await;
    let (mut a, mut b) = on_two_instances(&s, Transport::Tcp).await;
    // The spin is under way once the log line before it shows.
    a.send_request("test.log", b"before the busy call").await.unwrap();
    let busy = a.send_request("test.spin", b"3000000").await.unwrap();
    eventually("the busy call under way", Duration::from_secs(10), || logs().contains("guest says before the busy call")).await;
    let start = Instant::now();
    for _ in 0..10 {
        assert_eq!(&b.request("test.echo", b"quick").await.unwrap().data[..], b"quick");
    }
    // Waiting behind the 3 s call would take seconds; a busy machine adds milliseconds.
    assert!(start.elapsed() < Duration::from_millis(1500), "10 calls took {:?}", start.elapsed());
    assert_eq!(&a.response(busy).await.unwrap().data[..], b"3000000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_guest_fails_alone_while_others_are_served_and_heartbeats_flow() {
    let _cpu = CPU.lock().await;
    let s = TestServer::with(TestConfig {
        extra: "[protocol]\nheartbeat_interval = \"1s\"".into(),
        testbed: "instances = 2\ncall_timeout = \"2500ms\"".into(),
        ..Default::default()
    })
    .await;
    let (mut a, mut b) = on_two_instances(&s, Transport::Ws).await;
    let looping = a.send_request("test.loop", b"").await.unwrap();
    let start = Instant::now();
    let mut worst = Duration::ZERO;
    let mut heartbeats_b = 0;
    while start.elapsed() < Duration::from_millis(2200) {
        let t = Instant::now();
        let id = b.send_request("test.echo", b"x").await.unwrap();
        loop {
            let p = b.recv_packet().await.unwrap().unwrap();
            if p.kind == PacketType::Heartbeat {
                heartbeats_b += 1;
                continue;
            }
            assert_eq!(p.body[1] as u64, id);
            break;
        }
        worst = worst.max(t.elapsed());
        b.heartbeat().await.unwrap();
        // The looping session stays alive: its client keeps sending heartbeats.
        a.heartbeat().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Waiting behind the loop would take seconds; a busy machine adds milliseconds.
    assert!(worst < Duration::from_millis(500), "slowest answer while a guest loops: {worst:?}");
    assert!(heartbeats_b >= 2, "{heartbeats_b} heartbeats reached the other session");
    // The looping session keeps receiving heartbeats while its call runs, then gets PIT-500.
    let mut heartbeats_a = 0;
    let r = loop {
        let p = a.recv_packet().await.unwrap().unwrap();
        if p.kind == PacketType::Heartbeat {
            heartbeats_a += 1;
            continue;
        }
        break kiwano_protocol::message::decode(&p.body, &Default::default(), 1 << 20).unwrap();
    };
    assert!(heartbeats_a >= 2, "{heartbeats_a} heartbeats during the loop");
    assert_eq!(r.id, looping);
    assert_eq!(error_of(&r), PitayaError::new("PIT-500", "internal error handling testbed.test.loop"));
    assert!(start.elapsed() >= Duration::from_millis(2400));
    // Its instance was rebuilt.
    assert_eq!(&a.request("test.echo", b"after").await.unwrap().data[..], b"after");
    assert!(s.server.pool("testbed").unwrap().stats().rebuilds.load(std::sync::atomic::Ordering::Relaxed) >= 1);
}

/// With `call_timeout` under the heartbeat interval, calls run on the I/O threads: one that
/// spins hands its thread over after a tick, so other sessions are still answered at once; it
/// then fails alone, its session stays connected, and its instance is rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_guest_on_an_io_thread_hands_the_thread_over() {
    let _cpu = CPU.lock().await;
    let s = TestServer::with(TestConfig { testbed: "instances = 2\ncall_timeout = \"1500ms\"".into(), ..Default::default() }).await;
    let stats = || s.server.pool("testbed").unwrap().stats();
    let (mut a, mut b) = on_two_instances(&s, Transport::Tcp).await;
    let inline_before = stats().inline.load(std::sync::atomic::Ordering::Relaxed);
    assert!(inline_before > 0, "calls did not run on the I/O threads");
    let looping = a.send_request("test.loop", b"").await.unwrap();
    let start = Instant::now();
    let mut worst = Duration::ZERO;
    let mut answered = 0;
    while start.elapsed() < Duration::from_millis(1200) {
        let t = Instant::now();
        assert_eq!(&b.request("test.echo", b"x").await.unwrap().data[..], b"x");
        worst = worst.max(t.elapsed());
        answered += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Waiting behind the loop would take seconds; a busy machine adds milliseconds.
    assert!(worst < Duration::from_millis(500), "slowest answer while a guest loops: {worst:?}");
    assert!(answered >= 5, "{answered} answers while a guest looped");
    let r = a.response(looping).await.unwrap();
    assert_eq!(error_of(&r), PitayaError::new("PIT-500", "internal error handling testbed.test.loop"));
    assert!(start.elapsed() >= Duration::from_millis(1400));
    assert_eq!(&a.request("test.echo", b"after").await.unwrap().data[..], b"after");
    assert!(stats().rebuilds.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert!(stats().inline.load(std::sync::atomic::Ordering::Relaxed) > inline_before + 20);
}

/// A guest writing to stdout and stderr from an I/O thread (wasmtime-wasi's blocking stream
/// functions would otherwise panic there): the lines are logged, tagged with the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_prints_from_an_io_thread() {
    let s = TestServer::with(TestConfig { testbed: "call_timeout = \"1s\"".into(), ..Default::default() }).await;
    let mut c = s.client(Transport::Tcp).await;
    let inline = || s.server.pool("testbed").unwrap().stats().inline.load(std::sync::atomic::Ordering::Relaxed);
    let before = inline();
    c.request("test.log", b"inline-marker-7").await.unwrap();
    assert_eq!(inline(), before + 1, "the call did not run on the I/O thread");
    let logs = logs();
    assert!(logs.lines().any(|l| l.contains("[stdout] stdout says inline-marker-7") && l.contains("route=\"test.log\"")));
    assert!(logs.lines().any(|l| l.contains("[stderr] stderr says inline-marker-7")));
    assert_eq!(&c.request("test.echo", b"still here").await.unwrap().data[..], b"still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_after_a_memory_bomb_succeeds_on_a_fresh_instance() {
    let s = TestServer::with(TestConfig { testbed: "instances = 1\nmemory_limit = 16777216".into(), ..Default::default() }).await;
    let mut c = s.client(Transport::Tcp).await;
    c.request("test.set", b"k=1").await.unwrap();
    let r = c.request("test.oom", b"").await.unwrap();
    assert_eq!(error_of(&r).code, "PIT-500");
    let r = c.request("test.echo", b"alive").await.unwrap();
    assert_eq!(&r.data[..], b"alive");
    // Session data lives in the host: it survived the instance.
    assert_eq!(&c.request("test.get", b"k").await.unwrap().data[..], b"1");
    assert!(logs().contains("guest ran out of memory (limit 16777216 bytes)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_serves_more_than_100_000_calls() {
    let _cpu = CPU.lock().await;
    let s = TestServer::with(TestConfig { testbed: "instances = 1".into(), ..Default::default() }).await;
    let mut c = s.client(Transport::Tcp).await;
    let total = 100_100;
    let mut sent = 0;
    while sent < total {
        let batch = 200.min(total - sent);
        let mut ids = Vec::with_capacity(batch);
        for _ in 0..batch {
            ids.push(c.send_request("test.echo", b"{}").await.unwrap());
        }
        for id in ids {
            let m = c.next_message().await.unwrap();
            assert!(m.id == id && !m.error && &m.data[..] == b"{}", "call {id}: {m:?}");
        }
        sent += batch;
    }
    let stats = s.server.pool("testbed").unwrap().stats();
    assert!(stats.calls.load(std::sync::atomic::Ordering::Relaxed) >= total as u64);
    assert_eq!(stats.rebuilds.load(std::sync::atomic::Ordering::Relaxed), 0, "the instance was never replaced");
}
