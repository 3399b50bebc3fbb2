//! Hostile guests in Python and JavaScript (the Rust ones are in runtime.rs, guests.rs and
//! sandbox.rs): an
//! infinite loop, a memory bomb, runaway recursion, a flood of pushes, a giant answer. Each
//! fails only its own call with a Pitaya error within its deadline; the instance is replaced;
//! other sessions are served meanwhile, their latency measured.

use std::time::{Duration, Instant};

use kiwano_tests::*;

async fn server(component: std::path::PathBuf) -> TestServer {
    TestServer::with(TestConfig {
        server_type: "hostile".into(),
        component: Some(component),
        testbed: ["instances = 2", "affinity = \"session\"", "call_timeout = \"1s\"", "memory_limit = 67108864", "max_pushes_per_call = 100", "max_response = 1048576"].join("\n"),
        extra: String::new(),
        ..Default::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_python_guest_fails_alone() {
    fails_alone(kiwano_tests::polyglot::python_app("python-hostile")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_javascript_guest_fails_alone() {
    fails_alone(kiwano_tests::polyglot::js_app("js-hostile")).await;
}

async fn fails_alone(component: std::path::PathBuf) {
    let s = server(component).await;
    let mut attacker = s.client(Transport::Tcp).await;
    let mut player = s.client(Transport::Ws).await;
    // The player's calls run on the other instance (two instances, by session).
    for (route, code) in [
        ("hostile.loop", "PIT-500"),
        ("hostile.bomb", "PIT-500"),
        ("hostile.recurse", "PIT-500"),
        ("hostile.huge", "PIT-500"),
    ] {
        let started = Instant::now();
        let id = attacker.send_request(route, b"{}").await.unwrap();
        // Meanwhile the player is served, promptly.
        let mut slowest = Duration::ZERO;
        for _ in 0..5 {
            let t = Instant::now();
            assert_eq!(&player.request("hostile.echo", b"hi").await.unwrap().data[..], b"hi", "{route}");
            slowest = slowest.max(t.elapsed());
        }
        let r = attacker.response(id).await.unwrap();
        let e = error_of(&r);
        assert_eq!((e.code.as_str(), e.msg.as_str()), (code, format!("internal error handling hostile.{route}").as_str()), "{route}");
        assert!(started.elapsed() < Duration::from_secs(5), "{route} took {:?}", started.elapsed());
        assert!(slowest < Duration::from_millis(500), "{route}: the player waited {slowest:?}");
        // The attacker's next call runs on a fresh instance.
        assert_eq!(&attacker.request("hostile.echo", b"again").await.unwrap().data[..], b"again", "{route}");
    }
    // A flood of pushes stops at the call's limit, with the limit named.
    let e = error_of(&attacker.request("hostile.flood", b"{}").await.unwrap());
    assert_eq!(e.msg, "call limit reached: at most 100 pushes and kicks in one call (servers.hostile.max_pushes_per_call)");
    s.server.shutdown().await;
}
