//! Host functions as plain calls. In a component they call the host; in a native `cargo test`
//! they reach the in-memory [`testing`](crate::testing) host of the current thread.

use std::time::Duration;

use crate::Error;

/// Everything the host offers beyond the call's session.
pub(crate) trait Host {
    fn push(&self, route: &str, body: &[u8], uids: &[String]) -> Result<Vec<String>, Error>;
    fn kick(&self, uids: &[String]) -> Result<Vec<String>, Error>;
    fn group_create(&self, name: &str, ttl_ms: Option<u64>) -> Result<(), Error>;
    fn group_delete(&self, name: &str) -> Result<(), Error>;
    fn group_add(&self, name: &str, uid: &str) -> Result<(), Error>;
    fn group_remove(&self, name: &str, uid: &str) -> Result<(), Error>;
    fn group_remove_all(&self, name: &str) -> Result<(), Error>;
    fn group_contains(&self, name: &str, uid: &str) -> Result<bool, Error>;
    fn group_members(&self, name: &str) -> Result<Vec<String>, Error>;
    fn group_count(&self, name: &str) -> Result<u32, Error>;
    fn group_renew(&self, name: &str) -> Result<(), Error>;
    fn group_broadcast(&self, name: &str, route: &str, body: &[u8]) -> Result<(), Error>;
    fn rpc(&self, server_id: Option<&str>, route: &str, body: &[u8], timeout_ms: Option<u32>) -> Result<Vec<u8>, Error>;
    fn timer_start(&self, ms: u64, repeat: bool, payload: &[u8]) -> u64;
    fn timer_cancel(&self, id: u64) -> bool;
    fn log(&self, level: crate::Level, message: &str, fields: &[(String, String)]);
}

#[cfg(target_arch = "wasm32")]
struct Wasm;

#[cfg(target_arch = "wasm32")]
impl Host for Wasm {
    fn push(&self, route: &str, body: &[u8], uids: &[String]) -> Result<Vec<String>, Error> {
        crate::bindings::kiwano::server::users::push(route, body, uids)
    }
    fn kick(&self, uids: &[String]) -> Result<Vec<String>, Error> {
        crate::bindings::kiwano::server::users::kick(uids)
    }
    fn group_create(&self, name: &str, ttl_ms: Option<u64>) -> Result<(), Error> {
        crate::bindings::kiwano::server::groups::create(name, ttl_ms)
    }
    fn group_delete(&self, name: &str) -> Result<(), Error> {
        crate::bindings::kiwano::server::groups::delete(name)
    }
    fn group_add(&self, name: &str, uid: &str) -> Result<(), Error> {
        crate::bindings::kiwano::server::groups::add(name, uid)
    }
    fn group_remove(&self, name: &str, uid: &str) -> Result<(), Error> {
        crate::bindings::kiwano::server::groups::remove(name, uid)
    }
    fn group_remove_all(&self, name: &str) -> Result<(), Error> {
        crate::bindings::kiwano::server::groups::remove_all(name)
    }
    fn group_contains(&self, name: &str, uid: &str) -> Result<bool, Error> {
        crate::bindings::kiwano::server::groups::contains(name, uid)
    }
    fn group_members(&self, name: &str) -> Result<Vec<String>, Error> {
        crate::bindings::kiwano::server::groups::members(name)
    }
    fn group_count(&self, name: &str) -> Result<u32, Error> {
        crate::bindings::kiwano::server::groups::count(name)
    }
    fn group_renew(&self, name: &str) -> Result<(), Error> {
        crate::bindings::kiwano::server::groups::renew(name)
    }
    fn group_broadcast(&self, name: &str, route: &str, body: &[u8]) -> Result<(), Error> {
        crate::bindings::kiwano::server::groups::broadcast(name, route, body)
    }
    fn rpc(&self, server_id: Option<&str>, route: &str, body: &[u8], timeout_ms: Option<u32>) -> Result<Vec<u8>, Error> {
        match server_id {
            Some(id) => crate::bindings::kiwano::server::rpc::call_to(id, route, body, timeout_ms),
            None => crate::bindings::kiwano::server::rpc::call(route, body, timeout_ms),
        }
    }
    fn timer_start(&self, ms: u64, repeat: bool, payload: &[u8]) -> u64 {
        if repeat {
            crate::bindings::kiwano::server::timers::every(ms, payload)
        } else {
            crate::bindings::kiwano::server::timers::after(ms, payload)
        }
    }
    fn timer_cancel(&self, id: u64) -> bool {
        crate::bindings::kiwano::server::timers::cancel(id)
    }
    fn log(&self, level: crate::Level, message: &str, fields: &[(String, String)]) {
        crate::bindings::kiwano::server::log::log(level, message, fields)
    }
}

