//! No peer can make the server allocate what it did not send: each attack of the hardening
//! review, at small scale, against a real `kiwano` process, while a bystander client is served.
//! The server's resident memory must stay under the bound `host/server/CONFIG.md` documents
//! ("What one connection can hold") and come back down once the attackers are gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use kiwano_tests::process::KiwanoProcess;
use kiwano_tests::rawws;
use kiwano_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const MIB: u64 = 1 << 20;

/// A client served throughout an attack: an echo request every 10 ms, each answered within 5 s.
struct Bystander {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Bystander {
    async fn start(addr: &str) -> Self {
        let mut c = Client::connect(addr, Transport::Tcp, None).await.expect("bystander connects");
        c.handshake(&serde_json::json!({"sys": {"platform": "bystander"}})).await.expect("bystander handshake");
        let (stop, served) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let (s, n) = (stop.clone(), served.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                let r = tokio::time::timeout(Duration::from_secs(5), c.request("test.echo", b"still here")).await;
                let r = r.expect("the bystander is answered within 5 s").expect("the bystander stays connected");
                assert_eq!(&r.data[..], b"still here");
                n.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Self { stop, served, task }
    }

    /// Waits until `n` more requests were served: the server's threads have gone round.
    async fn wait_served(&self, n: u64) {
        let target = self.served.load(Ordering::Relaxed) + n;
        eventually("bystander served", Duration::from_secs(30), || self.served.load(Ordering::Relaxed) >= target).await;
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the bystander was served throughout");
    }
}

/// The peak resident memory of the process while it runs.
struct Peak {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
}

impl Peak {
    fn watch(p: &KiwanoProcess) -> Self {
        let (stop, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let (s, m) = (stop.clone(), peak.clone());
        let status = format!("/proc/{}/status", p.pid());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let rss = std::fs::read_to_string(&status)
                    .ok()
                    .and_then(|t| t.lines().find_map(|l| l.strip_prefix("VmRSS:")).map(str::to_owned))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    .unwrap_or(0);
                m.fetch_max(rss * 1024, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self { stop, peak }
    }

    fn get(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for Peak {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The resident memory once warm: a few clients came and went, the bystander is served.
async fn baseline(p: &KiwanoProcess, by: &Bystander) -> u64 {
    for _ in 0..20 {
        let mut c = Client::connect(p.addr("Tcp"), Transport::Tcp, None).await.unwrap();
        c.handshake(&serde_json::json!({"sys": {}})).await.unwrap();
        c.request("test.echo", b"warm").await.unwrap();
    }
    by.wait_served(20).await;
    p.rss()
}

/// Reads until the server closes the connection; panics after 10 s.
async fn closed(s: &mut TcpStream) {
    let mut scrap = [0u8; 4096];
    let r = tokio::time::timeout(Duration::from_secs(10), async {
        while matches!(s.read(&mut scrap).await, Ok(n) if n > 0) {}
    })
    .await;
    assert!(r.is_ok(), "the server did not close the connection");
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / MIB as f64)
}

/// After the attackers left, the memory comes back to within `slack` of the baseline.
async fn comes_back(p: &KiwanoProcess, base: u64, slack: u64, what: &str) {
    let start = tokio::time::Instant::now();
    while p.rss() > base + slack {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what}: resident memory {} did not come back under {} + {}",
            mib(p.rss()),
            mib(base),
            mib(slack)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Headers that announce megabytes, followed by a few bytes: before the handshake (refused
/// from the header: the handshake limit is 16 KiB), and after it over TCP and WebSocket (held
/// open, costing what was sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_bodies_cost_only_what_was_sent() {
    const HELD: u64 = 200;
    let p = KiwanoProcess::start("announced", "", "").await;
    let by = Bystander::start(p.addr("Tcp")).await;
    let base = baseline(&p, &by).await;
    let peak = Peak::watch(&p);

    for _ in 0..100 {
        let mut s = TcpStream::connect(p.addr("Tcp")).await.unwrap();
        s.write_all(&[1, 0x10, 0, 0]).await.unwrap();
        let _ = s.write_all(&[b'{'; 16]).await;
        closed(&mut s).await;
    }
    let mut held = Vec::new();
    for _ in 0..HELD {
        let mut c = Client::connect(p.addr("Tcp"), Transport::Tcp, None).await.unwrap();
        c.handshake(&serde_json::json!({"sys": {}})).await.unwrap();
        // A data packet of exactly `max_body` (1 MiB) announced; 20 bytes of it sent.
        c.send_raw(&[&[4u8, 0x10, 0, 0][..], &[0; 20]].concat()).await.unwrap();
        held.push(c);
    }
    let mut held_ws = Vec::new();
    for _ in 0..HELD {
        let mut s = rawws::handshaken(p.addr("Ws")).await;
        // A WebSocket frame of 1 MiB + 4 announced; 20 bytes of it sent.
        s.write_all(&rawws::frame_header(0x2, MIB + 4)).await.unwrap();
        s.write_all(&[4, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).await.unwrap();
        held_ws.push(s);
    }
    by.wait_served(20).await;
    let growth = p.rss().max(peak.get()).saturating_sub(base);
    // Bound: what an idle connection holds plus a first read buffer, 32 KiB a connection (a
    // 1 MiB reservation each would be 400 MiB).
    let bound = 2 * HELD * 32 * 1024;
    assert!(growth < bound, "{} connections announcing 1 MiB grew the server by {} (bound {})", 2 * HELD, mib(growth), mib(bound));
    eprintln!("announced bodies: {} connections, growth {} (bound {})", 2 * HELD, mib(growth), mib(bound));
    drop(held);
    drop(held_ws);
    comes_back(&p, base, 4 * MIB, "announced bodies").await;
    by.finish().await;
    assert!(p.logs().contains("packet body of 1048576 bytes exceeds the 16384-byte limit"), "{}", p.logs());
}

/// WebSocket clients that send pings and never read: the pongs cannot pile up, and a flood of
/// control frames closes the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_floods_without_reading_are_bounded() {
    let p = KiwanoProcess::start("pings", "", "").await;
    let by = Bystander::start(p.addr("Tcp")).await;
    let base = baseline(&p, &by).await;
    let peak = Peak::watch(&p);
    let mut floods = Vec::new();
    for _ in 0..4 {
        let addr = p.addr("Ws").to_owned();
        floods.push(tokio::spawn(async move {
            let mut s = rawws::handshaken(&addr).await;
            let ping = rawws::frame(0x9, &[7u8; 125]);
            let burst: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 100).collect();
            // Until the server closes the connection (the writes fail), at most 20 000 pings.
            for _ in 0..200 {
                if s.write_all(&burst).await.is_err() {
                    break;
                }
            }
            // The client does not go away first (a reset would drop the pings the server has
            // not read yet): it waits for the server's close.
            closed(&mut s).await;
        }));
    }
    for f in floods {
        f.await.unwrap();
    }
    by.wait_served(20).await;
    let growth = peak.get().saturating_sub(base);
    assert!(growth < 16 * MIB, "4 ping floods grew the server by {}", mib(growth));
    eprintln!("ping floods: growth {}", mib(growth));
    by.finish().await;
    assert!(p.logs().contains("more than 64 websocket ping/pong frames in one heartbeat interval"), "{}", p.logs());
}

/// Small compressed requests that inflate to 1 MB each, on a server with compression off, from
/// clients that never read: bounded by the queues' byte limits after inflation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inflating_requests_are_bounded_after_inflation() {
    const CLIENTS: u64 = 8;
    let p = KiwanoProcess::start("inflate", "[protocol]\ncompression = false\n", "").await;
    let by = Bystander::start(p.addr("Tcp")).await;
    let base = baseline(&p, &by).await;
    let peak = Peak::watch(&p);
    let body = vec![b'a'; 1_000_000];
    let mut attackers = Vec::new();
    for _ in 0..CLIENTS {
        let mut c = Client::connect(p.addr("Tcp"), Transport::Tcp, None).await.unwrap();
        c.handshake(&serde_json::json!({"sys": {}})).await.unwrap();
        c.compress = true;
        attackers.push(c);
    }
    // 40 requests each: ~40 KiB on the wire, 40 MB after inflation, per client.
    for _ in 0..40 {
        for c in &mut attackers {
            let _ = c.send_request("test.echo", &body).await;
        }
    }
    by.wait_served(50).await;
    let growth = peak.get().saturating_sub(base);
    // Per client: inbound 1 MiB + one message, the one being handled, outgoing 4 MiB: 7 MiB
    // (CONFIG.md); plus, once, the two instances' linear memory grown to hold a 1 MB request
    // and its response, and the allocator's own: about 10 MiB measured with one client; with 8
    // clients the whole growth measured 71.5 MiB on an idle machine and 84–87 MiB with both
    // cores busy (another process, or the rest of the suite), so 40 MiB are allowed for the
    // instances and the allocator. Unbounded queues grew it by about 1 GB (RELIABILITY.md).
    let bound = CLIENTS * 7 * MIB + 40 * MIB;
    assert!(growth < bound, "{CLIENTS} inflating clients grew the server by {} (bound {})", mib(growth), mib(bound));
    eprintln!("inflating requests: growth {} (bound {})", mib(growth), mib(bound));
    drop(attackers);
    // The instances keep their grown linear memory (a guest's heap never shrinks), and the
    // allocator some partly used pages; the rest goes back (591 MB stayed before the fix).
    comes_back(&p, base, 32 * MIB, "inflating requests").await;
    by.finish().await;
}
