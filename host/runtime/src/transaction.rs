//! Untrusted mode's transactions: the host effects of one call held back until it returns.
//!
//! In a server type with `untrusted = true` a call reaches its session and the host's services
//! through a [`Transaction`]. Session data, group changes, pushes, kicks and pins are recorded,
//! not applied; the call reads its own writes (`get` after `set`, `members` after `add`) and gets
//! the errors the host would give at once (invalid JSON, a missing group, a member already in
//! it: the group view is seeded from the store on first use and answers with Pitaya's errors,
//! [`kiwano_protocol::error::group_errors`]). When the call returns, with an answer or an error
//! of its own, [`Transaction::commit`] applies the effects in the order the call made them; when
//! it traps, runs past its deadline or out of memory, or its answer is refused, the transaction
//! is dropped and nothing happened. An effect the host refuses at commit (a push to a session
//! that closed meanwhile) is logged.
//!
//! Not held back: a bind (only the session pool or the cluster knows whether the uid is free,
//! and the call must know), RPCs (the call needs the answer), timers (they are cancelled when
//! the call fails: the pool does that) and log lines. `users.push` and `users.kick` answer an
//! empty list of uids not reached: whom they reach is known only at commit.

use std::collections::HashMap;
use std::sync::Arc;

use kiwano_protocol::error::{codes, group_errors};
use parking_lot::Mutex;
use serde_json::{Map, Value};

use crate::host::{CallChain, Caller, GroupOp, GroupReply, GuestError, HostServices, RpcTarget, SessionHandle};

/// A session-data value given as JSON text.
///
/// # Errors
/// `PIT-400` for text that is not JSON.
pub fn parse_value(key: &str, value: &str) -> Result<Value, GuestError> {
    serde_json::from_str(value)
        .map_err(|e| GuestError::new(codes::BAD_REQUEST, format!("session data value for {key:?} is not JSON: {e}")))
}

/// Whole session data given as JSON text.
///
/// # Errors
/// `PIT-400` for anything but a JSON object.
pub fn parse_object(data: &str) -> Result<Map<String, Value>, GuestError> {
    match serde_json::from_str::<Value>(data) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(GuestError::new(codes::BAD_REQUEST, "session data must be a JSON object")),
    }
}

/// A group change, owned (see [`GroupOp`]).
#[derive(Debug)]
enum GroupChange {
    Create(String, Option<u64>),
    Delete(String),
    Add(String, String),
    Remove(String, String),
    RemoveAll(String),
    Renew(String),
    Broadcast(String, String, Vec<u8>),
}

impl GroupChange {
    fn op(&self) -> GroupOp<'_> {
        match self {
            Self::Create(n, ttl) => GroupOp::Create(n, *ttl),
            Self::Delete(n) => GroupOp::Delete(n),
            Self::Add(n, u) => GroupOp::Add(n, u),
            Self::Remove(n, u) => GroupOp::Remove(n, u),
            Self::RemoveAll(n) => GroupOp::RemoveAll(n),
            Self::Renew(n) => GroupOp::Renew(n),
            Self::Broadcast(n, r, b) => GroupOp::Broadcast(n, r, b),
        }
    }
}

/// One effect held back, in the order the call made it.
#[derive(Debug)]
enum Effect {
    Set(String, String),
    SetData(String),
    Push(String, Vec<u8>),
    Kick,
    Pin(String, String),
    PushUsers(String, Vec<u8>, Vec<String>),
    KickUsers(Vec<String>),
    Group(GroupChange),
}

#[derive(Default)]
struct Journal {
    effects: Vec<Effect>,
    /// The session data as the call sees it, once it looked.
    data: Option<Map<String, Value>>,
    /// The groups the call touched as it sees them: `None` for a group that does not exist.
    groups: HashMap<String, Option<Vec<String>>>,
}

/// The host effects of one call in untrusted mode (see the module documentation).
pub(crate) struct Transaction {
    journal: Arc<Mutex<Journal>>,
    session: Option<Arc<dyn SessionHandle>>,
    services: Arc<dyn HostServices>,
}