pub(crate) fn with<R>(f: impl FnOnce(&dyn Host) -> R) -> R {
    #[cfg(target_arch = "wasm32")]
    {
        f(&Wasm)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::testing::with_mock(|m| f(m))
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Players by uid, wherever their session is.
pub mod users {
    use super::with;
    use crate::Error;

    /// Pushes raw bytes on `route` to the sessions bound to `uids`; returns the uids not
    /// reached (none in untrusted mode, where the push waits for the call to return).
    ///
    /// # Errors
    /// An invalid route.
    pub fn push_raw(route: &str, body: &[u8], uids: &[String]) -> Result<Vec<String>, Error> {
        with(|h| h.push(route, body, uids))
    }

    /// Pushes a value as JSON; returns the uids not reached.
    ///
    /// # Errors
    /// An invalid route, a value that does not serialize.
    pub fn push<T: serde::Serialize + ?Sized>(route: &str, value: &T, uids: &[String]) -> Result<Vec<String>, Error> {
        let body = serde_json::to_vec(value).map_err(|e| Error::new("PIT-500", e.to_string()))?;
        push_raw(route, &body, uids)
    }

    /// Kicks the sessions bound to `uids`; returns the uids that had none.
    ///
    /// # Errors
    /// Refused by the host.
    pub fn kick(uids: &[String]) -> Result<Vec<String>, Error> {
        with(|h| h.kick(uids))
    }
}

/// Named groups of uids held by the host. Errors carry Pitaya's messages (`group not found`, …).
pub mod groups {
    use std::time::Duration;

    use super::{ms, with};
    use crate::Error;

    /// Creates a group, optionally deleted once `ttl` passes without a renewal.
    ///
    /// # Errors
    /// `group already exists`.
    pub fn create(name: &str, ttl: Option<Duration>) -> Result<(), Error> {
        with(|h| h.group_create(name, ttl.map(ms)))
    }
    /// Deletes a group.
    ///
    /// # Errors
    /// `group not found`.
    pub fn delete(name: &str) -> Result<(), Error> {
        with(|h| h.group_delete(name))
    }
    /// Adds a member.
    ///
    /// # Errors
    /// `group not found`, `member already exists in group`, `empty uid`.
    pub fn add(name: &str, uid: &str) -> Result<(), Error> {
        with(|h| h.group_add(name, uid))
    }
    /// Removes a member.
    ///
    /// # Errors
    /// `group not found`, `member not found in the group`.
    pub fn remove(name: &str, uid: &str) -> Result<(), Error> {
        with(|h| h.group_remove(name, uid))
    }
    /// Removes all members.
    ///
    /// # Errors
    /// `group not found`.
    pub fn remove_all(name: &str) -> Result<(), Error> {
        with(|h| h.group_remove_all(name))
    }
    /// Whether a uid is a member.
    ///
    /// # Errors
    /// `group not found`.
    pub fn contains(name: &str, uid: &str) -> Result<bool, Error> {
        with(|h| h.group_contains(name, uid))
    }
    /// The members, in the order they were added.
    ///
    /// # Errors
    /// `group not found`.
    pub fn members(name: &str) -> Result<Vec<String>, Error> {
        with(|h| h.group_members(name))
    }
    /// The number of members.
    ///
    /// # Errors
    /// `group not found`.
    pub fn count(name: &str) -> Result<u32, Error> {
        with(|h| h.group_count(name))
    }
    /// Restarts the group's TTL.
    ///
    /// # Errors
    /// `group not found`, `memory group TTL not found`.
    pub fn renew(name: &str) -> Result<(), Error> {
        with(|h| h.group_renew(name))
    }
    /// Pushes raw bytes on `route` to every member.
    ///
    /// # Errors
    /// `group not found`.
    pub fn broadcast(name: &str, route: &str, body: &[u8]) -> Result<(), Error> {
        with(|h| h.group_broadcast(name, route, body))
    }
    /// Pushes a value as JSON to every member.
    ///
    /// # Errors
    /// `group not found`.
    pub fn broadcast_json<T: serde::Serialize + ?Sized>(name: &str, route: &str, value: &T) -> Result<(), Error> {
        let body = serde_json::to_vec(value).map_err(|e| Error::new("PIT-500", e.to_string()))?;
        broadcast(name, route, &body)
    }
}

/// Calls to remotes of other servers (`server-type.service.method`).
pub mod rpc {
    use std::time::Duration;

    use super::with;
    use crate::Error;

    fn timeout_ms(t: Option<Duration>) -> Option<u32> {
        t.map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX))
    }

    /// Calls `route` on a server of its type with raw bytes; `timeout` defaults to 5 s.
    ///
    /// # Errors
    /// `PIT-500 no servers available of this type`, `PIT-404`, `PIT-408` on timeout, or the
    /// remote's error.
    pub fn call_raw(route: &str, body: &[u8], timeout: Option<Duration>) -> Result<Vec<u8>, Error> {
        with(|h| h.rpc(None, route, body, timeout_ms(timeout)))
    }

    /// Calls `route` on the server `server_id` (which may be this one) with raw bytes.
    ///
    /// # Errors
    /// As [`call_raw`].
    pub fn call_to_raw(server_id: &str, route: &str, body: &[u8], timeout: Option<Duration>) -> Result<Vec<u8>, Error> {
        with(|h| h.rpc(Some(server_id), route, body, timeout_ms(timeout)))
    }

    /// Calls a JSON remote on a server of its type.
    ///
    /// # Errors
    /// As [`call_raw`], and an answer that does not decode.
    pub fn call<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(route: &str, req: &Req) -> Result<Resp, Error> {
        let body = serde_json::to_vec(req).map_err(|e| Error::new("PIT-500", e.to_string()))?;
        Ok(serde_json::from_slice(&call_raw(route, &body, None)?)?)
    }

    /// Calls a JSON remote on the server `server_id`.
    ///
    /// # Errors
    /// As [`call_raw`], and an answer that does not decode.
    pub fn call_to<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(server_id: &str, route: &str, req: &Req) -> Result<Resp, Error> {
        let body = serde_json::to_vec(req).map_err(|e| Error::new("PIT-500", e.to_string()))?;
        Ok(serde_json::from_slice(&call_to_raw(server_id, route, &body, None)?)?)
    }
}

