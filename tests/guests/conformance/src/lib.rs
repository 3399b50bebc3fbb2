//! The conformance server in Rust (`tests/conformance/README.md`): the routes and remotes of its
//! tables, written with the Rust SDK. `tests/tests/conformance.rs` expects the Python and
//! JavaScript builds to answer byte for byte as this one does.
//!
//! Build: `cargo build -p conformance-guest --target wasm32-wasip2 --profile guest`
//! (`kiwano run tests/conformance/rust` does it for you).

use std::time::Duration;

use kiwano_guest::metrics::{Counter, Gauge, Histogram};
use kiwano_guest::{Context, Error, Server, groups, rpc, timers, users};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const LOBBY: &str = "lobby";

static HITS: Counter = Counter::new("conf_hits", "Hits by color", &["color"]);
static LEVEL: Gauge = Gauge::new("conf_level", "Level", &[]);
static SIZE: Histogram = Histogram::new("conf_size", "Sizes", &["kind"], &[1.0, 10.0, 100.0]);

/// The session's uid; `CF-002` when it has none.
fn bound_uid(ctx: &Context) -> Result<String, Error> {
    ctx.uid().ok_or_else(|| Error::new("CF-002", "bind first"))
}

#[derive(Deserialize)]
struct Uid {
    uid: String,
}

#[derive(Deserialize)]
struct Set {
    key: String,
    value: Value,
}

#[derive(Deserialize)]
struct Key {
    key: String,
}

#[derive(Deserialize)]
struct Push {
    route: String,
    body: Value,
}

#[derive(Deserialize)]
struct Text {
    text: String,
}

#[derive(Deserialize)]
struct Group {
    group: String,
}

#[derive(Deserialize)]
struct PushUsers {
    route: String,
    body: Value,
    uids: Vec<String>,
}

#[derive(Deserialize)]
struct Uids {
    uids: Vec<String>,
}

#[derive(Deserialize, Serialize)]
struct Sum {
    a: i64,
    b: i64,
}

#[derive(Deserialize)]
struct Record {
    labels: Vec<String>,
    metric: String,
    value: f64,
}

/// `conf.metric`: one recording, the host's error as is.
fn record(_: &Context, r: Record) -> Result<Value, Error> {
    let labels: Vec<&str> = r.labels.iter().map(String::as_str).collect();
    match r.metric.as_str() {
        "hits" => HITS.add(&labels, r.value)?,
        "level" => LEVEL.set(&labels, r.value)?,
        "size" => SIZE.observe(&labels, r.value)?,
        other => return Err(Error::bad_request(format!("no metric {other}"))),
    }
    Ok(json!({"recorded": r.metric}))
}

#[derive(Deserialize)]
struct Timer {
    ms: u64,
    tag: String,
}

// Answers with more than one key are structs: their keys go out in the README's order, as the
// Python and JavaScript builds write them (a `json!` object would sort them).

#[derive(Serialize)]
struct Got {
    key: String,
    value: Option<Value>,
}

#[derive(Serialize)]
struct Joined<'a> {
    uid: &'a str,
    members: &'a [String],
}

#[derive(Serialize)]
struct Membership {
    group: String,
    members: Vec<String>,
    count: u32,
}

#[derive(Serialize)]
struct Left {
    group: String,
    contains: bool,
}

#[derive(Serialize)]
struct Handshake {
    platform: Value,
    user: Value,
}

fn join(ctx: &Context, g: Group) -> Result<Membership, Error> {
    let uid = bound_uid(ctx)?;
    match groups::create(&g.group, None) {
        Err(e) if e.msg == "group already exists" => {}
        r => r?,
    }
    groups::add(&g.group, &uid)?;
    let members = groups::members(&g.group)?;
    groups::broadcast_json(&g.group, "onJoin", &Joined { uid: &uid, members: &members })?;
    let count = groups::count(&g.group)?;
    Ok(Membership { group: g.group, members, count })
}

