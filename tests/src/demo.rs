//! Pitaya's cluster demo contract (`examples/demo/cluster` in Pitaya; examples/cluster here), as
//! its players see it: what a test checks of any cluster that claims to serve it — Kiwano
//! servers, Go Pitaya servers, or a mix.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{Client, err_json, ok_json};
use kiwano_protocol::message::MessageType;

const WAIT: Duration = Duration::from_secs(15);

/// Requests `route` and returns the raw body of its (successful) response.
pub async fn ok_raw(c: &mut Client, route: &str, body: &[u8]) -> Vec<u8> {
    let r = c.request(route, body).await.unwrap();
    assert!(!r.error, "{route}: {}", String::from_utf8_lossy(&r.data));
    r.data.to_vec()
}

/// Reads messages until one on `route` arrives; panics if the connection ends first.
pub async fn next_on(c: &mut Client, route: &str) -> Value {
    loop {
        let m = tokio::time::timeout(WAIT, c.next_message())
            .await
            .unwrap_or_else(|_| panic!("no {route} within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("waiting for {route}: {e}"));
        if m.route == route {
            return serde_json::from_slice(&m.data).unwrap_or_else(|e| panic!("{route}: {e}: {:?}", String::from_utf8_lossy(&m.data)));
        }
    }
}

/// Requests `route` and reads until its response and a push on each of `pushes` arrived, in
/// whatever order (across processes a backend's pushes travel apart from its response, as in
/// Pitaya); the response's body and the pushes' JSON, in the order of `pushes`.
pub async fn request_with_pushes(c: &mut Client, route: &str, body: &[u8], pushes: &[&str]) -> (Vec<u8>, Vec<Value>) {
    let id = c.send_request(route, body).await.unwrap();
    let mut response = None;
    let mut got: Vec<Option<Value>> = vec![None; pushes.len()];
    while response.is_none() || got.iter().any(Option::is_none) {
        let m = tokio::time::timeout(WAIT, c.next_message())
            .await
            .unwrap_or_else(|_| panic!("{route}: response or {pushes:?} missing after {WAIT:?}"))
            .unwrap_or_else(|e| panic!("{route}: {e}"));
        if m.kind == MessageType::Response && m.id == id {
            assert!(!m.error, "{route}: {}", String::from_utf8_lossy(&m.data));
            response = Some(m.data.to_vec());
        } else if let Some(i) = pushes.iter().position(|p| *p == m.route) {
            got[i] = Some(serde_json::from_slice(&m.data).expect("a JSON push"));
        }
    }
    (response.unwrap_or_default(), got.into_iter().flatten().collect())
}

/// `room.room.entry` then `room.room.join`: the player's onMembers, and the `New user: <id>`
/// the room broadcast for them.
pub async fn enter_and_join(c: &mut Client) -> (Value, String) {
    assert_eq!(ok_raw(c, "room.room.entry", b"{}").await, br#"{"result":"ok"}"#);
    let (answer, pushes) = request_with_pushes(c, "room.room.join", b"{}", &["onMembers", "onNewUser"]).await;
    assert_eq!(answer, br#"{"result":"success"}"#);
    (pushes[0].clone(), pushes[1]["content"].as_str().expect("content").to_owned())
}

/// The whole contract, with two players `first` and `second` (handshaken, on the same
/// frontend or two of one type); `remote_server` is the id of a connector whose remote
/// `connector.connectorremote.remotefunc` the room calls.
///
/// # Panics
/// On any difference from the contract.
pub async fn demo_contract(first: &mut Client, second: &mut Client, remote_server: &str) {
    // Session data on the frontend, in the demo's shapes; the dictionary is the demo's.
    let set = ok_json(first, "connector.setsessiondata", json!({"Data": {"level": 3}})).await;
    assert_eq!(set, json!({"code": 200, "msg": "success"}));
    assert_eq!(ok_json(first, "connector.getsessiondata", json!({})).await, json!({"Data": {"level": 3}}));

    // entry binds a fresh UUID; join pushes the members and broadcasts the newcomer.
    let (members, _) = enter_and_join(first).await;
    let alice = members["Members"][0].as_str().expect("a member").to_owned();
    assert_eq!(members, json!({"Members": [alice]}));
    assert!(uuid::Uuid::parse_str(&alice).is_ok(), "uid {alice} is not a UUID");

    // A second player (on another frontend, if there are two): the broadcast reaches both.
    let (members, new_user) = enter_and_join(second).await;
    let mut both: Vec<&str> = members["Members"].as_array().expect("Members").iter().filter_map(Value::as_str).collect();
    both.sort_unstable();
    assert!(both.len() == 2 && both.contains(&alice.as_str()), "{members}");
    assert_eq!(next_on(first, "onNewUser").await, json!({"content": new_user}));
    assert!(new_user.strip_prefix("New user: ").is_some_and(|id| id.parse::<u64>().is_ok()), "{new_user}");

    // A chat message (notify) reaches both, each through its own frontend.
    second.notify("room.room.message", br#"{"name":"bob","content":"hi"}"#).await.unwrap();
    for c in [&mut *first, &mut *second] {
        assert_eq!(next_on(c, "onMessage").await, json!({"name": "bob", "content": "hi"}));
    }

    // The room sets the session data; the frontend has it (sys.pushsession) before the answer.
    assert_eq!(ok_raw(first, "room.room.setsessiondata", br#"{"Data":{"gold":10}}"#).await, b"success");
    assert_eq!(ok_json(first, "connector.getsessiondata", json!({})).await, json!({"Data": {"gold": 10}}));
    assert_eq!(ok_json(first, "room.room.getsessiondata", json!({})).await, json!({"Data": {"gold": 10}}));

    // A push to the caller's uid through NATS.
    first.notify("room.room.notifypush", b"{}").await.unwrap();
    assert_eq!(next_on(first, "testPush").await, json!({"Msg": "test"}));

    // The room calls a connector's remote by id (protobuf RPCMsg → RPCRes).
    let r = ok_json(first, "room.room.sendrpc", json!({"server_id": remote_server, "route": "connector.connectorremote.remotefunc", "msg": "hello"})).await;
    assert_eq!(r, json!({"Msg": "hello"}));
    let e = err_json(first, "room.room.sendrpc", json!({"server_id": "connector-9", "route": "connector.connectorremote.remotefunc", "msg": "x"})).await;
    assert_eq!(e.code, "RPC-000", "{e:?}");

    // Leaving: the others no longer hear of the player.
    assert_eq!(ok_raw(first, "room.room.leave", b"{}").await, b"success");
    second.notify("room.room.message", br#"{"name":"bob","content":"bye"}"#).await.unwrap();
    assert_eq!(next_on(second, "onMessage").await, json!({"name": "bob", "content": "bye"}));
    first.notify("room.room.message", br#"{"name":"alice","content":"marker"}"#).await.unwrap();
    assert_eq!(next_on(second, "onMessage").await, json!({"name": "alice", "content": "marker"}));
}
