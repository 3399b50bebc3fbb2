//! tests/projects/cluster, the `connector` frontend type of the cluster tests: it holds the client connections. Client
//! routes for the `room` type (`room.room.join`, …) are forwarded to the room server; the
//! connector's own routes show the frontend side: `connector.enter` puts the room in the
//! session data (the room type's affinity key), `connector.data` shows the session data (set
//! here or by the room server), `connector.ask` calls a room remote, `connector.pin` pins the
//! session to a server of a type. When a session closes, the connector tells the room
//! (`room.room.leave`), since only frontends see closes, unless the player is already back on a
//! newer session (a reconnect): that one has joined again.
//!
//! Build: `cargo build -p cluster-test-connector --target wasm32-wasip2 --profile guest`.

use std::time::Duration;

use kiwano_guest::{Context, Error, Server, rpc};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Enter {
    room: String,
}

#[derive(Deserialize)]
struct Pin {
    server_type: String,
    server_id: String,
}

#[derive(Deserialize)]
struct Ask {
    route: String,
    body: Value,
    timeout_ms: Option<u64>,
}

fn ask(_: &Context, a: Ask) -> Result<Value, Error> {
    let body = serde_json::to_vec(&a.body)?;
    let out = rpc::call_raw(&a.route, &body, a.timeout_ms.map(Duration::from_millis))?;
    Ok(serde_json::from_slice(&out)?)
}

fn server() -> Server {
    Server::new()
        .request("connector.enter", |ctx, e: Enter| {
            ctx.set("room", &e.room)?;
            Ok(json!({"room": e.room}))
        })
        .request("connector.data", |ctx, _: Value| Ok(Value::Object(ctx.data())))
        .request("connector.pin", |ctx, p: Pin| ctx.pin(&p.server_type, &p.server_id).map(|()| json!("pinned")))
        .request("connector.ask", ask)
        .remote("connector.echo", |v: Value| Ok(json!({"connector got": v})))
        .on_session_close(|ctx| {
            // A player who reconnected and joined again on a newer session stays in the room.
            if let Some(uid) = ctx.leaving_uid() {
                let _ = rpc::call::<_, Value>("room.room.leave", &uid);
            }
        })
}

kiwano_guest::export!(server);

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use kiwano_guest::testing::{self, MockSession};

    use super::*;

    /// The `room.room.leave` calls the connector makes.
    fn leaves() -> Rc<RefCell<Vec<String>>> {
        let calls = Rc::new(RefCell::new(Vec::new()));
        let seen = calls.clone();
        testing::on_rpc(move |_, route, body| {
            assert_eq!(route, "room.room.leave");
            seen.borrow_mut().push(String::from_utf8_lossy(body).into_owned());
            Ok(br#""left""#.to_vec())
        });
        calls
    }

    #[test]
    fn a_closing_session_leaves_the_room_unless_a_newer_one_holds_its_uid() {
        testing::reset();
        let calls = leaves();
        let s = server();
        let old = MockSession::new(1);
        Context::mock(&old).bind("alice").unwrap();
        // The player reconnects: the newer session binds the same uid, then the old one's
        // close arrives.
        let newer = MockSession::new(2);
        Context::mock(&newer).bind("alice").unwrap();
        s.session_closed(&Context::mock(&old));
        assert!(calls.borrow().is_empty(), "the displaced session made the player leave");
        s.session_closed(&Context::mock(&newer));
        assert_eq!(*calls.borrow(), vec![r#""alice""#.to_string()]);
    }
}
