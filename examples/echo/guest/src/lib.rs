//! The `echo` server type: `echo.echo` answers its body unchanged; `echo.session` answers the
//! session id (one host call, used to measure the cost of a guest call).
//!
//! Build: `cargo build -p echo-guest --target wasm32-wasip2 --profile guest`
//! (`kiwano run examples/echo` does it for you).

use kiwano_guest::Server;

fn server() -> Server {
    Server::new()
        .request_raw("echo.echo", |_ctx, body| Ok(body.to_vec()))
        .request_raw("echo.session", |ctx, _| Ok(ctx.session_id().to_string().into_bytes()))
}

kiwano_guest::export!(server);
