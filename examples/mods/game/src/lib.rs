//! examples/mods, the `game` server type: the host game. Scoring is left to a third-party mod
//! (the `mod` server type, run under tight limits); when the mod fails — it traps, runs past
//! its deadline, asks for too much memory — the game answers with its own default score and
//! says why, and the player plays on.
//!
//! - `game.play` (request, `{"move":"…"}`) → `{"score":N,"by":"mod"}`, or
//!   `{"score":1,"by":"game","mod_error":"<code> <message>"}` when the mod failed.
//!
//! Build: `cargo build -p mods-game --target wasm32-wasip2 --profile guest`.

use std::time::Duration;

use kiwano_guest::{Context, Error, Server, rpc};
use serde::Deserialize;
use serde_json::{Value, json};

/// How long the game waits for the mod: the mod's own deadline (`call_timeout`) is shorter.
const MOD_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Deserialize)]
struct Play {
    #[serde(rename = "move")]
    mv: String,
}

fn play(_: &Context, p: Play) -> Result<Value, Error> {
    let ask = serde_json::to_vec(&json!({"move": p.mv}))?;
    match rpc::call_raw("mod.mod.score", &ask, Some(MOD_TIMEOUT)) {
        Ok(answer) => {
            let score = serde_json::from_slice::<Value>(&answer).ok().and_then(|v| v["score"].as_u64());
            match score {
                Some(score) => Ok(json!({"score": score, "by": "mod"})),
                None => Ok(json!({"score": 1, "by": "game", "mod_error": "the mod's answer has no score"})),
            }
        }
        Err(e) => Ok(json!({"score": 1, "by": "game", "mod_error": format!("{} {}", e.code, e.msg)})),
    }
}

fn server() -> Server {
    Server::new().request("game.play", play)
}

kiwano_guest::export!(server);
