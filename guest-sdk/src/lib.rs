//! Write Kiwano server types in Rust.
//!
//! This crate holds the bindings of the `kiwano:server` WIT world (`wit/` at the repository
//! root). A guest implements [`Guest`] and exports it with [`export!`]:
//!
//! ```no_run
//! use kiwano_guest::{CallContext, Description, Error, Guest, HandlerKind, Handler, InitInfo};
//!
//! struct Echo;
//!
//! impl Guest for Echo {
//!     fn describe() -> Description {
//!         Description { handlers: vec![Handler { route: "echo.echo".into(), kind: HandlerKind::Request }], affinity: None }
//!     }
//!     fn init(_: InitInfo) -> Result<(), Error> { Ok(()) }
//!     fn shutdown() {}
//!     fn handle(_ctx: &CallContext, _route: String, body: Vec<u8>) -> Result<Vec<u8>, Error> { Ok(body) }
//!     fn on_session_close(_ctx: &CallContext) {}
//! }
//!
//! kiwano_guest::export!(Echo);
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2`: the output is a component.

#![allow(missing_docs, clippy::all)]

wit_bindgen::generate!({
    path: "../wit",
    world: "kiwano:server/server",
    pub_export_macro: true,
    export_macro_name: "export",
    default_bindings_module: "kiwano_guest",
});

pub use exports::kiwano::server::guest::Guest;
pub use kiwano::server::context::CallContext;
pub use kiwano::server::log::log;
pub use kiwano::server::types::{Affinity, Description, Error, Handler, HandlerKind, InitInfo, Level};

impl Error {
    /// An error with a code and a message.
    pub fn new(code: impl Into<String>, msg: impl Into<String>) -> Self {
        Self { code: code.into(), msg: msg.into(), metadata: Vec::new() }
    }
}

/// Shorthand for a request handler entry of a [`Description`].
pub fn request(route: &str) -> Handler {
    Handler { route: route.to_owned(), kind: HandlerKind::Request }
}

/// Shorthand for a notify handler entry of a [`Description`].
pub fn notify(route: &str) -> Handler {
    Handler { route: route.to_owned(), kind: HandlerKind::Notify }
}
