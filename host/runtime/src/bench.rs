//! Micro-measurements of the runtime, for `kiwano bench`: the cost of one warm guest call, of
//! creating an instance from the prepared component, and of one call in untrusted mode.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use wasmtime::Store;
use wasmtime::component::Resource;

use crate::component::Component;
use crate::engine::Runtime;
use crate::host::{CallChain, CallToken, Caller, GroupOp, GroupReply, GuestError, HostServices, HostState, LogTag, RpcTarget, SessionHandle};
use crate::timers::{TimerHandle, Timers};
use crate::transaction::Transaction;

struct NoServices;

impl HostServices for NoServices {
    fn push_to_users(&self, _: &str, _: &[u8], uids: &[String]) -> Result<Vec<String>, GuestError> {
        Ok(uids.to_vec())
    }
    fn kick_users(&self, uids: &[String]) -> Result<Vec<String>, GuestError> {
        Ok(uids.to_vec())
    }
    fn group(&self, _: GroupOp<'_>) -> Result<GroupReply, GuestError> {
        Err(GuestError::new("PIT-404", "group not found"))
    }
    fn rpc(&self, _: &Caller, _: &CallChain, _: RpcTarget, _: &str, _: &[u8], _: Duration) -> Result<Vec<u8>, GuestError> {
        Err(GuestError::new("PIT-500", "no servers available of this type"))
    }
}

struct BenchSession;

impl SessionHandle for BenchSession {
    fn id(&self) -> u64 {
        7
    }
    fn uid(&self) -> Option<String> {
        None
    }
    fn bind(&self, _: &str) -> Result<(), GuestError> {
        Ok(())
    }
    fn displaced(&self) -> bool {
        false
    }
    fn get(&self, _: &str) -> Option<String> {
        None
    }
    fn set(&self, _: &str, _: &str) -> Result<(), GuestError> {
        Ok(())
    }
    fn data(&self) -> String {
        "{}".into()
    }
    fn set_data(&self, _: &str) -> Result<(), GuestError> {
        Ok(())
    }
    fn push(&self, _: &str, _: &[u8]) -> Result<(), GuestError> {
        Ok(())
    }
    fn kick(&self) -> Result<(), GuestError> {
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

/// What [`call_cost`] measured.
#[derive(Debug, Clone, Copy)]
pub struct CallCost {
    /// One warm `handle` call (host → guest → host import → guest → host), as the pool makes it.
    pub per_call: Duration,
    /// Creating and initialising an instance from the prepared component.
    pub instantiate: Duration,
    /// One call in untrusted mode: a fresh instance (created, `init`ed, dropped) and the call's
    /// host effects held in a transaction and committed.
    pub untrusted: Duration,
}

/// Calls `route` of `component` `calls` times on one warm instance, as the pool does (a
/// `call-context` per call, the epoch deadline set), and instantiates it `instances` times.
///
/// # Errors
/// A component that does not instantiate or traps.
pub fn call_cost(runtime: &Runtime, component: &Component, route: &str, calls: u32, instances: u32) -> Result<CallCost, String> {
    let (tx, _rx) = std::sync::mpsc::channel();
    let timers = TimerHandle { timers: Arc::new(Timers::default()), tx, rt: None, count: Arc::default(), max: 1024 };
    let caller = Arc::new(Caller { server_type: "bench".into(), server_id: "bench-1".into() });
    let services: Arc<dyn HostServices> = Arc::new(NoServices);
    let limits = crate::host::CallLimits::default();
    let tag = Arc::new(Mutex::new(LogTag::new("bench", 0, 100, &limits)));
    let metrics = kiwano_metrics::GuestMetrics::detached("bench", 1000);
    let make = || -> Result<(Store<HostState>, crate::bindings::Server), String> {
        let state = HostState::new(tag.clone(), 64 << 20, services.clone(), caller.clone(), timers.clone(), limits.clone(), metrics.clone());
        let mut store = Store::new(&runtime.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1_000_000);
        let bindings = component.pre.instantiate(&mut store).map_err(|e| format!("{e:#}"))?;
        let info = crate::bindings::types::InitInfo {
            server_type: "bench".into(),
            server_id: "bench-1".into(),
            instance: 0,
            config: "{}".into(),
        };
        bindings.kiwano_server_guest().call_init(&mut store, &info).map_err(|e| format!("{e:#}"))?.map_err(|e| e.msg)?;
        Ok((store, bindings))
    };
    let start = Instant::now();
    for _ in 0..instances.max(1) {
        drop(make()?);
    }
    let instantiate = start.elapsed() / instances.max(1);
    let session: Arc<dyn SessionHandle> = Arc::new(BenchSession);
    let body = b"{}".to_vec();
    let call = |store: &mut Store<HostState>, bindings: &crate::bindings::Server, session: Arc<dyn SessionHandle>| -> Result<(), String> {
        let data = store.data_mut();
        data.call = Some(session);
        let token = data.table.push(CallToken).map_err(|e| e.to_string())?;
        store.set_epoch_deadline(1_000);
        let r = bindings.kiwano_server_guest().call_handle(&mut *store, Resource::new_borrow(token.rep()), route, &body);
        let data = store.data_mut();
        let _ = data.table.delete(token);
        data.call = None;
        r.map_err(|e| format!("{e:#}"))?.map_err(|e| e.msg).map(drop)
    };
    let start = Instant::now();
    for _ in 0..instances.max(1) {
        let (mut store, bindings) = make()?;
        let tx = Transaction::begin(Some(&session), &services);
        store.data_mut().services = tx.services();
        call(&mut store, &bindings, tx.session().unwrap_or_else(|| session.clone()))?;
        tx.commit(Some(&session), &*services, "bench", route);
    }
    let untrusted = start.elapsed() / instances.max(1);
    let (mut store, bindings) = make()?;
    let one = |store: &mut Store<HostState>| call(store, &bindings, session.clone());
    for _ in 0..1000 {
        one(&mut store)?;
    }
    let start = Instant::now();
    for _ in 0..calls.max(1) {
        one(&mut store)?;
    }
    Ok(CallCost { per_call: start.elapsed() / calls.max(1), instantiate, untrusted })
}