impl Transaction {
    /// A transaction over `session` (if the call has one) and `services`.
    pub(crate) fn begin(session: Option<&Arc<dyn SessionHandle>>, services: &Arc<dyn HostServices>) -> Self {
        let journal = Arc::new(Mutex::new(Journal::default()));
        let session = session.map(|base| Arc::new(TxSession { base: base.clone(), journal: journal.clone() }) as Arc<dyn SessionHandle>);
        let services = Arc::new(TxServices { base: services.clone(), journal: journal.clone() });
        Self { journal, session, services }
    }

    /// The session as the call sees it.
    pub(crate) fn session(&self) -> Option<Arc<dyn SessionHandle>> {
        self.session.clone()
    }

    /// The services as the call sees them.
    pub(crate) fn services(&self) -> Arc<dyn HostServices> {
        self.services.clone()
    }

    /// Applies the effects in order, to `session` and `services` (those given to
    /// [`Transaction::begin`]); an effect refused now is logged with `server_type` and `route`.
    pub(crate) fn commit(self, session: Option<&Arc<dyn SessionHandle>>, services: &dyn HostServices, server_type: &str, route: &str) {
        let effects = std::mem::take(&mut self.journal.lock().effects);
        for effect in effects {
            let result = match (&effect, session) {
                (Effect::Set(k, v), Some(s)) => s.set(k, v),
                (Effect::SetData(d), Some(s)) => s.set_data(d),
                (Effect::Push(r, b), Some(s)) => s.push(r, b),
                (Effect::Kick, Some(s)) => s.kick(),
                (Effect::Pin(t, id), Some(s)) => s.pin(t, id),
                (Effect::PushUsers(r, b, uids), _) => services.push_to_users(r, b, uids).map(drop),
                (Effect::KickUsers(uids), _) => services.kick_users(uids).map(drop),
                (Effect::Group(change), _) => services.group(change.op()).map(drop),
                // Session effects are recorded only by a call with a session.
                (_, None) => Ok(()),
            };
            if let Err(e) = result {
                let session = session.map_or(0, |s| s.id());
                tracing::warn!(server_type, route, session, "untrusted call: {effect:?} refused when the call committed: {} {}", e.code, e.msg);
            }
        }
    }
}

/// The session as an untrusted call sees it.
struct TxSession {
    base: Arc<dyn SessionHandle>,
    journal: Arc<Mutex<Journal>>,
}

impl TxSession {
    /// Runs `f` on the call's view of the session data, read from the session the first time.
    fn data_view<R>(&self, f: impl FnOnce(&mut Map<String, Value>) -> R) -> R {
        let mut j = self.journal.lock();
        let data = j.data.get_or_insert_with(|| {
            // The session's own JSON text of its data: always an object.
            parse_object(&self.base.data()).unwrap_or_else(|e| {
                tracing::error!(session = self.base.id(), "session data unreadable, seen as empty: {}", e.msg);
                Map::new()
            })
        });
        f(data)
    }

    fn record(&self, effect: Effect) {
        self.journal.lock().effects.push(effect);
    }
}

impl SessionHandle for TxSession {
    fn id(&self) -> u64 {
        self.base.id()
    }

    fn uid(&self) -> Option<String> {
        self.base.uid()
    }

    fn bind(&self, uid: &str) -> Result<(), GuestError> {
        self.base.bind(uid)
    }

    fn displaced(&self) -> bool {
        self.base.displaced()
    }

    fn get(&self, key: &str) -> Option<String> {
        self.data_view(|d| d.get(key).map(Value::to_string))
    }

    fn set(&self, key: &str, value: &str) -> Result<(), GuestError> {
        let v = parse_value(key, value)?;
        self.data_view(|d| d.insert(key.to_owned(), v));
        self.record(Effect::Set(key.to_owned(), value.to_owned()));
        Ok(())
    }

    fn data(&self) -> String {
        self.data_view(|d| Value::Object(d.clone()).to_string())
    }

    fn set_data(&self, data: &str) -> Result<(), GuestError> {
        let map = parse_object(data)?;
        self.data_view(|d| *d = map);
        self.record(Effect::SetData(data.to_owned()));
        Ok(())
    }

