//! RPC, pushes, kicks and bind broadcasts on NATS, with Pitaya's subjects (`PITAYA-PROTOCOL.md`
//! §6.2; Pitaya's `cluster/nats_rpc_server.go` and `nats_rpc_client.go`):
//!
//! | subject | payload | pattern |
//! | --- | --- | --- |
//! | `pitaya/servers/<type>/<id>` | `protos.Request` → `protos.Response` | request/reply |
//! | `pitaya/<frontend type>/user/<uid>/push` | `protos.Push` | publish, subscribed at bind |
//! | `pitaya/<frontend type>/user/<uid>/kick` | `protos.KickMsg` | publish, subscribed at bind |
//! | `pitaya/<frontend type>/bindings` | `protos.BindMsg` | publish to every frontend of the type |
//!
//! Subscriptions survive reconnections (the client subscribes again); a request to a subject
//! nobody listens on comes back as "no responders" at once ([`ClusterError::NoResponders`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, RequestErrorKind};
use bytes::Bytes;
use futures_util::StreamExt as _;
use kiwano_protocol::protos;
use parking_lot::RwLock;
use prost::Message as _;
use tokio::sync::Semaphore;

use crate::{BoxFuture, ClusterError, Rpc, RpcHandler, ServerInfo, Serving};

/// How Kiwano connects to NATS.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// The server URL (`nats://host:port`, credentials allowed in it).
    pub url: String,
    /// Deadline of one connection attempt.
    pub connect_timeout: Duration,
    /// How long a served request may take when it does not carry its caller's `reqTimeout`.
    pub request_timeout: Duration,
    /// The requests a served server handles at once; more wait in their subscription's buffer.
    pub max_in_flight: usize,
    /// Messages buffered per subscription before NATS drops them as a slow consumer's.
    pub subscription_capacity: usize,
}

/// The subject of server `id` of `server_type`.
pub fn server_subject(server_type: &str, id: &str) -> String {
    format!("pitaya/servers/{server_type}/{id}")
}

/// The subject of `uid`'s pushes (`kind` = `push`) or kicks (`kick`) at `frontend_type`.
pub fn user_subject(frontend_type: &str, uid: &str, kind: &str) -> String {
    format!("pitaya/{frontend_type}/user/{uid}/{kind}")
}

/// The subject of bind broadcasts to the frontends of `frontend_type`.
pub fn bindings_subject(frontend_type: &str) -> String {
    format!("pitaya/{frontend_type}/bindings")
}

/// Pitaya's RPC on a NATS connection.
pub struct NatsRpc {
    client: Client,
    /// The handlers of the servers served here, by id: bound users' pushes go to them.
    served: Arc<RwLock<HashMap<String, Arc<dyn RpcHandler>>>>,
    settings: NatsSettings,
    /// Messages the client dropped because a subscription's queue was full (slow consumer).
    dropped: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for NatsRpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsRpc").field("url", &self.settings.url).finish_non_exhaustive()
    }
}

fn backend(what: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Backend(format!("nats: {what}: {e}"))
}

