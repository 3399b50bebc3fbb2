//! The registry of a server type's handlers, remotes and hooks.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::testing::MockSession;
use crate::{Affinity, Context, Description, Error, Handler, HandlerKind, InitInfo};

type HandlerFn = Box<dyn Fn(&Context, &[u8]) -> Result<Vec<u8>, Error> + Send + Sync>;
type RemoteFn = Box<dyn Fn(&[u8]) -> Result<Vec<u8>, Error> + Send + Sync>;

struct Entry {
    kind: HandlerKind,
    f: HandlerFn,
}

/// Decodes a JSON body; an empty body reads as `null` (so `()` and `Option` accept it).
fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let body: &[u8] = if body.is_empty() { b"null" } else { body };
    serde_json::from_slice(body).map_err(Into::into)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| Error::new("PIT-500", format!("cannot encode the response: {e}")))
}

/// A server type: handlers (client routes), remotes (server-to-server routes) and lifecycle
/// hooks. Routes are `service.method`.
#[derive(Default)]
pub struct Server {
    handlers: BTreeMap<String, Entry>,
    remotes: BTreeMap<String, RemoteFn>,
    affinity: Option<Affinity>,
    init: Option<Box<dyn Fn(&InitInfo) -> Result<(), Error> + Send + Sync>>,
    shutdown: Option<Box<dyn Fn() + Send + Sync>>,
    session_closed: Option<Box<dyn Fn(&Context) + Send + Sync>>,
    timer: Option<Box<dyn Fn(u64, &[u8]) + Send + Sync>>,
}

impl Server {
    /// An empty server type.
    pub fn new() -> Self {
        Self::default()
    }

    fn add(mut self, route: &str, kind: HandlerKind, f: HandlerFn) -> Self {
        self.handlers.insert(route.to_owned(), Entry { kind, f });
        self
    }

    /// A request handler taking and returning JSON.
    #[must_use]
    pub fn request<Req, Resp, F>(self, route: &str, f: F) -> Self
    where
        Req: DeserializeOwned,
        Resp: Serialize,
        F: Fn(&Context, Req) -> Result<Resp, Error> + Send + Sync + 'static,
    {
        self.add(route, HandlerKind::Request, Box::new(move |ctx, body| encode(&f(ctx, decode(body)?)?)))
    }

    /// A request handler on raw bytes.
    #[must_use]
    pub fn request_raw<F>(self, route: &str, f: F) -> Self
    where
        F: Fn(&Context, &[u8]) -> Result<Vec<u8>, Error> + Send + Sync + 'static,
    {
        self.add(route, HandlerKind::Request, Box::new(f))
    }

    /// A notify handler taking JSON; nothing is sent back (an error is only logged).
    #[must_use]
    pub fn notify<Req, F>(self, route: &str, f: F) -> Self
    where
        Req: DeserializeOwned,
        F: Fn(&Context, Req) -> Result<(), Error> + Send + Sync + 'static,
    {
        self.add(route, HandlerKind::Notify, Box::new(move |ctx, body| f(ctx, decode(body)?).map(|()| Vec::new())))
    }

    /// A notify handler on raw bytes.
    #[must_use]
    pub fn notify_raw<F>(self, route: &str, f: F) -> Self
    where
        F: Fn(&Context, &[u8]) -> Result<(), Error> + Send + Sync + 'static,
    {
        self.add(route, HandlerKind::Notify, Box::new(move |ctx, body| f(ctx, body).map(|()| Vec::new())))
    }

    /// A request handler taking and returning protobuf messages.
    #[cfg(feature = "protobuf")]
    #[must_use]
    pub fn request_proto<Req, Resp, F>(self, route: &str, f: F) -> Self
    where
        Req: prost::Message + Default,
        Resp: prost::Message,
        F: Fn(&Context, Req) -> Result<Resp, Error> + Send + Sync + 'static,
    {
        self.add(
            route,
            HandlerKind::Request,
            Box::new(move |ctx, body| {
                let req = Req::decode(body).map_err(|e| Error::bad_request(format!("invalid protobuf: {e}")))?;
                Ok(f(ctx, req)?.encode_to_vec())
            }),
        )
    }