    fn push(&self, route: &str, body: &[u8]) -> Result<(), GuestError> {
        self.record(Effect::Push(route.to_owned(), body.to_vec()));
        Ok(())
    }

    fn kick(&self) -> Result<(), GuestError> {
        self.record(Effect::Kick);
        Ok(())
    }

    fn handshake(&self) -> String {
        self.base.handshake()
    }

    fn remote_address(&self) -> String {
        self.base.remote_address()
    }

    fn pin(&self, server_type: &str, server_id: &str) -> Result<(), GuestError> {
        self.record(Effect::Pin(server_type.to_owned(), server_id.to_owned()));
        Ok(())
    }
}

/// The host's services as an untrusted call sees them.
struct TxServices {
    base: Arc<dyn HostServices>,
    journal: Arc<Mutex<Journal>>,
}

impl TxServices {
    /// The call's view of group `name`, read from the store the first time.
    fn seed(&self, j: &mut Journal, name: &str) -> Result<(), GuestError> {
        if j.groups.contains_key(name) {
            return Ok(());
        }
        let view = match self.base.group(GroupOp::Members(name)) {
            Ok(GroupReply::Members(m)) => Some(m),
            Ok(other) => return Err(GuestError::new(codes::INTERNAL, format!("group members: unexpected reply {other:?}"))),
            Err(e) if e == group_errors::not_found().into() => None,
            Err(e) => return Err(e),
        };
        j.groups.insert(name.to_owned(), view);
        Ok(())
    }
}

impl HostServices for TxServices {
    fn push_to_users(&self, route: &str, body: &[u8], uids: &[String]) -> Result<Vec<String>, GuestError> {
        self.journal.lock().effects.push(Effect::PushUsers(route.to_owned(), body.to_vec(), uids.to_vec()));
        Ok(Vec::new())
    }

    fn kick_users(&self, uids: &[String]) -> Result<Vec<String>, GuestError> {
        self.journal.lock().effects.push(Effect::KickUsers(uids.to_vec()));
        Ok(Vec::new())
    }

    fn group(&self, op: GroupOp<'_>) -> Result<GroupReply, GuestError> {
        // Pitaya checks the uid before it looks for the group.
        if let GroupOp::Add(_, uid) | GroupOp::Remove(_, uid) | GroupOp::Contains(_, uid) = op {
            group_errors::check_uid(uid)?;
        }
        let name = match op {
            GroupOp::Create(n, _)
            | GroupOp::Delete(n)
            | GroupOp::Add(n, _)
            | GroupOp::Remove(n, _)
            | GroupOp::RemoveAll(n)
            | GroupOp::Contains(n, _)
            | GroupOp::Members(n)
            | GroupOp::Count(n)
            | GroupOp::Renew(n)
            | GroupOp::Broadcast(n, _, _) => n,
        };
        let mut j = self.journal.lock();
        self.seed(&mut j, name)?;
        let Some(view) = j.groups.get_mut(name) else {
            return Err(GuestError::new(codes::INTERNAL, "group view missing"));
        };
        let (reply, change) = match (op, view.as_mut()) {
            (GroupOp::Create(n, ttl), None) => {
                *view = Some(Vec::new());
                (GroupReply::Done, Some(GroupChange::Create(n.to_owned(), ttl)))
            }
            (GroupOp::Create(..), Some(_)) => return Err(group_errors::already_exists().into()),
            (_, None) => return Err(group_errors::not_found().into()),
            (GroupOp::Delete(n), Some(_)) => {
                *view = None;
                (GroupReply::Done, Some(GroupChange::Delete(n.to_owned())))
            }
            (GroupOp::Add(n, uid), Some(members)) => {
                if members.iter().any(|m| m == uid) {
                    return Err(group_errors::member_exists().into());
                }
                members.push(uid.to_owned());
                (GroupReply::Done, Some(GroupChange::Add(n.to_owned(), uid.to_owned())))
            }
            (GroupOp::Remove(n, uid), Some(members)) => {
                let Some(i) = members.iter().position(|m| m == uid) else {
                    return Err(group_errors::member_not_found().into());
                };
                members.remove(i);
                (GroupReply::Done, Some(GroupChange::Remove(n.to_owned(), uid.to_owned())))
            }
            (GroupOp::RemoveAll(n), Some(members)) => {
                members.clear();
                (GroupReply::Done, Some(GroupChange::RemoveAll(n.to_owned())))
            }
            (GroupOp::Contains(_, uid), Some(members)) => (GroupReply::Bool(members.iter().any(|m| m == uid)), None),
            (GroupOp::Members(_), Some(members)) => (GroupReply::Members(members.clone()), None),
            (GroupOp::Count(_), Some(members)) => (GroupReply::Count(u32::try_from(members.len()).unwrap_or(u32::MAX)), None),
            // Whether the group has a TTL to renew is known to the store only: checked at commit.
            (GroupOp::Renew(n), Some(_)) => (GroupReply::Done, Some(GroupChange::Renew(n.to_owned()))),
            (GroupOp::Broadcast(n, route, body), Some(_)) => {
                (GroupReply::Done, Some(GroupChange::Broadcast(n.to_owned(), route.to_owned(), body.to_vec())))
            }
        };
        if let Some(change) = change {
            j.effects.push(Effect::Group(change));
        }
        Ok(reply)
    }