/// Timers delivered to this instance's `on_timer` hook.
pub mod timers {
    use std::time::Duration;

    use super::{ms, with};
    use crate::Error;

    /// The longest delay or period the host sets a timer for: a year.
    pub const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

    fn started(id: u64) -> Result<u64, Error> {
        if id == 0 {
            Err(Error::new("PIT-500", "timer not set: this instance holds its maximum of live timers"))
        } else {
            Ok(id)
        }
    }

    /// The delay in milliseconds, if the host would set a timer for it.
    fn delay_ms(delay: Duration) -> Result<u64, Error> {
        if delay > MAX_DELAY {
            return Err(Error::new("PIT-400", format!("timer not set: {delay:?} is longer than a year")));
        }
        Ok(ms(delay))
    }

    /// Fires once after `delay`; returns the timer id.
    ///
    /// # Errors
    /// `PIT-500` when the instance already holds its maximum of live timers
    /// (`servers.<type>.max_timers`); `PIT-400` for a delay over [`MAX_DELAY`].
    pub fn after(delay: Duration, payload: &[u8]) -> Result<u64, Error> {
        let ms = delay_ms(delay)?;
        started(with(|h| h.timer_start(ms, false, payload)))
    }

    /// Fires every `period` until cancelled; returns the timer id. A tick that comes while the
    /// previous one still waits for the instance is dropped.
    ///
    /// # Errors
    /// As [`after`].
    pub fn every(period: Duration, payload: &[u8]) -> Result<u64, Error> {
        let ms = delay_ms(period)?;
        started(with(|h| h.timer_start(ms, true, payload)))
    }

    /// Cancels a timer: it never fires afterwards. False if unknown or done.
    pub fn cancel(id: u64) -> bool {
        with(|h| h.timer_cancel(id))
    }
}

/// The host's log, tagged with server type, route and session.
pub mod log {
    use super::with;
    use crate::Level;

    /// A record with structured fields.
    pub fn log(level: Level, message: &str, fields: &[(String, String)]) {
        with(|h| h.log(level, message, fields));
    }
    /// A trace record.
    pub fn trace(message: &str) {
        log(Level::Trace, message, &[]);
    }
    /// A debug record.
    pub fn debug(message: &str) {
        log(Level::Debug, message, &[]);
    }
    /// An info record.
    pub fn info(message: &str) {
        log(Level::Info, message, &[]);
    }
    /// A warning.
    pub fn warn(message: &str) {
        log(Level::Warn, message, &[]);
    }
    /// An error record.
    pub fn error(message: &str) {
        log(Level::Error, message, &[]);
    }
}