    /// A remote taking and returning JSON.
    #[must_use]
    pub fn remote<Req, Resp, F>(mut self, route: &str, f: F) -> Self
    where
        Req: DeserializeOwned,
        Resp: Serialize,
        F: Fn(Req) -> Result<Resp, Error> + Send + Sync + 'static,
    {
        self.remotes.insert(route.to_owned(), Box::new(move |body| encode(&f(decode(body)?)?)));
        self
    }

    /// A remote on raw bytes (Pitaya's remotes carry protobuf).
    #[must_use]
    pub fn remote_raw<F>(mut self, route: &str, f: F) -> Self
    where
        F: Fn(&[u8]) -> Result<Vec<u8>, Error> + Send + Sync + 'static,
    {
        self.remotes.insert(route.to_owned(), Box::new(f));
        self
    }

    /// Which instance runs a call (the server's config may override it).
    #[must_use]
    pub fn affinity(mut self, affinity: Affinity) -> Self {
        self.affinity = Some(affinity);
        self
    }

    /// Runs on every new instance before it serves; an error stops the server type.
    #[must_use]
    pub fn on_init(mut self, f: impl Fn(&InitInfo) -> Result<(), Error> + Send + Sync + 'static) -> Self {
        self.init = Some(Box::new(f));
        self
    }

    /// Runs on every instance at shutdown.
    #[must_use]
    pub fn on_shutdown(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.shutdown = Some(Box::new(f));
        self
    }

    /// Runs when a session of this frontend type closes, after its last message.
    #[must_use]
    pub fn on_session_close(mut self, f: impl Fn(&Context) + Send + Sync + 'static) -> Self {
        self.session_closed = Some(Box::new(f));
        self
    }

    /// Runs when a timer set by this instance fires.
    #[must_use]
    pub fn on_timer(mut self, f: impl Fn(u64, &[u8]) + Send + Sync + 'static) -> Self {
        self.timer = Some(Box::new(f));
        self
    }

    /// The description the host reads at load.
    pub fn describe(&self) -> Description {
        Description {
            handlers: self.handlers.iter().map(|(route, e)| Handler { route: route.clone(), kind: e.kind }).collect(),
            remotes: self.remotes.keys().cloned().collect(),
            affinity: self.affinity.clone(),
        }
    }

    /// Runs the init hook.
    ///
    /// # Errors
    /// The hook's.
    pub fn init(&self, info: &InitInfo) -> Result<(), Error> {
        self.init.as_ref().map_or(Ok(()), |f| f(info))
    }

    /// Runs the shutdown hook.
    pub fn shutdown(&self) {
        if let Some(f) = &self.shutdown {
            f();
        }
    }

    /// Dispatches a client message.
    ///
    /// # Errors
    /// The handler's, or `PIT-404` for an unknown route.
    pub fn handle(&self, ctx: &Context, route: &str, body: &[u8]) -> Result<Vec<u8>, Error> {
        match self.handlers.get(route) {
            Some(e) => (e.f)(ctx, body),
            None => Err(Error::new("PIT-404", format!("no handler for {route}"))),
        }
    }

    /// Dispatches a remote call.
    ///
    /// # Errors
    /// The remote's, or `PIT-404 route not found`.
    pub fn remote_call(&self, route: &str, body: &[u8]) -> Result<Vec<u8>, Error> {
        match self.remotes.get(route) {
            Some(f) => f(body),
            None => Err(Error::new("PIT-404", "route not found").with("route", route)),
        }
    }

    /// Runs the session-close hook.
    pub fn session_closed(&self, ctx: &Context) {
        if let Some(f) = &self.session_closed {
            f(ctx);
        }
    }

    /// Runs the timer hook.
    pub fn timer(&self, id: u64, payload: &[u8]) {
        if let Some(f) = &self.timer {
            f(id, payload);
        }
    }

    /// Test helper: calls `route` for `session` with a JSON body and decodes the JSON answer.
    ///
    /// # Errors
    /// The handler's error.
    pub fn call_json<T: DeserializeOwned>(&self, session: &MockSession, route: &str, body: &impl Serialize) -> Result<T, Error> {
        let body = serde_json::to_vec(body).map_err(|e| Error::new("PIT-500", e.to_string()))?;
        let out = self.handle(&Context::mock(session), route, &body)?;
        decode(&out)
    }
}
