//! examples/cluster, the `connector` frontend type: Pitaya's cluster demo
//! (`examples/demo/cluster/services/connector.go` in Pitaya), route for route and byte for byte,
//! so a Go Pitaya connector can stand in for it, or it for one.
//!
//! - `connector.getsessiondata` (request) → `{"Data":{…}}`, the session data;
//! - `connector.setsessiondata` (request, `{"Data":{…}}`) replaces the session data →
//!   `{"code":200,"msg":"success"}`;
//! - `connector.notifysessiondata` (notify, `{"Data":{…}}`) replaces it without an answer;
//! - remote `connector.connectorremote.remotefunc`: protobuf `RPCMsg{Msg}` → `RPCRes{Msg}`, the
//!   same text (Pitaya's remotes carry protobuf; `cluster.proto` of the demo).
//!
//! Client messages for `room.*` are forwarded to a `room` server by the host.
//!
//! Build: `cargo build -p cluster-connector --target wasm32-wasip2 --profile guest`.

use kiwano_guest::{Context, Error, Server, log};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The demo's `SessionData`: a Go struct without JSON tags, so its field is `Data`.
#[derive(Serialize, Deserialize)]
struct SessionData {
    #[serde(rename = "Data")]
    data: Map<String, Value>,
}

/// `cluster_protos.RPCMsg` and `RPCRes` of the demo's `cluster.proto`: one string, field 1.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcMsg {
    #[prost(string, tag = "1")]
    pub msg: String,
}

fn set_data(ctx: &Context, data: &SessionData) -> Result<(), Error> {
    ctx.set_data(&data.data).map_err(|e| Error::new("CN-000", e.msg).with("failed", "set data"))
}

fn remote_func(body: &[u8]) -> Result<Vec<u8>, Error> {
    let msg = <RpcMsg as prost::Message>::decode(body).map_err(|e| Error::bad_request(format!("invalid RPCMsg: {e}")))?;
    log::info(&format!("received a remote call with this message: {}", msg.msg));
    Ok(prost::Message::encode_to_vec(&RpcMsg { msg: msg.msg }))
}

fn server() -> Server {
    Server::new()
        .request("connector.getsessiondata", |ctx, _: Value| Ok(SessionData { data: ctx.data() }))
        .request("connector.setsessiondata", |ctx, data: SessionData| {
            set_data(ctx, &data)?;
            Ok(json!({"code": 200, "msg": "success"}))
        })
        .notify("connector.notifysessiondata", |ctx, data: SessionData| set_data(ctx, &data))
        .remote_raw("connectorremote.remotefunc", remote_func)
}

kiwano_guest::export!(server);

#[cfg(test)]
mod tests {
    use kiwano_guest::testing::{self, MockSession};

    use super::*;

    #[test]
    fn session_data_is_set_and_read_in_the_demo_shapes() {
        testing::reset();
        let s = server();
        let session = MockSession::new(1);
        let set: Value = s.call_json(&session, "connector.setsessiondata", &json!({"Data": {"level": 3}})).unwrap();
        assert_eq!(set, json!({"code": 200, "msg": "success"}));
        let got: Value = s.call_json(&session, "connector.getsessiondata", &json!({})).unwrap();
        assert_eq!(got, json!({"Data": {"level": 3}}));
    }

    #[test]
    fn the_remote_echoes_an_rpc_msg_as_an_rpc_res() {
        let s = server();
        let body = prost::Message::encode_to_vec(&RpcMsg { msg: "hello".into() });
        assert_eq!(body, b"\x0a\x05hello");
        assert_eq!(s.remote_call("connectorremote.remotefunc", &body).unwrap(), body);
    }
}
