//! The test suite's guest (server type `testbed`): one handler per behaviour the wire tests
//! check. Control inputs are plain text bodies (`"25"`, `"alice"`) or small JSON objects.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use kiwano_guest::{Context, Error, InitInfo, Server, groups, log, rpc, timers, users};
use serde::Deserialize;
use serde_json::{Value, json};

static INSTANCE: AtomicU32 = AtomicU32::new(u32::MAX);
/// `test.metric`'s own metrics.
static REQUESTS: kiwano_guest::metrics::Counter = kiwano_guest::metrics::Counter::new("testbed_requests", "test.metric requests, by kind", &["kind"]);
/// `test.metric`'s counter in a build with `TESTBED_METRIC_SHARD` set: one label more (a new
/// version changing a metric).
static REQUESTS_SHARDED: kiwano_guest::metrics::Counter =
    kiwano_guest::metrics::Counter::new("testbed_requests", "test.metric requests, by kind", &["kind", "shard"]);
static PAYLOAD: kiwano_guest::metrics::Histogram =
    kiwano_guest::metrics::Histogram::new("testbed_payload_bytes", "test.metric payload sizes", &[], &[4.0, 64.0]);
static SERVER_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

fn number(body: &[u8]) -> u64 {
    text(body).trim().parse().unwrap_or(0)
}

