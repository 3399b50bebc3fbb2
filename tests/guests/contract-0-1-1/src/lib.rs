//! A guest of the `kiwano:server@0.1.1` contract (`wit/server.wit` here is a frozen copy of it),
//! written on the raw bindings: the host, now at a later 0.1.x, must run it unchanged, since
//! every change since was additive.
//!
//! `old.echo` answers `<uid or -> <body>`, after a log line (an import of 0.1.1).

#[allow(missing_docs, clippy::all, unsafe_op_in_unsafe_fn)]
mod bindings {
    wit_bindgen::generate!({ path: "wit", world: "kiwano:server/server" });
}

use bindings::exports::kiwano::server::guest::{CallContext, Guest};
use bindings::kiwano::server::log::log;
use bindings::kiwano::server::types::{Description, Error, Handler, HandlerKind, InitInfo, Level};

struct Old;

impl Guest for Old {
    fn describe() -> Description {
        Description { handlers: vec![Handler { route: "old.echo".into(), kind: HandlerKind::Request }], remotes: Vec::new(), affinity: None }
    }

    fn init(_: InitInfo) -> Result<(), Error> {
        Ok(())
    }

    fn shutdown() {}

    fn handle(ctx: &CallContext, route: String, body: Vec<u8>) -> Result<Vec<u8>, Error> {
        log(Level::Info, &format!("0.1.1 guest: {route}"), &[]);
        let mut out = ctx.uid().unwrap_or_else(|| "-".into()).into_bytes();
        out.push(b' ');
        out.extend_from_slice(&body);
        Ok(out)
    }

    fn remote(route: String, _: Vec<u8>) -> Result<Vec<u8>, Error> {
        Err(Error { code: "PIT-404".into(), msg: format!("no remote {route}"), metadata: Vec::new() })
    }

    fn on_session_close(_: &CallContext) {}

    fn on_timer(_: u64, _: Vec<u8>) {}
}

bindings::export!(Old with_types_in bindings);