impl NatsRpc {
    /// Connects, trying again with a logged backoff (up to 5 s between attempts) until NATS
    /// answers: a server started before NATS waits for it (Pitaya #439). Once connected, a lost
    /// connection is reconnected for as long as it takes, and every subscription restored.
    pub async fn connect(settings: NatsSettings) -> Self {
        let mut attempt = 0u32;
        let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let client = loop {
            let counter = dropped.clone();
            let options = ConnectOptions::new()
                .name("kiwano")
                .connection_timeout(settings.connect_timeout)
                .subscription_capacity(settings.subscription_capacity)
                .max_reconnects(None)
                .event_callback(move |event| {
                    let counter = counter.clone();
                    async move {
                        match event {
                            Event::Connected => tracing::info!("nats: connected"),
                            Event::Disconnected => tracing::warn!("nats: connection lost; reconnecting"),
                            Event::LameDuckMode => tracing::warn!("nats: the server entered lame duck mode"),
                            // One event per message dropped (as many as the client's event
                            // queue holds): logged at the 1st, 2nd, 4th, 8th… drop.
                            Event::SlowConsumer(sid) => {
                                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                                if n.is_power_of_two() {
                                    tracing::warn!(subscription = sid, dropped = n, "nats: slow consumer: a subscription's queue is full, messages dropped");
                                }
                            }
                            other => tracing::info!("nats: {other}"),
                        }
                    }
                });
            match options.connect(settings.url.as_str()).await {
                Ok(client) => break client,
                Err(e) => {
                    attempt += 1;
                    let wait = Duration::from_millis(250 * 2u64.pow(attempt.min(5))).min(Duration::from_secs(5));
                    tracing::warn!(url = %settings.url, attempt, "cannot reach NATS ({e}); trying again in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
            }
        };
        tracing::info!(url = %settings.url, "cluster RPC on NATS");
        Self { client, served: Arc::default(), settings, dropped }
    }

    /// The connection (tests look at the wire through it).
    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn publish(&self, subject: String, payload: Vec<u8>) -> Result<(), ClusterError> {
        self.client.publish(subject, Bytes::from(payload)).await.map_err(|e| backend("publish", e))
    }
}

/// Serves requests from `requests` (and bind broadcasts from `binds`) until dropped.
async fn serve_loop(
    client: Client,
    id: String,
    handler: Arc<dyn RpcHandler>,
    mut requests: async_nats::Subscriber,
    mut binds: Option<async_nats::Subscriber>,
    max_in_flight: usize,
    default_timeout: Duration,
) {
    let permits = Arc::new(Semaphore::new(max_in_flight.max(1)));
    loop {
        let bind = async {
            match binds.as_mut() {
                Some(b) => b.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = requests.next() => {
                let Some(msg) = msg else { return };
                let Some(reply) = msg.reply else {
                    tracing::warn!(server = %id, bytes = msg.payload.len(), "nats: request without a reply subject: dropped");
                    continue;
                };
                // Bounded work per server: past the limit, requests wait in the subscription.
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let (client, answer) = (client.clone(), handler.request(msg.payload, default_timeout));
                let id = id.clone();
                tokio::spawn(async move {
                    // Every request is answered exactly once, unless it could not be read.
                    if let Some(response) = answer.await
                        && let Err(e) = client.publish(reply, response).await
                    {
                        tracing::warn!(server = %id, "nats: cannot publish a response: {e}");
                    }
                    drop(permit);
                });
            }
            Some(msg) = bind => match protos::BindMsg::decode(&msg.payload[..]) {
                Ok(b) => handler.bound(b),
                Err(e) => tracing::warn!(server = %id, "nats: undecodable BindMsg dropped: {e}"),
            },
        }
    }
}

/// Delivers one bound uid's pushes and kicks until dropped.
async fn user_loop(handler: Arc<dyn RpcHandler>, uid: String, mut pushes: async_nats::Subscriber, mut kicks: async_nats::Subscriber) {
    loop {
        tokio::select! {
            Some(msg) = pushes.next() => match protos::Push::decode(&msg.payload[..]) {
                Ok(p) => handler.push(p),
                Err(e) => tracing::warn!(uid, "nats: undecodable Push dropped: {e}"),
            },
            Some(msg) = kicks.next() => match protos::KickMsg::decode(&msg.payload[..]) {
                Ok(k) => handler.kick(k),
                Err(e) => tracing::warn!(uid, "nats: undecodable KickMsg dropped: {e}"),
            },
            else => return,
        }
    }
}

impl Rpc for NatsRpc {
    fn serve<'a>(&'a self, server: &'a ServerInfo, handler: Arc<dyn RpcHandler>) -> BoxFuture<'a, Result<Serving, ClusterError>> {
        Box::pin(async move {
            let subject = server_subject(&server.server_type, &server.id);
            let requests = self.client.subscribe(subject.clone()).await.map_err(|e| backend("subscribe", e))?;
            let binds = if server.frontend {
                Some(self.client.subscribe(bindings_subject(&server.server_type)).await.map_err(|e| backend("subscribe", e))?)
            } else {
                None
            };
            // Subscribed for sure before the server is announced: a flush round-trips the SUBs.
            self.client.flush().await.map_err(|e| backend("flush", e))?;
            self.served.write().insert(server.id.clone(), handler.clone());
            let task = tokio::spawn(serve_loop(
                self.client.clone(),
                server.id.clone(),
                handler,
                requests,
                binds,
                self.settings.max_in_flight,
                self.settings.request_timeout,
            ));
            tracing::info!(server = %server.id, %subject, "serving RPCs on NATS");
            let (served, id) = (self.served.clone(), server.id.clone());
            Ok(Serving::on_drop(move || {
                task.abort();
                served.write().remove(&id);
            }))
        })
    }

    fn call(&self, target: &ServerInfo, request: Bytes, timeout: Duration) -> BoxFuture<'static, Result<Bytes, ClusterError>> {
        let (client, subject, id) = (self.client.clone(), server_subject(&target.server_type, &target.id), target.id.clone());
        Box::pin(async move {
            let request = async_nats::Request::new().payload(request).timeout(Some(timeout));
            match client.send_request(subject, request).await {
                Ok(reply) => Ok(reply.payload),
                Err(e) => Err(match e.kind() {
                    RequestErrorKind::TimedOut => ClusterError::Timeout,
                    RequestErrorKind::NoResponders => ClusterError::NoResponders(id),
                    _ => backend("request", e),
                }),
            }
        })
    }

    fn bind_user<'a>(&'a self, server: &'a ServerInfo, uid: &'a str) -> BoxFuture<'a, Result<Serving, ClusterError>> {
        Box::pin(async move {
            let handler = self.served.read().get(&server.id).cloned();
            let Some(handler) = handler else { return Err(ClusterError::Unreachable(server.id.clone())) };
            let pushes = self.client.subscribe(user_subject(&server.server_type, uid, "push")).await.map_err(|e| backend("subscribe", e))?;
            let kicks = self.client.subscribe(user_subject(&server.server_type, uid, "kick")).await.map_err(|e| backend("subscribe", e))?;
            let task = tokio::spawn(user_loop(handler, uid.to_owned(), pushes, kicks));
            // Subscribed on the NATS server before the bind is answered, so a push sent once the
            // client knows it is bound is delivered. While NATS is away the subscriptions wait in
            // the client and are restored when it reconnects: the bind stands, with a warning.
            match tokio::time::timeout(self.settings.request_timeout, self.client.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(uid, "nats: user subscriptions not confirmed: {e}"),
                Err(_) => tracing::warn!(uid, "nats: user subscriptions not confirmed in {:?}", self.settings.request_timeout),
            }
            Ok(Serving::on_drop(move || task.abort()))
        })
    }

    fn connected(&self) -> Option<bool> {
        Some(self.client.connection_state() == async_nats::connection::State::Connected)
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn flush<'a>(&'a self, timeout: Duration) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if self.client.connection_state() != async_nats::connection::State::Connected {
                tracing::warn!("nats: not connected at shutdown: what was not sent is lost");
                return;
            }
            match tokio::time::timeout(timeout, self.client.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("nats: flush failed: {e}"),
                Err(_) => tracing::warn!("nats: flush did not finish in {timeout:?}"),
            }
        })
    }

    fn push<'a>(&'a self, frontend_type: &'a str, push: protos::Push) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move { self.publish(user_subject(frontend_type, &push.uid, "push"), push.encode_to_vec()).await })
    }

    fn kick<'a>(&'a self, frontend_type: &'a str, kick: protos::KickMsg) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move { self.publish(user_subject(frontend_type, &kick.user_id, "kick"), kick.encode_to_vec()).await })
    }

    fn broadcast_bind<'a>(&'a self, frontend_type: &'a str, bind: protos::BindMsg) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move { self.publish(bindings_subject(frontend_type), bind.encode_to_vec()).await })
    }
}