fn spin(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

fn raw(f: fn(&Context, &[u8]) -> Result<Vec<u8>, Error>) -> impl Fn(&Context, &[u8]) -> Result<Vec<u8>, Error> {
    f
}

#[derive(Deserialize)]
struct GroupCmd {
    op: String,
    name: String,
    #[serde(default)]
    uid: String,
    ttl_ms: Option<u64>,
    #[serde(default)]
    route: String,
    #[serde(default)]
    body: String,
}

fn group(_: &Context, c: GroupCmd) -> Result<Value, Error> {
    let n = c.name.as_str();
    Ok(match c.op.as_str() {
        "create" => groups::create(n, c.ttl_ms.map(Duration::from_millis)).map(|()| json!("ok"))?,
        "delete" => groups::delete(n).map(|()| json!("ok"))?,
        "add" => groups::add(n, &c.uid).map(|()| json!("ok"))?,
        "remove" => groups::remove(n, &c.uid).map(|()| json!("ok"))?,
        "remove_all" => groups::remove_all(n).map(|()| json!("ok"))?,
        "contains" => json!(groups::contains(n, &c.uid)?),
        "members" => json!(groups::members(n)?),
        "count" => json!(groups::count(n)?),
        "renew" => groups::renew(n).map(|()| json!("ok"))?,
        "broadcast" => groups::broadcast(n, &c.route, c.body.as_bytes()).map(|()| json!("ok"))?,
        other => return Err(Error::bad_request(format!("unknown group op {other}"))),
    })
}

#[derive(Deserialize)]
struct PushCmd {
    route: String,
    body: String,
    uids: Vec<String>,
}

#[derive(Deserialize)]
struct RpcCmd {
    route: String,
    body: String,
    server_id: Option<String>,
    timeout_ms: Option<u64>,
}

fn call_rpc(_: &Context, c: RpcCmd) -> Result<String, Error> {
    let timeout = c.timeout_ms.map(Duration::from_millis);
    let out = match &c.server_id {
        Some(id) => rpc::call_to_raw(id, &c.route, c.body.as_bytes(), timeout)?,
        None => rpc::call_raw(&c.route, c.body.as_bytes(), timeout)?,
    };
    Ok(text(&out))
}

#[derive(Deserialize)]
struct TimerCmd {
    ms: u64,
    #[serde(default)]
    every: bool,
    uid: String,
    tag: String,
    /// Spin this long after setting it, in the same call (the timer comes due meanwhile).
    #[serde(default)]
    spin_ms: u64,
    /// Then cancel it, still in the same call.
    #[serde(default)]
    cancel: bool,
}

fn set_timer(_: &Context, c: TimerCmd) -> Result<u64, Error> {
    let payload = json!({"uid": c.uid, "tag": c.tag}).to_string();
    let id = if c.every {
        timers::every(Duration::from_millis(c.ms), payload.as_bytes())?
    } else {
        timers::after(Duration::from_millis(c.ms), payload.as_bytes())?
    };
    spin(Duration::from_millis(c.spin_ms));
    if c.cancel {
        timers::cancel(id);
    }
    Ok(id)
}

fn on_timer(id: u64, payload: &[u8]) {
    // A handler slower than its timer's period.
    if let Some(ms) = payload.strip_prefix(b"busy:") {
        spin(Duration::from_millis(number(ms)));
        return;
    }
    let Ok(v) = serde_json::from_slice::<Value>(payload) else { return };
    let uid = v["uid"].as_str().unwrap_or_default().to_owned();
    let tag = v["tag"].as_str().unwrap_or_default();
    let _ = users::push_raw("onTimer", format!("{tag}#{id}").as_bytes(), &[uid]);
}

/// `test.tx`: makes host effects in this order — session data (`set`), joining a group
/// (`join`: created if missing, the bound uid added), a push to the session (`push`, on
/// `onTx`), a push to users (`users`, on `onTxUsers`), a timer (`timer_ms`, firing `onTimer` to
/// the bound uid with tag `tx`), a kick (`kick`) — then ends as `then` says: `ok`, `error` (its
/// own error `RH-TX`), `trap`, `loop` (past its deadline) or `oom`. Answers the session data and
/// the group's members as the call sees them.
#[derive(Deserialize)]
struct TxCmd {
    #[serde(default)]
    set: serde_json::Map<String, Value>,
    join: Option<String>,
    push: Option<String>,
    #[serde(default)]
    users: Vec<String>,
    timer_ms: Option<u64>,
    #[serde(default)]
    kick: bool,
    then: String,
}

fn tx(ctx: &Context, c: TxCmd) -> Result<Value, Error> {
    for (k, v) in &c.set {
        ctx.set(k, v)?;
    }
    let uid = ctx.uid().unwrap_or_default();
    let members = match &c.join {
        Some(g) => {
            match groups::create(g, None) {
                Err(e) if e.msg == "group already exists" => {}
                r => r?,
            }
            groups::add(g, &uid)?;
            groups::members(g)?
        }
        None => Vec::new(),
    };
    if let Some(p) = &c.push {
        ctx.push_raw("onTx", p.as_bytes())?;
    }
    if !c.users.is_empty() {
        users::push_raw("onTxUsers", b"hi", &c.users)?;
    }
    if let Some(ms) = c.timer_ms {
        timers::after(Duration::from_millis(ms), json!({"uid": uid, "tag": "tx"}).to_string().as_bytes())?;
    }
    if c.kick {
        ctx.kick()?;
    }
    let seen = json!({"data": Value::Object(ctx.data()), "members": members});
    match c.then.as_str() {
        "ok" => Ok(seen),
        "error" => Err(Error::new("RH-TX", "refused after its effects")),
        "trap" => panic!("testbed trap after its effects"),
        "loop" => loop {
            std::hint::spin_loop();
        },
        "oom" => {
            let mut hog: Vec<Vec<u8>> = Vec::new();
            loop {
                hog.push(vec![1u8; 1 << 20]);
            }
        }
        other => Err(Error::bad_request(format!("unknown ending {other}"))),
    }
}

/// Calls this instance has served to `test.calls`: 1 every time on a fresh instance per call.
static CALLS: AtomicU32 = AtomicU32::new(0);

#[derive(Deserialize)]
struct Sum {
    a: i64,
    b: i64,
}

fn handlers(s: Server) -> Server {
    s.request_raw("test.echo", |_, b| Ok(b.to_vec()))
        // The guest's own metrics: a request of kind <body> and its size; the host's error as is.
        .request_raw("test.metric", |_, b| {
            match option_env!("TESTBED_METRIC_SHARD") {
                Some(shard) => REQUESTS_SHARDED.inc(&[&text(b), shard])?,
                None => REQUESTS.inc(&[&text(b)])?,
            }
            PAYLOAD.observe(&[], b.len() as f64)?;
            Ok(b"counted".to_vec())
        })
        // Which build this is (hot reload tests build the testbed again with TESTBED_VERSION).
        .request_raw("test.version", |_, _| Ok(option_env!("TESTBED_VERSION").unwrap_or("1").as_bytes().to_vec()))
        .request_raw(
            "test.error",
            raw(|_, _| Err(Error::new("RH-001", "custom failure").with("failed", "bind").with("route", "test.error"))),
        )
        .request_raw("test.errnocode", |_, _| Err(Error::new("", "no code")))
        .request_raw("test.trap", |_, _| panic!("testbed trap requested"))
        .request_raw("test.loop", |_, _| loop {
            std::hint::spin_loop();
        })
        .request_raw("test.oom", |_, _| {
            let mut hog: Vec<Vec<u8>> = Vec::new();
            loop {
                hog.push(vec![1u8; 1 << 20]);
            }
        })
        .request_raw("test.big", |_, b| Ok(vec![b'x'; number(b) as usize]))
        .request_raw("test.spin", |_, b| {
            spin(Duration::from_micros(number(b)));
            Ok(b.to_vec())
        })
        .request_raw("test.instance", |_, _| Ok(INSTANCE.load(Ordering::Relaxed).to_string().into_bytes()))
        .request_raw("test.bind", |ctx, b| ctx.bind(&text(b)).map(|()| b"bound".to_vec()))
        .request_raw("test.uid", |ctx, _| Ok(ctx.uid().unwrap_or_default().into_bytes()))
        .request_raw("test.get", |ctx, b| Ok(ctx.get_raw(&text(b)).unwrap_or_else(|| "none".into()).into_bytes()))
        .request_raw("test.set", |ctx, b| {
            let t = text(b);
            let (k, v) = t.split_once('=').unwrap_or((&t, "null"));
            let v: Value = serde_json::from_str(v).map_err(|e| Error::bad_request(format!("session data value for {k:?} is not JSON: {e}")))?;
            ctx.set(k, &v).map(|()| b"set".to_vec())
        })
        .request_raw("test.data", |ctx, _| Ok(Value::Object(ctx.data()).to_string().into_bytes()))
        .request_raw("test.setdata", |ctx, b| match serde_json::from_slice::<Value>(b) {
            Ok(Value::Object(m)) => ctx.set_data(&m).map(|()| b"set".to_vec()),
            _ => Err(Error::new("PIT-400", "session data must be a JSON object")),
        })
        .request_raw("test.push", |ctx, b| ctx.push_raw("onPush", b).map(|()| b"pushed".to_vec()))
        .request_raw("test.kick", |ctx, _| ctx.kick().map(|()| b"kicked".to_vec()))
        .request_raw("test.handshake", |ctx, _| Ok(ctx.handshake().to_string().into_bytes()))
        .request_raw("test.addr", |ctx, _| Ok(ctx.remote_address().into_bytes()))
        .request_raw("test.log", |_, b| {
            log::info(&format!("guest says {}", text(b)));
            log::log(kiwano_guest::Level::Warn, "structured", &[("who".into(), text(b))]);
            println!("stdout says {}", text(b));
            eprintln!("stderr says {}", text(b));
            Ok(Vec::new())
        })
        .request_raw("test.sessionid", |ctx, _| Ok(ctx.session_id().to_string().into_bytes()))
        .request_raw("test.incr", |ctx, _| {
            let n: u64 = ctx.get("count").unwrap_or(0) + 1;
            ctx.set("count", &n)?;
            Ok(n.to_string().into_bytes())
        })
        .notify_raw("test.notify", |ctx, b| ctx.push_raw("onNotify", b))
        .request("test.group", group)
        .request("test.flood", flood)
        .request("test.tx", tx)
        // A call-context handle the host never gave (`from_handle` of any number): the
        // component model refuses it, the call traps.
        .request_raw("test.forged", |_, b| {
            // SAFETY: deliberately unsound: the handle is made up, which is what is tested.
            let forged = unsafe { kiwano_guest::CallContext::from_handle(number(b) as u32) };
            let uid = forged.uid();
            std::mem::forget(forged);
            Ok(uid.unwrap_or_default().into_bytes())
        })
        // Host functions called with arguments they refuse: each answers an error, no trap.
        .request_raw("test.badargs", |ctx, _| {
            let mut seen = Vec::new();
            let mut note = |what: &str, r: Result<String, Error>| seen.push(format!("{what}: {}", r.map_or_else(|e| format!("{} {}", e.code, e.msg), |ok| format!("ok {ok}"))));
            note("group add empty uid", groups::add("nope", "").map(|()| String::new()));
            note("group of an empty name", groups::members("").map(|m| format!("{m:?}")));
            note("rpc to a route without a type", rpc::call_raw("nonsense", b"", None).map(|b| text(&b)));
            note("push on a 300-byte route", ctx.push_raw(&"r".repeat(300), b"x").map(|()| String::new()));
            note("users push on a 300-byte route", users::push_raw(&"r".repeat(300), b"x", &["u".into()]).map(|m| format!("{m:?}")));
            note("bind an empty uid", ctx.bind("").map(|()| String::new()));
            note("timer of u64::MAX ms", timers::after(Duration::from_millis(u64::MAX), b"x").map(|id| id.to_string()));
            Ok(seen.join("\n").into_bytes())
        })
        .request_raw("test.calls", |_, _| Ok((CALLS.fetch_add(1, Ordering::Relaxed) + 1).to_string().into_bytes()))
        .request_raw("test.recurse", |_, b| Ok(depth(number(b)).to_string().into_bytes()))
        .request("test.pushusers", |_, c: PushCmd| users::push_raw(&c.route, c.body.as_bytes(), &c.uids))
        .request("test.kickusers", |_, uids: Vec<String>| users::kick(&uids))
        .request("test.rpc", call_rpc)
        .request("test.timer", set_timer)
        // Several timers set in one call: their delays are exact relative to each other.
        .request("test.timers", |ctx, all: Vec<TimerCmd>| all.into_iter().map(|c| set_timer(ctx, c)).collect::<Result<Vec<u64>, Error>>())
        .request("test.cancel", |_, id: u64| Ok(timers::cancel(id)))
        // Blocks in WASI (a monotonic-clock pollable) for the given milliseconds.
        .request_raw("test.sleep", |_, b| {
            std::thread::sleep(Duration::from_millis(number(b)));
            Ok(b"slept".to_vec())
        })
        // Prints the given number of lines to stdout.
        .request_raw("test.print", |_, b| {
            for i in 0..number(b) {
                println!("line {i}");
            }
            Ok(b"printed".to_vec())
        })
        // An error whose message has the given number of bytes.
        .request_raw("test.bigerror", |_, b| Err(Error::new("RH-002", "e".repeat(number(b) as usize))))
        // A timer every `period` ms whose handler spins `busy` ms.
        .request("test.busytimer", |_, (period, busy): (u64, u64)| {
            timers::every(Duration::from_millis(period), format!("busy:{busy}").as_bytes())
        })
        // Sets the given number of one-hour timers; how many were set, and the first error.
        .request_raw("test.timerstorm", |_, b| {
            let mut set = 0;
            for _ in 0..number(b) {
                match timers::after(Duration::from_secs(3600), b"storm") {
                    Ok(_) => set += 1,
                    Err(e) => return Ok(format!("{set} set, then {}: {}", e.code, e.msg).into_bytes()),
                }
            }
            Ok(format!("{set} set").into_bytes())
        })
        // What the sandbox refuses: a UDP socket, a file.
        .request_raw("test.udp", |_, _| match std::net::UdpSocket::bind("0.0.0.0:0") {
            Ok(_) => Ok(b"bound".to_vec()),
            Err(e) => Err(Error::new("RH-003", e.to_string())),
        })
        .request_raw("test.readfile", |_, b| match std::fs::read(text(b)) {
            Ok(bytes) => Ok(bytes),
            Err(e) => Err(Error::new("RH-004", e.to_string())),
        })
}

/// `test.flood`: `{"what","n"}` — does `n` pushes, RPCs, group operations, timers or log lines
/// in one call; answers how many went through and the first call-limit error, if any.
#[derive(serde::Deserialize)]
struct Flood {
    what: String,
    n: u32,
}

/// Recursion `n` deep, each frame holding some stack (kept by `black_box`).
fn depth(n: u64) -> u64 {
    let frame = std::hint::black_box([n; 16]);
    if n == 0 { 0 } else { std::hint::black_box(depth(n - 1) + frame[3] - n + 1) }
}

fn flood(ctx: &Context, f: Flood) -> Result<Value, Error> {
    let mut done = 0;
    for i in 0..f.n {
        let r = match f.what.as_str() {
            "push" => ctx.push_raw("onFlood", i.to_string().as_bytes()),
            "rpc" => rpc::call_to_raw(SERVER_ID.get().map_or("", String::as_str), "testbed.remote.whoami", b"", None).map(drop),
            // Any answer but the limit's is a group operation that went through.
            "group" => match groups::contains("flood", "x") {
                Err(e) if e.msg.starts_with("call limit") => Err(e),
                _ => Ok(()),
            },
            "timer" => match timers::after(Duration::from_secs(600), b"flood") {
                Ok(0) | Err(_) => Err(Error::new("TIMER", "not set")),
                Ok(id) => {
                    timers::cancel(id);
                    Ok(())
                }
            },
            "log" => {
                log::info(&format!("flood line {i}"));
                Ok(())
            }
            other => return Err(Error::bad_request(format!("unknown flood {other}"))),
        };
        match r {
            Ok(()) => done += 1,
            Err(e) => return Ok(json!({"done": done, "error": format!("{} {}", e.code, e.msg)})),
        }
    }
    Ok(json!({"done": done}))
}

fn remotes(s: Server) -> Server {
    s.remote("remote.add", |s: Sum| Ok(json!({"sum": s.a + s.b})))
        .remote_raw("remote.fail", |_| Err(Error::new("RM-042", "remote refused").with("why", "test")))
        .remote_raw("remote.slow", |b| {
            spin(Duration::from_millis(number(b)));
            Ok(b"slow done".to_vec())
        })
        .remote_raw("remote.cycle", |b| {
            // Calls itself: only the hop limit ends the cycle.
            let me = SERVER_ID.get().cloned().unwrap_or_default();
            rpc::call_to_raw(&me, "testbed.remote.cycle", b, None)
        })
        .remote_raw("remote.whoami", |_| Ok(format!("remote instance {}", INSTANCE.load(Ordering::Relaxed)).into_bytes()))
}

fn server() -> Server {
    remotes(handlers(Server::new()))
        .on_init(|info: &InitInfo| {
            if option_env!("TESTBED_FAIL_INIT").is_some() {
                return Err(Error::new("TB-INIT", "this build refuses to start (TESTBED_FAIL_INIT)"));
            }
            INSTANCE.store(info.instance, Ordering::Relaxed);
            let _ = SERVER_ID.set(info.server_id.clone());
            log::debug(&format!("init {} instance {}", info.server_type, info.instance));
            Ok(())
        })
        .on_shutdown(|| log::info("testbed shutting down"))
        .on_session_close(|ctx| log::info(&format!("session {} closed, uid {:?}", ctx.session_id(), ctx.uid())))
        .on_timer(on_timer)
}

kiwano_guest::export!(server);
