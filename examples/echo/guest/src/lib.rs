//! The `echo` server type: `echo.echo` answers its body unchanged.
//!
//! Build: `cargo build -p echo-guest --target wasm32-wasip2 --profile guest`
//! (`kiwano run examples/echo` does it for you).

use kiwano_guest::Server;

fn server() -> Server {
    Server::new().request_raw("echo.echo", |_ctx, body| Ok(body.to_vec()))
}

kiwano_guest::export!(server);
