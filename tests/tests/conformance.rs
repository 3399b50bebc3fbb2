//! One test server written three times (`tests/conformance/README.md`): in Rust, Python and
//! JavaScript with each language's SDK. The same client script runs against each build, and
//! everything each client receives — responses, errors with metadata, pushes, kicks, in order,
//! as bytes — must be the same: handlers, session data, push, kick, groups, RPC, timers, session
//! close.

use std::time::Duration;

use kiwano_protocol::message::MessageType;
use kiwano_tests::*;
use serde_json::json;

/// How long any one expected message may take.
const WITHIN: Duration = Duration::from_secs(10);

/// A client of the script, writing what it receives to the shared transcript.
struct Player {
    name: &'static str,
    client: Client,
}

impl Player {
    async fn join(server: &kiwano_server::Server, name: &'static str) -> Self {
        let addr = server.address("conf", kiwano_server::config::AcceptorKind::Tcp).expect("tcp acceptor").to_string();
        let mut client = Client::connect(&addr, Transport::Tcp, None).await.expect("connects");
        client.handshake(&json!({"sys": {"platform": "conformance"}, "user": {"name": name}})).await.expect("handshake");
        Self { name, client }
    }

    /// One received message as a transcript line.
    fn line(&self, m: &kiwano_protocol::message::Message) -> String {
        let kind = match m.kind {
            MessageType::Response => format!("response #{}", m.id),
            MessageType::Push => format!("push {}", m.route),
            other => format!("{other:?} {}", m.route),
        };
        let error = if m.error { " (error)" } else { "" };
        format!("{} <- {kind}{error}: {}", self.name, String::from_utf8_lossy(&m.data))
    }

    /// Requests `route` and records everything received up to its response.
    async fn request(&mut self, log: &mut Vec<String>, route: &str, body: serde_json::Value) {
        log.push(format!("{} -> {route} {body}", self.name));
        let id = self.client.send_request(route, body.to_string().as_bytes()).await.expect("sends");
        loop {
            let m = tokio::time::timeout(WITHIN, self.client.next_message()).await.expect("an answer in time").expect("a message");
            log.push(self.line(&m));
            if m.kind == MessageType::Response && m.id == id {
                return;
            }
        }
    }

    async fn notify(&mut self, log: &mut Vec<String>, route: &str, body: serde_json::Value) {
        log.push(format!("{} -> notify {route} {body}", self.name));
        self.client.notify(route, body.to_string().as_bytes()).await.expect("sends");
    }

    /// Records the next message, which must be a push.
    async fn push(&mut self, log: &mut Vec<String>) {
        let m = tokio::time::timeout(WITHIN, self.client.next_message()).await.expect("a push in time").expect("a message");
        assert_eq!(m.kind, MessageType::Push, "{}", self.line(&m));
        log.push(self.line(&m));
    }

    /// Records how the connection ends: a kick, or a close.
    async fn end(&mut self, log: &mut Vec<String>) {
        loop {
            match tokio::time::timeout(WITHIN, self.client.next_message()).await.expect("the end in time") {
                Ok(m) => log.push(self.line(&m)),
                Err(e) => {
                    log.push(format!("{} <- {e}", self.name));
                    return;
                }
            }
        }
    }
}

