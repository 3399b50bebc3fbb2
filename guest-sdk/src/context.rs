//! The session a call is made for.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::testing::MockSession;
use crate::{CallContext, Error};

enum Inner<'a> {
    Host(&'a CallContext),
    Mock(&'a MockSession),
}

/// The session of the message being handled: its id, uid, data, and its client.
///
/// Valid only during the call it was given to.
pub struct Context<'a> {
    inner: Inner<'a>,
}

impl<'a> Context<'a> {
    /// Wraps the host's call context.
    pub fn new(ctx: &'a CallContext) -> Self {
        Self { inner: Inner::Host(ctx) }
    }

    /// A context backed by a [`MockSession`], for unit tests.
    pub fn mock(session: &'a MockSession) -> Self {
        Self { inner: Inner::Mock(session) }
    }

    /// The session id (unique within the server process).
    pub fn session_id(&self) -> u64 {
        match &self.inner {
            Inner::Host(c) => c.session_id(),
            Inner::Mock(m) => m.id(),
        }
    }

    /// The uid bound to the session.
    pub fn uid(&self) -> Option<String> {
        match &self.inner {
            Inner::Host(c) => c.uid(),
            Inner::Mock(m) => m.uid(),
        }
    }

    /// Whether a newer session has bound this session's uid since this one did (the player
    /// reconnected, or logged in on another device). In an `on_session_close` handler, a
    /// displaced session must not undo what the newer one did; [`Context::leaving_uid`] says
    /// it in one call. Always false on a backend.
    pub fn displaced(&self) -> bool {
        match &self.inner {
            Inner::Host(c) => c.displaced(),
            Inner::Mock(m) => m.displaced(),
        }
    }

    /// The uid a closing session leaves behind: its uid, unless it has none or a newer session
    /// has taken it over ([`Context::displaced`]). What an `on_session_close` handler cleans up
    /// after:
    ///
    /// ```
    /// # use kiwano_guest::{Context, groups};
    /// fn leave(ctx: &Context) {
    ///     if let Some(uid) = ctx.leaving_uid() {
    ///         let _ = groups::remove("room", &uid);
    ///     }
    /// }
    /// ```
    pub fn leaving_uid(&self) -> Option<String> {
        self.uid().filter(|_| !self.displaced())
    }

    /// Binds a uid to the session; another session bound to it is kicked.
    ///
    /// # Errors
    /// `PIT-400` for an empty uid or an already bound session.
    pub fn bind(&self, uid: &str) -> Result<(), Error> {
        match &self.inner {
            Inner::Host(c) => c.bind(uid),
            Inner::Mock(m) => m.bind(uid),
        }
    }

    /// One session-data value, decoded from JSON; `None` if absent or of another shape.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let raw = self.get_raw(key)?;
        serde_json::from_str(&raw).ok()
    }

    /// One session-data value as JSON text.
    pub fn get_raw(&self, key: &str) -> Option<String> {
        match &self.inner {
            Inner::Host(c) => c.get(key),
            Inner::Mock(m) => m.get(key),
        }
    }

    /// Sets one session-data value.
    ///
    /// # Errors
    /// A value that does not serialize.
    pub fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), Error> {
        let json = serde_json::to_string(value).map_err(|e| Error::new("PIT-500", e.to_string()))?;
        match &self.inner {
            Inner::Host(c) => c.set(key, &json),
            Inner::Mock(m) => m.set(key, &json),
        }
    }

    /// The whole session data.
    pub fn data(&self) -> serde_json::Map<String, serde_json::Value> {
        let raw = match &self.inner {
            Inner::Host(c) => c.data(),
            Inner::Mock(m) => m.data(),
        };
        serde_json::from_str(&raw).unwrap_or_default()
    }

    /// Replaces the whole session data.
    ///
    /// # Errors
    /// Refused by the host.
    pub fn set_data(&self, data: &serde_json::Map<String, serde_json::Value>) -> Result<(), Error> {
        let json = serde_json::Value::Object(data.clone()).to_string();
        match &self.inner {
            Inner::Host(c) => c.set_data(&json),
            Inner::Mock(m) => m.set_data(&json),
        }
    }

    /// Pushes raw bytes on `route` to this session.
    ///
    /// # Errors
    /// `PIT-499` when the session is closed.
    pub fn push_raw(&self, route: &str, body: &[u8]) -> Result<(), Error> {
        match &self.inner {
            Inner::Host(c) => c.push(route, body),
            Inner::Mock(m) => m.push(route, body),
        }
    }

    /// Pushes a value, as JSON, on `route` to this session.
    ///
    /// # Errors
    /// `PIT-499` when the session is closed.
    pub fn push<T: Serialize + ?Sized>(&self, route: &str, value: &T) -> Result<(), Error> {
        let body = serde_json::to_vec(value).map_err(|e| Error::new("PIT-500", e.to_string()))?;
        self.push_raw(route, &body)
    }

    /// Kicks this session: its client gets a kick packet and is disconnected.
    ///
    /// # Errors
    /// `PIT-499` when the session is closed.
    pub fn kick(&self) -> Result<(), Error> {
        match &self.inner {
            Inner::Host(c) => c.kick(),
            Inner::Mock(m) => m.kick(),
        }
    }

    /// The client's handshake (`{"sys":{..},"user":{..}}`).
    pub fn handshake(&self) -> serde_json::Value {
        let raw = match &self.inner {
            Inner::Host(c) => c.handshake(),
            Inner::Mock(m) => m.handshake(),
        };
        serde_json::from_str(&raw).unwrap_or_default()
    }

    /// Pins the session to server `server_id` of `server_type`: its messages for that type go
    /// there. Frontends only.
    ///
    /// # Errors
    /// `PIT-400` on a backend.
    pub fn pin(&self, server_type: &str, server_id: &str) -> Result<(), Error> {
        match &self.inner {
            Inner::Host(c) => c.pin(server_type, server_id),
            Inner::Mock(m) => m.pin(server_type, server_id),
        }
    }

    /// The client's address, `ip:port`.
    pub fn remote_address(&self) -> String {
        match &self.inner {
            Inner::Host(c) => c.remote_address(),
            Inner::Mock(m) => m.remote_address(),
        }
    }
}
