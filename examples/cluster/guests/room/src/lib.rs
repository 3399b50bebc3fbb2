//! examples/cluster, the `room` backend type: Pitaya's cluster demo
//! (`examples/demo/cluster/services/room.go` in Pitaya), route for route and byte for byte, so a
//! Go Pitaya room can stand in for it, or it for one. Clients reach it through the `connector`
//! frontend, which forwards `room.room.*` with the session.
//!
//! - `room.room.entry` (request) binds the session to a fresh UUID → `{"result":"ok"}`;
//! - `room.room.join` (request) adds the uid to the group `room`, pushes `onMembers`
//!   `{"Members":[…]}` to the caller, broadcasts `onNewUser` `{"content":"New user: <session
//!   id>"}` to the group → `{"result":"success"}`;
//! - `room.room.leave` (request) removes the uid from the group → `success` (raw bytes);
//! - `room.room.message` (notify, `{"name","content"}`) broadcasts `onMessage` with it;
//! - `room.room.getsessiondata` (request) → `{"Data":{…}}`;
//! - `room.room.setsessiondata` (request, `{"Data":{…}}`) replaces the session data, which the
//!   host sends back to the frontend → `success` (raw bytes);
//! - `room.room.notifypush` (notify) pushes `testPush` `{"Msg":"test"}` to the caller's uid,
//!   wherever its frontend is;
//! - `room.room.sendrpc` (request, `{"server_id","route","msg"}`) calls `route` on the server
//!   `server_id` with protobuf `RPCMsg{Msg: msg}` → its `RPCRes` as JSON `{"Msg":…}`; a failed
//!   call is `RPC-000` with the cause's message.
//!
//! JSON field names are those Go gives the demo's protobuf types (`Members`, `Msg`, `Data`,
//! `server_id`), empty fields left out as Go's `omitempty` does.
//!
//! Build: `cargo build -p cluster-room --target wasm32-wasip2 --profile guest`.

use kiwano_guest::{Context, Error, InitInfo, Server, groups, rpc, users};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

const ROOM: &str = "room";

/// The demo's `SessionData` (a Go struct without JSON tags).
#[derive(Serialize, Deserialize)]
struct SessionData {
    #[serde(rename = "Data")]
    data: Map<String, Value>,
}

/// `cluster_protos.UserMessage`.
#[derive(Serialize, Deserialize)]
struct UserMessage {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    content: String,
}

/// `cluster_protos.SendRPCMsg`.
#[derive(Deserialize)]
struct SendRpcMsg {
    #[serde(default)]
    server_id: String,
    #[serde(default)]
    route: String,
    #[serde(default)]
    msg: String,
}

/// `cluster_protos.RPCMsg` and `RPCRes`: one string, field 1 (`Msg` in JSON).
#[derive(Clone, PartialEq, Serialize, prost::Message)]
pub struct RpcMsg {
    #[prost(string, tag = "1")]
    #[serde(rename = "Msg", skip_serializing_if = "String::is_empty")]
    pub msg: String,
}

fn uid(ctx: &Context) -> Result<String, Error> {
    ctx.uid().ok_or_else(|| Error::new("RH-001", "session is not bound: call room.room.entry first"))
}

fn entry(ctx: &Context, _: &[u8]) -> Result<Vec<u8>, Error> {
    let uid = uuid::Uuid::new_v4().to_string();
    ctx.bind(&uid).map_err(|e| Error::new("RH-000", e.msg).with("failed", "bind"))?;
    Ok(br#"{"result":"ok"}"#.to_vec())
}

fn join(ctx: &Context, _: &[u8]) -> Result<Vec<u8>, Error> {
    let uid = uid(ctx)?;
    // A player back on a new connection is still a member: joining again is not an error.
    if !groups::contains(ROOM, &uid)? {
        groups::add(ROOM, &uid)?;
    }
    let members = groups::members(ROOM)?;
    ctx.push("onMembers", &json!({ "Members": members }))?;
    groups::broadcast_json(ROOM, "onNewUser", &json!({ "content": format!("New user: {}", ctx.session_id()) }))?;
    Ok(br#"{"result":"success"}"#.to_vec())
}

fn send_rpc(_: &Context, req: SendRpcMsg) -> Result<RpcMsg, Error> {
    let body = prost::Message::encode_to_vec(&RpcMsg { msg: req.msg });
    let out = rpc::call_to_raw(&req.server_id, &req.route, &body, None).map_err(|e| Error::new("RPC-000", e.msg))?;
    <RpcMsg as prost::Message>::decode(&out[..]).map_err(|e| Error::new("RPC-000", format!("invalid RPCRes: {e}")))
}

fn server() -> Server {
    Server::new()
        .request_raw("room.entry", entry)
        .request_raw("room.join", join)
        .request_raw("room.leave", |ctx, _| {
            groups::remove(ROOM, &uid(ctx)?)?;
            Ok(b"success".to_vec())
        })
        .notify("room.message", |_, msg: UserMessage| groups::broadcast_json(ROOM, "onMessage", &msg))
        .request("room.getsessiondata", |ctx, _: Value| Ok(SessionData { data: ctx.data() }))
        .request_raw("room.setsessiondata", |ctx, body| {
            let data: SessionData = serde_json::from_slice(body).map_err(|e| Error::bad_request(e.to_string()))?;
            ctx.set_data(&data.data)?;
            Ok(b"success".to_vec())
        })
        .notify_raw("room.notifypush", |ctx, _| {
            users::push("testPush", &json!({"Msg": "test"}), &[uid(ctx)?])?;
            Ok(())
        })
        .request("room.sendrpc", send_rpc)
        .on_init(|_: &InitInfo| {
            let _ = groups::create(ROOM, None);
            Ok(())
        })
}

kiwano_guest::export!(server);

#[cfg(test)]
mod tests {
    use kiwano_guest::testing::{self, MockSession};

    use super::*;

    #[test]
    fn send_rpc_carries_protobuf_and_answers_json() {
        testing::reset();
        testing::on_rpc(|server, route, body| {
            assert_eq!((server, route), (Some("connector-1"), "connector.connectorremote.remotefunc"));
            assert_eq!(body, b"\x0a\x02hi");
            Ok(b"\x0a\x05hi yo".to_vec())
        });
        let s = server();
        let got: Value = s
            .call_json(&MockSession::new(1), "room.sendrpc", &json!({"server_id": "connector-1", "route": "connector.connectorremote.remotefunc", "msg": "hi"}))
            .unwrap();
        assert_eq!(got, json!({"Msg": "hi yo"}));
    }

    #[test]
    fn join_needs_a_bound_session() {
        testing::reset();
        let e = server().handle(&Context::mock(&MockSession::new(1)), "room.join", b"{}").unwrap_err();
        assert_eq!(e.code, "RH-001");
    }
}