    fn rpc(
        &self,
        caller: &Caller,
        chain: &CallChain,
        target: RpcTarget,
        route: &str,
        body: &[u8],
        timeout: std::time::Duration,
    ) -> Result<Vec<u8>, GuestError> {
        self.base.rpc(caller, chain, target, route, body, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session and services that record what reaches them.
    #[derive(Default)]
    struct Base {
        data: Mutex<Map<String, Value>>,
        groups: Mutex<HashMap<String, Vec<String>>>,
        seen: Mutex<Vec<String>>,
    }

    impl SessionHandle for Base {
        fn id(&self) -> u64 {
            7
        }
        fn uid(&self) -> Option<String> {
            Some("u1".into())
        }
        fn bind(&self, _: &str) -> Result<(), GuestError> {
            Ok(())
        }
        fn displaced(&self) -> bool {
            false
        }
        fn get(&self, key: &str) -> Option<String> {
            self.data.lock().get(key).map(Value::to_string)
        }
        fn set(&self, key: &str, value: &str) -> Result<(), GuestError> {
            self.data.lock().insert(key.into(), parse_value(key, value)?);
            self.seen.lock().push(format!("set {key}={value}"));
            Ok(())
        }
        fn data(&self) -> String {
            Value::Object(self.data.lock().clone()).to_string()
        }
        fn set_data(&self, data: &str) -> Result<(), GuestError> {
            *self.data.lock() = parse_object(data)?;
            Ok(())
        }
        fn push(&self, route: &str, body: &[u8]) -> Result<(), GuestError> {
            self.seen.lock().push(format!("push {route} {}", String::from_utf8_lossy(body)));
            Ok(())
        }
        fn kick(&self) -> Result<(), GuestError> {
            self.seen.lock().push("kick".into());
            Ok(())
        }
        fn handshake(&self) -> String {
            "{}".into()
        }
        fn remote_address(&self) -> String {
            String::new()
        }
        fn pin(&self, _: &str, _: &str) -> Result<(), GuestError> {
            Ok(())
        }
    }

    impl HostServices for Base {
        fn push_to_users(&self, route: &str, _: &[u8], uids: &[String]) -> Result<Vec<String>, GuestError> {
            self.seen.lock().push(format!("users.push {route} {uids:?}"));
            Ok(Vec::new())
        }
        fn kick_users(&self, _: &[String]) -> Result<Vec<String>, GuestError> {
            Ok(Vec::new())
        }
        fn group(&self, op: GroupOp<'_>) -> Result<GroupReply, GuestError> {
            let mut g = self.groups.lock();
            match op {
                GroupOp::Members(n) => g.get(n).cloned().map(GroupReply::Members).ok_or_else(|| group_errors::not_found().into()),
                GroupOp::Create(n, _) => {
                    g.insert(n.into(), Vec::new());
                    self.seen.lock().push(format!("create {n}"));
                    Ok(GroupReply::Done)
                }
                GroupOp::Add(n, u) => {
                    g.get_mut(n).ok_or_else(|| GuestError::from(group_errors::not_found()))?.push(u.into());
                    self.seen.lock().push(format!("add {n} {u}"));
                    Ok(GroupReply::Done)
                }
                GroupOp::Broadcast(n, r, _) => {
                    self.seen.lock().push(format!("broadcast {n} {r}"));
                    Ok(GroupReply::Done)
                }
                other => panic!("not used by these tests: {other:?}"),
            }
        }
        fn rpc(&self, _: &Caller, _: &CallChain, _: RpcTarget, _: &str, _: &[u8], _: std::time::Duration) -> Result<Vec<u8>, GuestError> {
            Ok(Vec::new())
        }
    }

    fn setup() -> (Arc<Base>, Arc<dyn SessionHandle>, Arc<dyn HostServices>, Transaction) {
        let base = Arc::new(Base::default());
        base.data.lock().insert("gold".into(), Value::from(10));
        let session: Arc<dyn SessionHandle> = base.clone();
        let services: Arc<dyn HostServices> = base.clone();
        let tx = Transaction::begin(Some(&session), &services);
        (base, session, services, tx)
    }

    #[test]
    fn a_call_reads_its_own_writes_and_nothing_reaches_the_host_before_commit() {
        let (base, session, services, tx) = setup();
        let (s, g) = (tx.session().unwrap(), tx.services());
        s.set("gold", "25").unwrap();
        assert_eq!(s.get("gold").as_deref(), Some("25"));
        assert_eq!(s.data(), r#"{"gold":25}"#);
        g.group(GroupOp::Create("room", None)).unwrap();
        g.group(GroupOp::Add("room", "u1")).unwrap();
        assert_eq!(g.group(GroupOp::Members("room")).unwrap(), GroupReply::Members(vec!["u1".into()]));
        g.group(GroupOp::Broadcast("room", "onJoin", b"{}")).unwrap();
        s.push("onGold", b"25").unwrap();
        s.kick().unwrap();
        assert!(base.seen.lock().is_empty());
        assert_eq!(base.get("gold").as_deref(), Some("10"));
        tx.commit(Some(&session), &*services, "t", "r.h");
        assert_eq!(
            *base.seen.lock(),
            ["set gold=25", "create room", "add room u1", "broadcast room onJoin", "push onGold 25", "kick"]
        );
        assert_eq!(base.get("gold").as_deref(), Some("25"));
    }

    #[test]
    fn a_dropped_transaction_leaves_nothing_behind() {
        let (base, _, _, tx) = setup();
        tx.session().unwrap().set("gold", "0").unwrap();
        tx.services().push_to_users("onX", b"", &["u2".into()]).unwrap();
        drop(tx);
        assert!(base.seen.lock().is_empty());
        assert_eq!(base.get("gold").as_deref(), Some("10"));
    }

    #[test]
    fn the_view_answers_with_the_stores_errors() {
        let (base, _, _, tx) = setup();
        base.groups.lock().insert("lobby".into(), vec!["a".into()]);
        let g = tx.services();
        let err = |op: GroupOp<'_>| g.group(op).unwrap_err();
        assert_eq!(err(GroupOp::Members("nope")), group_errors::not_found().into());
        assert_eq!(err(GroupOp::Create("lobby", None)), group_errors::already_exists().into());
        assert_eq!(err(GroupOp::Add("lobby", "a")), group_errors::member_exists().into());
        assert_eq!(err(GroupOp::Remove("lobby", "b")), group_errors::member_not_found().into());
        assert_eq!(err(GroupOp::Add("lobby", "")).msg, "empty uid");
        let s = tx.session().unwrap();
        assert_eq!(s.set("k", "{oops").unwrap_err().code, "PIT-400");
        assert_eq!(s.set_data("[1]").unwrap_err().msg, "session data must be a JSON object");
        g.group(GroupOp::Delete("lobby")).unwrap();
        assert_eq!(err(GroupOp::Count("lobby")), group_errors::not_found().into());
        // Only the delete was recorded; the store still has the group.
        assert!(base.groups.lock().contains_key("lobby"));
    }
}
