//! The `echo` server type: `echo.echo` answers its body unchanged.
//!
//! Build: `cargo build -p echo-guest --target wasm32-wasip2 --profile guest`
//! (`kiwano run examples/echo` does it for you).

use kiwano_guest::{CallContext, Description, Error, Guest, InitInfo, request};

struct Echo;

impl Guest for Echo {
    fn describe() -> Description {
        Description { handlers: vec![request("echo.echo")], affinity: None }
    }

    fn init(_info: InitInfo) -> Result<(), Error> {
        Ok(())
    }

    fn shutdown() {}

    fn handle(_ctx: &CallContext, route: String, body: Vec<u8>) -> Result<Vec<u8>, Error> {
        match route.as_str() {
            "echo.echo" => Ok(body),
            other => Err(Error::new("PIT-404", format!("no handler for {other}"))),
        }
    }

    fn on_session_close(_ctx: &CallContext) {}
}

kiwano_guest::export!(Echo);
