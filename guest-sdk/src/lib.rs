//! Write Kiwano server types in Rust.
//!
//! A server type is a set of typed handler functions registered on a [`Server`] and exported
//! with [`export!`]. Build the crate (a `cdylib`) with `cargo build --target wasm32-wasip2`: the
//! output is a component that `kiwano run` serves.
//!
//! ```
//! use kiwano_guest::{Context, Error, Server, groups, log};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Join { name: String }
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! struct Joined { code: i32, members: Vec<String> }
//!
//! fn join(ctx: &Context, req: Join) -> Result<Joined, Error> {
//!     ctx.bind(&req.name)?;
//!     let _ = groups::create("room", None); // already there after the first join
//!     let members = groups::members("room")?;
//!     groups::add("room", &req.name)?;
//!     log::info(&format!("{} joined", req.name));
//!     Ok(Joined { code: 0, members })
//! }
//!
//! #[derive(Deserialize)]
//! struct Say { text: String }
//!
//! fn say(ctx: &Context, msg: Say) -> Result<(), Error> {
//!     let from = ctx.uid().unwrap_or_default();
//!     groups::broadcast_json("room", "onMessage", &serde_json::json!({"from": from, "text": msg.text}))
//! }
//!
//! fn server() -> Server {
//!     Server::new()
//!         .request("room.join", join)
//!         .notify("room.say", say)
//!         // Not when the player is back on a newer session: that one has joined again.
//!         .on_session_close(|ctx| if let Some(uid) = ctx.leaving_uid() { let _ = groups::remove("room", &uid); })
//! }
//!
//! kiwano_guest::export!(server);
//!
//! // The same logic runs in a plain `cargo test`, against an in-memory host:
//! use kiwano_guest::testing::{self, MockSession};
//! let alice = MockSession::new(1);
//! let joined: Joined = server().call_json(&alice, "room.join", &serde_json::json!({"name": "alice"})).unwrap();
//! assert_eq!(joined, Joined { code: 0, members: vec![] });
//! assert_eq!(alice.uid().as_deref(), Some("alice"));
//! let bob = MockSession::new(2);
//! let joined: Joined = server().call_json(&bob, "room.join", &serde_json::json!({"name": "bob"})).unwrap();
//! assert_eq!(joined.members, vec!["alice"]);
//! testing::bind_user("alice", &alice); // route user pushes to these sessions
//! testing::bind_user("bob", &bob);
//! server().call_json::<()>(&alice, "room.say", &serde_json::json!({"text": "hi"})).unwrap();
//! assert_eq!(bob.pushes(), vec![("onMessage".to_string(), br#"{"from":"alice","text":"hi"}"#.to_vec())]);
//! // Alice reconnects: her new session binds her uid, then the old session's close arrives.
//! let again = MockSession::new(3);
//! kiwano_guest::Context::mock(&again).bind("alice").unwrap();
//! server().session_closed(&kiwano_guest::Context::mock(&alice));
//! assert_eq!(testing::group_members("room").unwrap(), vec!["alice", "bob"], "still in the room");
//! server().session_closed(&kiwano_guest::Context::mock(&again));
//! assert_eq!(testing::group_members("room").unwrap(), vec!["bob"]);
//! ```
//!
//! Host functions are plain calls: [`Context`] for the session of the call, [`users`] (push and
//! kick by uid), [`groups`], [`rpc`], [`timers`], [`log`] and [`metrics`]. Errors carry a Pitaya code, a
//! message and metadata ([`Error`]); a host error can be returned to the client with `?`.

mod context;
mod host;
mod server;
pub mod testing;

/// The raw bindings of the `kiwano:server` world (generated from `wit/`).
#[allow(missing_docs, clippy::all, unsafe_op_in_unsafe_fn)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "kiwano:server/server",
        pub_export_macro: true,
        export_macro_name: "__export_bindings",
        default_bindings_module: "kiwano_guest::bindings",
    });
}

pub use bindings::exports::kiwano::server::guest::Guest;
pub use bindings::kiwano::server::context::CallContext;
pub use bindings::kiwano::server::types::{Affinity, Description, Error, Handler, HandlerKind, InitInfo, Level};
pub use context::Context;
pub use host::{groups, log, metrics, rpc, timers, users};
pub use server::Server;

#[doc(hidden)]
pub use bindings::__export_bindings;

impl Error {
    /// An error with a code and a message.
    pub fn new(code: impl Into<String>, msg: impl Into<String>) -> Self {
        Self { code: code.into(), msg: msg.into(), metadata: Vec::new() }
    }

    /// Adds a metadata pair.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// `PIT-400` with a message: a request the handler cannot accept.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new("PIT-400", msg)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self::bad_request(format!("invalid JSON: {e}"))
    }
}

/// Exports a [`Server`] as the component's guest. `$build` is a function returning the
/// server; it is called once per instance.
#[macro_export]
macro_rules! export {
    ($build:path) => {
        struct __KiwanoGuest;

        impl __KiwanoGuest {
            fn server() -> &'static $crate::Server {
                static SERVER: ::std::sync::OnceLock<$crate::Server> = ::std::sync::OnceLock::new();
                SERVER.get_or_init($build)
            }
        }

        impl $crate::Guest for __KiwanoGuest {
            fn describe() -> $crate::Description {
                Self::server().describe()
            }
            fn init(info: $crate::InitInfo) -> ::std::result::Result<(), $crate::Error> {
                Self::server().init(&info)
            }
            fn shutdown() {
                Self::server().shutdown()
            }
            fn handle(
                ctx: &$crate::CallContext,
                route: ::std::string::String,
                body: ::std::vec::Vec<u8>,
            ) -> ::std::result::Result<::std::vec::Vec<u8>, $crate::Error> {
                Self::server().handle(&$crate::Context::new(ctx), &route, &body)
            }
            fn remote(
                route: ::std::string::String,
                body: ::std::vec::Vec<u8>,
            ) -> ::std::result::Result<::std::vec::Vec<u8>, $crate::Error> {
                Self::server().remote_call(&route, &body)
            }
            fn on_session_close(ctx: &$crate::CallContext) {
                Self::server().session_closed(&$crate::Context::new(ctx))
            }
            fn on_timer(id: u64, payload: ::std::vec::Vec<u8>) {
                Self::server().timer(id, &payload)
            }
        }

        $crate::__export_bindings!(__KiwanoGuest);
    };
}