/// Plays the script against the build in `tests/conformance/<lang>`; returns the transcript and
/// the guest's metrics as `/metrics` shows them.
async fn script(lang: &str) -> (Vec<String>, Vec<String>) {
    let (server, metrics) = start_project_metrics(&root().join("tests/conformance").join(lang), &[], true).await;
    let log = &mut Vec::new();
    let mut alice = Player::join(&server, "alice").await;
    let mut bob = Player::join(&server, "bob").await;
    let mut carol = Player::join(&server, "carol").await;

    // Handlers and errors.
    alice.request(log, "conf.conf.echo", json!({"list": [1, 2, {"none": null}], "n": -3, "s": "hé \"quoted\" ✓"})).await;
    alice.request(log, "conf.conf.fail", json!({})).await;
    alice.request(log, "conf.conf.join", json!({"group": "lobby"})).await;
    alice.request(log, "conf.conf.nope", json!({})).await;
    // Binding, session data, pushes to the session.
    alice.request(log, "conf.conf.bind", json!({"uid": "alice"})).await;
    alice.request(log, "conf.conf.bind", json!({"uid": "again"})).await;
    bob.request(log, "conf.conf.bind", json!({"uid": "bob"})).await;
    carol.request(log, "conf.conf.bind", json!({"uid": "carol"})).await;
    alice.request(log, "conf.conf.set", json!({"key": "gold", "value": {"coins": 5, "gems": [1, 2]}})).await;
    alice.request(log, "conf.conf.get", json!({"key": "gold"})).await;
    alice.request(log, "conf.conf.get", json!({"key": "missing"})).await;
    alice.request(log, "conf.conf.set", json!({"key": "gold", "value": 7})).await;
    alice.request(log, "conf.conf.push", json!({"body": {"x": 1}, "route": "onCustom"})).await;
    alice.notify(log, "conf.conf.note", json!({"text": "hi"})).await;
    alice.push(log).await;
    alice.request(log, "conf.conf.handshake", json!({})).await;
    // Groups.
    alice.request(log, "conf.conf.join", json!({"group": "lobby"})).await;
    bob.request(log, "conf.conf.join", json!({"group": "lobby"})).await;
    alice.push(log).await;
    carol.request(log, "conf.conf.join", json!({"group": "lobby"})).await;
    alice.push(log).await;
    bob.push(log).await;
    alice.request(log, "conf.conf.join", json!({"group": "lobby"})).await;
    alice.request(log, "conf.conf.members", json!({"group": "lobby"})).await;
    alice.request(log, "conf.conf.members", json!({"group": "nope"})).await;
    carol.request(log, "conf.conf.leave", json!({"group": "lobby"})).await;
    carol.request(log, "conf.conf.leave", json!({"group": "lobby"})).await;
    // The guest's metrics (`max_metric_series = 3`).
    for (labels, metric, value) in [
        (json!(["red"]), "hits", json!(2)),
        (json!(["red"]), "hits", json!(1)),
        (json!(["blue"]), "hits", json!(-1)),
        (json!([]), "level", json!(7.5)),
        (json!(["a", "b"]), "hits", json!(1)),
        (json!(["small"]), "size", json!(5)),
        (json!(["green"]), "hits", json!(1)),
    ] {
        carol.request(log, "conf.conf.metric", json!({"labels": labels, "metric": metric, "value": value})).await;
    }
    // Users, RPC, timers.
    alice.request(log, "conf.conf.users", json!({"body": {"hey": true}, "route": "onUsers", "uids": ["bob", "ghost"]})).await;
    bob.push(log).await;
    alice.request(log, "conf.conf.rpc", json!({"a": 2, "b": 40})).await;
    alice.request(log, "conf.conf.rpcfail", json!({})).await;
    alice.request(log, "conf.conf.timer", json!({"ms": 20, "tag": "t1"})).await;
    alice.push(log).await;
    // Session close: bob leaves the lobby, alice hears it.
    log.push("bob closes".into());
    drop(bob);
    alice.push(log).await;
    // Kicks: of another user (not in the lobby any more: no onLeave), then of oneself.
    alice.request(log, "conf.conf.kickusers", json!({"uids": ["carol", "nobody"]})).await;
    carol.end(log).await;
    log.push("alice -> conf.conf.kick {}".into());
    alice.client.send_request("conf.conf.kick", b"{}").await.expect("sends");
    alice.end(log).await;
    let (_, text) = metrics.render().expect("metrics enabled");
    server.shutdown().await;
    let guest_series = text.lines().filter(|l| l.starts_with("kiwano_guest_conf_")).map(str::to_owned).collect();
    (log.clone(), guest_series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_python_and_javascript_builds_put_the_same_bytes_on_the_wire() {
    let (rust, rust_metrics) = script("rust").await;
    // What a client sees, checked on the Rust build (the others must equal it).
    for line in [
        r#"alice <- response #1: {"echo":{"list":[1,2,{"none":null}],"n":-3,"s":"hé \"quoted\" ✓"}}"#,
        r#"alice <- response #2 (error): {"code":"CF-001","msg":"conformance failure","metadata":{"kind":"custom","route":"conf.fail"}}"#,
        r#"alice <- response #3 (error): {"code":"CF-002","msg":"bind first"}"#,
        r#"alice <- response #6 (error): {"code":"PIT-400","msg":"session is already bound to an uid (\"alice\")"}"#,
        r#"alice <- response #8: {"key":"gold","value":{"coins":5,"gems":[1,2]}}"#,
        r#"alice <- response #9: {"key":"missing","value":null}"#,
        r#"alice <- push onCustom: {"x":1}"#,
        r#"alice <- push onNote: {"text":"hi"}"#,
        r#"alice <- response #12: {"platform":"conformance","user":{"name":"alice"}}"#,
        r#"alice <- push onJoin: {"uid":"carol","members":["alice","bob","carol"]}"#,
        r#"carol <- response #2: {"group":"lobby","members":["alice","bob","carol"],"count":3}"#,
        r#"alice <- response #14 (error): {"code":"PIT-400","msg":"member already exists in group"}"#,
        r#"alice <- response #16 (error): {"code":"PIT-404","msg":"group not found"}"#,
        r#"carol <- response #3: {"group":"lobby","contains":false}"#,
        r#"carol <- response #4 (error): {"code":"PIT-404","msg":"member not found in the group"}"#,
        r#"carol <- response #5: {"recorded":"hits"}"#,
        r#"carol <- response #7 (error): {"code":"PIT-400","msg":"metric \"conf_hits\": a counter only goes up (add -1)"}"#,
        r#"carol <- response #8: {"recorded":"level"}"#,
        r#"carol <- response #9 (error): {"code":"PIT-400","msg":"metric \"conf_hits\" has labels [color]: 2 values given"}"#,
        r#"carol <- response #10: {"recorded":"size"}"#,
        r#"carol <- response #11 (error): {"code":"PIT-500","msg":"metric series limit reached: server type conf records at most 3 series (servers.conf.max_metric_series)"}"#,
        r#"alice <- response #17: {"missed":["ghost"]}"#,
        r#"bob <- push onUsers: {"hey":true}"#,
        r#"alice <- response #18: {"remote":{"sum":42}}"#,
        r#"alice <- response #19 (error): {"code":"CF-003","msg":"remote refused","metadata":{"side":"remote"}}"#,
        r#"alice <- push onTimer: {"tag":"t1"}"#,
        r#"alice <- push onLeave: {"uid":"bob"}"#,
        r#"alice <- response #21: {"missed":["nobody"]}"#,
        "carol <- kicked by the server",
        r#"alice <- response #22: {"kicked":true}"#,
        "alice <- kicked by the server",
    ] {
        assert!(rust.iter().any(|l| l == line), "the Rust build's transcript lacks {line:?}:\n{}", rust.join("\n"));
    }
    // The metrics as Prometheus scrapes them: the series the calls recorded, none of those
    // refused.
    let series = [
        r#"kiwano_guest_conf_hits_total{color="red",game="",server_type="conf"} 3"#,
        r#"kiwano_guest_conf_level{game="",server_type="conf"} 7.5"#,
        r#"kiwano_guest_conf_size_bucket{game="",kind="small",server_type="conf",le="1"} 0"#,
        r#"kiwano_guest_conf_size_bucket{game="",kind="small",server_type="conf",le="10"} 1"#,
        r#"kiwano_guest_conf_size_bucket{game="",kind="small",server_type="conf",le="100"} 1"#,
        r#"kiwano_guest_conf_size_bucket{game="",kind="small",server_type="conf",le="+Inf"} 1"#,
        r#"kiwano_guest_conf_size_sum{game="",kind="small",server_type="conf"} 5"#,
        r#"kiwano_guest_conf_size_count{game="",kind="small",server_type="conf"} 1"#,
    ];
    assert_eq!(rust_metrics, series, "the Rust build's metrics");
    for lang in ["python", "js"] {
        let (other, other_metrics) = script(lang).await;
        assert_eq!(other_metrics, series, "the {lang} build's metrics");
        for (i, (r, o)) in rust.iter().zip(&other).enumerate() {
            assert_eq!(r, o, "{lang} differs from rust at line {i}:\n{}", other.join("\n"));
        }
        assert_eq!(rust.len(), other.len(), "{lang}:\n{}", other.join("\n"));
    }
}
