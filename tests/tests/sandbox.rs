//! What one guest call may do through the host: pushes, RPCs, group operations, timers and log
//! lines are counted per call against `servers.<type>.max_*_per_call`; past a limit the host
//! function fails with an error naming the limit (a timer is not set, a log line is dropped),
//! and the next call starts from zero.

use kiwano_tests::*;
use serde_json::{Value, json};

async fn flood(c: &mut Client, what: &str, n: u32) -> Value {
    ok_json(c, "test.flood", json!({"what": what, "n": n})).await
}

fn limit(n: u32, what: &str, key: &str) -> String {
    format!("PIT-500 call limit reached: at most {n} {what} in one call (servers.testbed.{key})")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_is_held_to_its_limits_through_the_host() {
    let s = TestServer::with(TestConfig {
        testbed: [
            "instances = 1",
            "max_pushes_per_call = 3",
            "max_rpcs_per_call = 2",
            "max_group_ops_per_call = 4",
            "max_timers_per_call = 2",
            "max_log_lines_per_call = 3",
        ]
        .join("\n"),
        ..Default::default()
    })
    .await;
    let mut c = s.client(Transport::Tcp).await;

    // Pushes: three reach the client, the fourth is refused with the limit's name.
    assert_eq!(flood(&mut c, "push", 5).await, json!({"done": 3, "error": limit(3, "pushes and kicks", "max_pushes_per_call")}));
    for i in 0..3 {
        let m = c.next_message().await.unwrap();
        assert_eq!((m.route.as_str(), String::from_utf8_lossy(&m.data).into_owned()), ("onFlood", i.to_string()));
    }
    // The next call starts from zero.
    assert_eq!(flood(&mut c, "push", 3).await, json!({"done": 3}));
    let _ = c.take_queued();

    assert_eq!(flood(&mut c, "rpc", 3).await, json!({"done": 2, "error": limit(2, "RPCs", "max_rpcs_per_call")}));
    assert_eq!(flood(&mut c, "group", 6).await, json!({"done": 4, "error": limit(4, "group operations", "max_group_ops_per_call")}));
    assert_eq!(flood(&mut c, "timer", 3).await, json!({"done": 2, "error": "TIMER not set"}));
    assert!(logs().contains(&format!("timer not set: {}", limit(2, "timers", "max_timers_per_call").trim_start_matches("PIT-500 "))));

    // Log lines past the call's limit are dropped (and counted), not written.
    assert_eq!(flood(&mut c, "log", 10).await, json!({"done": 10}));
    let written = logs().lines().filter(|l| l.contains("flood line")).count();
    assert_eq!(written, 3, "{}", logs());
    // The server serves on.
    assert_eq!(&c.request("test.echo", b"still here").await.unwrap().data[..], b"still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_recursion_fails_that_call_and_the_next_is_served() {
    // A small native stack for wasm (`runtime.max_wasm_stack`), so that it, not the guest's own
    // stack in its linear memory, is what runs out.
    let s = TestServer::with(TestConfig { testbed: "instances = 1".into(), extra: "max_wasm_stack = 65536".into(), ..Default::default() }).await;
    let mut c = s.client(Transport::Tcp).await;
    assert_eq!(&c.request("test.recurse", b"100").await.unwrap().data[..], b"100");
    // Past it: that call fails, the instance is rebuilt, the server serves on.
    let e = error_of(&c.request("test.recurse", b"5000").await.unwrap());
    assert_eq!((e.code.as_str(), e.msg.as_str()), ("PIT-500", "internal error handling testbed.test.recurse"));
    assert!(logs().contains("call stack exhausted"), "the cause is logged");
    assert_eq!(&c.request("test.recurse", b"100").await.unwrap().data[..], b"100");
    // Deeper than the guest's own stack (1 MiB of its linear memory): a trap too, alone.
    let e = error_of(&c.request("test.recurse", b"10000000").await.unwrap());
    assert_eq!(e.code, "PIT-500");
    assert_eq!(&c.request("test.echo", b"served").await.unwrap().data[..], b"served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_called_with_forged_handles_or_bad_arguments_fail_alone() {
    let s = TestServer::with(TestConfig { testbed: "instances = 1".into(), ..Default::default() }).await;
    let mut c = s.client(Transport::Tcp).await;
    // A made-up call-context handle: the call traps, the instance is replaced.
    let e = error_of(&c.request("test.forged", b"12345").await.unwrap());
    assert_eq!((e.code.as_str(), e.msg.as_str()), ("PIT-500", "internal error handling testbed.test.forged"));
    assert_eq!(&c.request("test.echo", b"after").await.unwrap().data[..], b"after");
    assert_eq!(s.server.pool("testbed").unwrap().stats().rebuilds.load(std::sync::atomic::Ordering::Relaxed), 1);
    // Arguments the host refuses: an error each, and the call goes on.
    let r = c.request("test.badargs", b"").await.unwrap();
    assert!(!r.error, "{}", String::from_utf8_lossy(&r.data));
    let long = "r".repeat(300);
    let want = [
        "group add empty uid: PIT-400 empty uid".to_owned(),
        "group of an empty name: PIT-404 group not found".into(),
        r#"rpc to a route without a type: PIT-400 invalid rpc route "nonsense": want server-type.service.method"#.into(),
        format!("push on a 300-byte route: PIT-400 cannot push on {long:?}: route of 300 bytes is longer than 255 bytes"),
        format!("users push on a 300-byte route: PIT-400 cannot push on {long:?}: route of 300 bytes is longer than 255 bytes"),
        "bind an empty uid: PIT-400 illegal uid: the uid is empty".into(),
        "timer of u64::MAX ms: PIT-400 timer not set: 18446744073709551.615s is longer than a year".into(),
    ];
    assert_eq!(String::from_utf8_lossy(&r.data), want.join("\n"));
    assert_eq!(&c.request("test.echo", b"still here").await.unwrap().data[..], b"still here");
    assert_eq!(s.server.pool("testbed").unwrap().stats().rebuilds.load(std::sync::atomic::Ordering::Relaxed), 1, "no trap");
}
