//! Pitaya's chat demo (`examples/demo/chat` in Pitaya), unchanged from a client's point of view:
//!
//! - `room.join` (request): binds the session id as uid, pushes `onMembers` `{"members":[...]}`
//!   (the members before the joiner) to the joiner, broadcasts `onNewUser`
//!   `{"content":"New user: <uid>"}` to the group `room`, adds the joiner and answers
//!   `{"code":0,"result":"success"}`; a failed bind answers `RH-000` with `{"failed":"bind"}`.
//! - `room.message` (notify `{"name","content"}`): broadcast as `onMessage` to the group.
//! - A member leaves the group when its session closes.
//!
//! Build: `cargo build -p chat-guest --target wasm32-wasip2 --profile guest`
//! (`kiwano run examples/chat` does it for you).

use kiwano_guest::{Context, Error, Server, groups};
use serde::{Deserialize, Serialize};

const ROOM: &str = "room";

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct JoinResponse {
    code: i32,
    result: String,
}

#[derive(Serialize)]
struct AllMembers {
    members: Vec<String>,
}

#[derive(Serialize)]
struct NewUser {
    content: String,
}

#[derive(Serialize, Deserialize)]
struct UserMessage {
    name: String,
    content: String,
}

fn join(ctx: &Context, _body: serde_json::Value) -> Result<JoinResponse, Error> {
    let uid = ctx.session_id().to_string();
    ctx.bind(&uid).map_err(|e| Error::new("RH-000", e.msg).with("failed", "bind"))?;
    let members = groups::members(ROOM)?;
    ctx.push("onMembers", &AllMembers { members })?;
    groups::broadcast_json(ROOM, "onNewUser", &NewUser { content: format!("New user: {uid}") })?;
    groups::add(ROOM, &uid)?;
    Ok(JoinResponse { code: 0, result: "success".into() })
}

fn message(_ctx: &Context, msg: UserMessage) -> Result<(), Error> {
    groups::broadcast_json(ROOM, "onMessage", &msg)
}

fn leave(ctx: &Context) {
    // Not if a newer session holds the uid now: it joined on its own.
    if let Some(uid) = ctx.leaving_uid() {
        // Not a member if it never joined.
        let _ = groups::remove(ROOM, &uid);
    }
}

fn server() -> Server {
    Server::new()
        .request("room.join", join)
        .notify("room.message", message)
        .on_session_close(leave)
        .on_init(|_| {
            // Every instance creates it; the first one wins.
            let _ = groups::create(ROOM, None);
            Ok(())
        })
}

kiwano_guest::export!(server);

#[cfg(test)]
mod tests {
    use kiwano_guest::testing::{self, MockSession};
    use serde_json::json;

    use super::*;

    #[test]
    fn join_then_message() {
        testing::reset();
        let s = server();
        s.init(&kiwano_guest::InitInfo { server_type: "chat".into(), server_id: "chat-1".into(), instance: 0, config: "{}".into() })
            .unwrap();
        let a = MockSession::new(1);
        let r: JoinResponse = s.call_json(&a, "room.join", &json!({})).unwrap();
        assert_eq!(r, JoinResponse { code: 0, result: "success".into() });
        assert_eq!(a.pushes(), vec![("onMembers".to_string(), br#"{"members":[]}"#.to_vec())]);
        let b = MockSession::new(2);
        let _: JoinResponse = s.call_json(&b, "room.join", &json!({})).unwrap();
        assert_eq!(b.pushes()[0], ("onMembers".to_string(), br#"{"members":["1"]}"#.to_vec()));
        assert_eq!(a.pushes()[1], ("onNewUser".to_string(), br#"{"content":"New user: 2"}"#.to_vec()));
        s.call_json::<()>(&b, "room.message", &json!({"name": "bob", "content": "hi"})).unwrap();
        let msg = ("onMessage".to_string(), br#"{"name":"bob","content":"hi"}"#.to_vec());
        assert_eq!(a.pushes()[2], msg);
        assert_eq!(b.pushes()[1], msg);
        // A second join fails to bind: RH-000 with {"failed":"bind"}.
        let e = s.call_json::<JoinResponse>(&a, "room.join", &json!({})).unwrap_err();
        assert_eq!((e.code.as_str(), e.metadata.clone()), ("RH-000", vec![("failed".to_string(), "bind".to_string())]));
        s.session_closed(&kiwano_guest::Context::mock(&a));
        assert_eq!(testing::group_members("room"), Some(vec!["2".to_string()]));
    }

    #[test]
    fn a_displaced_session_leaves_the_room_to_the_newer_one() {
        testing::reset();
        let s = server();
        s.init(&kiwano_guest::InitInfo { server_type: "chat".into(), server_id: "chat-1".into(), instance: 0, config: "{}".into() })
            .unwrap();
        let old = MockSession::new(1);
        let _: JoinResponse = s.call_json(&old, "room.join", &json!({})).unwrap();
        // The same uid bound by a newer session (in the chat the uid is the session id, so
        // this is what a game binding a player id would see after a reconnect).
        let newer = MockSession::new(2);
        testing::bind_user("1", &newer);
        assert!(old.displaced());
        s.session_closed(&kiwano_guest::Context::mock(&old));
        assert_eq!(testing::group_members("room"), Some(vec!["1".to_string()]), "still in the room");
    }
}
