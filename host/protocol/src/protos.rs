//! Pitaya's protobuf messages (package `protos`, proto3), field numbers as in
//! PITAYA-PROTOCOL.md §6.3. Written with prost's derive so no `protoc` is needed.

use std::collections::HashMap;

/// `protos.Error`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Error {
    /// e.g. `PIT-404`.
    #[prost(string, tag = "1")]
    pub code: String,
    /// Message.
    #[prost(string, tag = "2")]
    pub msg: String,
    /// Extra pairs.
    #[prost(map = "string, string", tag = "3")]
    pub metadata: HashMap<String, String>,
}

/// `protos.RPCType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum RpcType {
    /// A forwarded client message.
    Sys = 0,
    /// A server-to-server call.
    User = 1,
}

/// `protos.MsgType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MsgType {
    /// Request.
    MsgRequest = 0,
    /// Notify.
    MsgNotify = 1,
    /// Response.
    MsgResponse = 2,
    /// Push.
    MsgPush = 3,
}

/// `protos.Session`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Session {
    /// The frontend session id.
    #[prost(int64, tag = "1")]
    pub id: i64,
    /// The bound uid.
    #[prost(string, tag = "2")]
    pub uid: String,
    /// Session data as a JSON object.
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
}

/// `protos.Msg`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    /// Client message id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Route.
    #[prost(string, tag = "2")]
    pub route: String,
    /// Payload.
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
    /// Reply subject.
    #[prost(string, tag = "4")]
    pub reply: String,
    /// Message type.
    #[prost(enumeration = "MsgType", tag = "5")]
    pub r#type: i32,
}

/// `protos.Request`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    /// Sys or User.
    #[prost(enumeration = "RpcType", tag = "1")]
    pub r#type: i32,
    /// The session (Sys RPCs).
    #[prost(message, optional, tag = "2")]
    pub session: Option<Session>,
    /// The message.
    #[prost(message, optional, tag = "3")]
    pub msg: Option<Msg>,
    /// The calling frontend's id.
    #[prost(string, tag = "4")]
    pub frontend_id: String,
    /// Propagated context, a JSON object.
    #[prost(bytes = "vec", tag = "5")]
    pub metadata: Vec<u8>,
}

/// `protos.Response`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    /// Result bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
    /// Error, if the call failed.
    #[prost(message, optional, tag = "2")]
    pub error: Option<Error>,
}

/// `protos.Push`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Push {
    /// Route.
    #[prost(string, tag = "1")]
    pub route: String,
    /// Target uid.
    #[prost(string, tag = "2")]
    pub uid: String,
    /// Payload.
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
}

/// `protos.BindMsg`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BindMsg {
    /// The uid.
    #[prost(string, tag = "1")]
    pub uid: String,
    /// The frontend id.
    #[prost(string, tag = "2")]
    pub fid: String,
}

/// `protos.KickMsg`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KickMsg {
    /// The uid to kick.
    #[prost(string, tag = "1")]
    pub user_id: String,
}

/// `protos.KickAnswer`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KickAnswer {
    /// Whether a session was kicked.
    #[prost(bool, tag = "1")]
    pub kicked: bool,
}