fn leave(ctx: &Context, g: Group) -> Result<Left, Error> {
    let uid = bound_uid(ctx)?;
    groups::remove(&g.group, &uid)?;
    let contains = groups::contains(&g.group, &uid)?;
    Ok(Left { group: g.group, contains })
}

fn set_timer(ctx: &Context, t: Timer) -> Result<Value, Error> {
    let uid = bound_uid(ctx)?;
    // Read back by `fired` only: its key order does not reach the wire.
    let payload = json!({"uid": uid, "tag": t.tag}).to_string();
    timers::after(Duration::from_millis(t.ms), payload.as_bytes())?;
    Ok(json!({"timer": "set"}))
}

fn fired(_id: u64, payload: &[u8]) {
    let Ok(t) = serde_json::from_slice::<Value>(payload) else { return };
    let uid = t["uid"].as_str().unwrap_or_default().to_owned();
    if let Err(e) = users::push("onTimer", &json!({"tag": t["tag"]}), &[uid]) {
        kiwano_guest::log::warn(&format!("on-timer: {} {}", e.code, e.msg));
    }
}

fn closed(ctx: &Context) {
    let Some(uid) = ctx.leaving_uid() else { return };
    let left = groups::contains(LOBBY, &uid).and_then(|member| {
        if member {
            groups::remove(LOBBY, &uid)?;
            groups::broadcast_json(LOBBY, "onLeave", &json!({"uid": uid}))?;
        }
        Ok(())
    });
    if let Err(e) = left {
        kiwano_guest::log::warn(&format!("on-session-close: {} {}", e.code, e.msg));
    }
}

fn server() -> Server {
    Server::new()
        .request("conf.echo", |_, v: Value| Ok(json!({"echo": v})))
        .request("conf.fail", |_, _: Value| -> Result<Value, Error> {
            Err(Error::new("CF-001", "conformance failure").with("route", "conf.fail").with("kind", "custom"))
        })
        .request("conf.bind", |ctx, b: Uid| ctx.bind(&b.uid).map(|()| json!({"uid": b.uid})))
        .request("conf.set", |ctx, s: Set| {
            ctx.set(&s.key, &s.value)?;
            Ok(json!({"data": ctx.data()}))
        })
        .request("conf.get", |ctx, k: Key| Ok(Got { value: ctx.get::<Value>(&k.key), key: k.key }))
        .request("conf.push", |ctx, p: Push| ctx.push(&p.route, &p.body).map(|()| json!({"pushed": p.route})))
        .notify("conf.note", |ctx, t: Text| ctx.push("onNote", &json!({"text": t.text})))
        .request("conf.kick", |ctx, _: Value| ctx.kick().map(|()| json!({"kicked": true})))
        .request("conf.join", join)
        .request("conf.leave", leave)
        .request("conf.members", |_, g: Group| Ok(json!({"members": groups::members(&g.group)?})))
        .request("conf.users", |_, p: PushUsers| Ok(json!({"missed": users::push(&p.route, &p.body, &p.uids)?})))
        .request("conf.kickusers", |_, u: Uids| Ok(json!({"missed": users::kick(&u.uids)?})))
        .request("conf.rpc", |_, s: Sum| Ok(json!({"remote": rpc::call::<_, Value>("confback.remote.add", &s)?})))
        .request("conf.rpcfail", |_, _: Value| rpc::call::<_, Value>("confback.remote.fail", &json!({})))
        .request("conf.timer", set_timer)
        .request("conf.metric", record)
        .request("conf.handshake", |ctx, _: Value| {
            let hs = ctx.handshake();
            Ok(Handshake { platform: hs["sys"]["platform"].clone(), user: hs["user"].clone() })
        })
        .remote("remote.add", |s: Sum| Ok(json!({"sum": s.a + s.b})))
        .remote("remote.fail", |_: Value| -> Result<Value, Error> { Err(Error::new("CF-003", "remote refused").with("side", "remote")) })
        .on_timer(fired)
        .on_session_close(closed)
}

kiwano_guest::export!(server);
