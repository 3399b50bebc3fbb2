//! Kiwano's server: configuration, acceptors, connections, sessions and routing onto the Wasm
//! runtime.
//!
//! Layers, bottom up: [`wire`] (encoding what the server sends) → [`transport`] (TCP, TLS,
//! WebSocket, WSS; [`frame_gate`] under WebSocket) → [`connection`] (handshake, heartbeat, kick,
//! the per-session FIFO; [`admission`] caps connections at accept) → [`session`] → [`router`]
//! (routes and the error table) → the runtime's pools. [`faults`] summarises peer faults in the
//! log; [`http`] is the HTTP listener. [`app`] wires them together from a [`config::Config`];
//! [`project`] builds a project's components.

pub mod admission;
pub mod app;
pub mod backend;
pub mod bridge;
pub mod config;
pub mod connection;
pub mod faults;
pub mod frame_gate;
pub mod http;
pub mod node;
pub mod project;
pub mod raw;
pub mod reload;
pub mod router;
pub mod services;
pub mod session;
pub mod state;
pub mod tls;
pub mod trace;
pub mod transport;
pub mod wire;

pub use app::{BoundAcceptor, Server, StartError};
pub use config::{Config, ConfigError};
