//! tests/projects/cluster, the `room` backend type of the cluster tests: the chat room, reached by clients through the
//! `connector` frontend (`room.room.join`, `room.room.message`), plus routes that show what a
//! backend can do with a forwarded session: set its data (`room.room.setdata`), kick it
//! (`room.room.kickme`) or a uid anywhere (`room.room.kickuser`), call the connector (`room.room.ask`), fail with a custom error
//! (`room.room.fail`), tell which instance ran it (`room.room.whoami`).
//!
//! Build: `cargo build -p cluster-test-room --target wasm32-wasip2 --profile guest`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kiwano_guest::{Context, Error, InitInfo, Server, groups, rpc, users};
use serde::Deserialize;
use serde_json::{Value, json};

const ROOM: &str = "room";
static ME: OnceLock<(String, u32)> = OnceLock::new();

#[derive(Deserialize)]
struct Join {
    name: String,
}

fn join(ctx: &Context, req: Join) -> Result<Value, Error> {
    ctx.bind(&req.name).map_err(|e| Error::new("RH-000", e.msg).with("failed", "bind"))?;
    let _ = groups::create(ROOM, None);
    let members = groups::members(ROOM)?;
    ctx.push("onMembers", &json!({ "members": members }))?;
    groups::broadcast_json(ROOM, "onNewUser", &json!({ "content": format!("New user: {}", req.name) }))?;
    // A player back on a new connection is still a member: joining again is not an error.
    if !groups::contains(ROOM, &req.name)? {
        groups::add(ROOM, &req.name)?;
    }
    Ok(json!({"code": 0, "result": "success"}))
}

/// Pitaya's chat message, fields in its order.
#[derive(Deserialize, serde::Serialize)]
struct UserMessage {
    name: String,
    content: String,
}

#[derive(Deserialize)]
struct SetData {
    key: String,
    value: Value,
}

#[derive(Deserialize)]
struct Ask {
    route: String,
    body: Value,
}

fn whoami(ctx: &Context) -> Value {
    let (server, instance) = ME.get().cloned().unwrap_or_default();
    json!({"server": server, "instance": instance, "session": ctx.session_id(), "room": ctx.get::<Value>("room")})
}

fn spin(ms: u64) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(ms) {
        std::hint::spin_loop();
    }
}

fn server() -> Server {
    Server::new()
        .request("room.join", join)
        .notify("room.message", |_, msg: UserMessage| groups::broadcast_json(ROOM, "onMessage", &msg))
        .request("room.setdata", |ctx, s: SetData| {
            ctx.set(&s.key, &s.value)?;
            Ok(json!({"set": s.key}))
        })
        .request("room.kickme", |ctx, _: Value| ctx.kick().map(|()| json!("kicked")))
        // Kicks a player by uid, wherever their frontend is (`pitaya/<type>/user/<uid>/kick`).
        .request("room.kickuser", |_, uid: String| users::kick(&[uid]))
        .request("room.whoami", |ctx, _: Value| Ok(whoami(ctx)))
        .request("room.ask", |_, a: Ask| rpc::call::<Value, Value>(&a.route, &a.body))
        .request("room.fail", |ctx, _: Value| {
            Err::<Value, _>(Error::new("RM-001", "room refused").with("session", ctx.session_id().to_string()))
        })
        .remote("room.leave", |uid: String| {
            let _ = groups::remove(ROOM, &uid);
            Ok(json!("left"))
        })
        .remote("room.echo", |v: Value| Ok(json!({"room got": v})))
        .remote("room.slow", |ms: u64| {
            spin(ms);
            Ok(json!("slow done"))
        })
        .remote("room.fail", |_: Value| Err::<Value, _>(Error::new("RM-002", "remote refused").with("why", "asked to")))
        .on_init(|info: &InitInfo| {
            let _ = ME.set((info.server_id.clone(), info.instance));
            let _ = groups::create(ROOM, None);
            Ok(())
        })
}

kiwano_guest::export!(server);
