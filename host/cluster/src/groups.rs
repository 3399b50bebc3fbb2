//! In-memory groups (Pitaya's default group service, §5): named, ordered sets of uids with an
//! optional TTL, swept periodically. Errors carry Pitaya's codes and messages.

use std::collections::HashMap;
use std::time::Duration;

// tokio's clock: the same as the system's, except in tests that pause it.
use tokio::time::Instant;

use kiwano_protocol::PitayaError;
use kiwano_protocol::error::codes;
use kiwano_protocol::error::group_errors::{self, check_uid, not_found};
use parking_lot::Mutex;

use crate::{BoxFuture, ClusterError, Groups};


struct Group {
    uids: Vec<String>,
    ttl: Option<Duration>,
    refreshed: Instant,
}

/// All groups of this process.
#[derive(Default)]
pub struct MemoryGroups {
    groups: Mutex<HashMap<String, Group>>,
}

impl std::fmt::Debug for MemoryGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryGroups").field("groups", &self.groups.lock().len()).finish()
    }
}


impl MemoryGroups {
    fn with<T>(&self, name: &str, f: impl FnOnce(&mut Group) -> Result<T, PitayaError>) -> Result<T, PitayaError> {
        let mut groups = self.groups.lock();
        f(groups.get_mut(name).ok_or_else(not_found)?)
    }

    /// Creates a group.
    ///
    /// # Errors
    /// `group already exists`.
    pub fn create(&self, name: &str, ttl: Option<Duration>) -> Result<(), PitayaError> {
        let mut groups = self.groups.lock();
        if groups.contains_key(name) {
            return Err(group_errors::already_exists());
        }
        groups.insert(name.to_owned(), Group { uids: Vec::new(), ttl, refreshed: Instant::now() });
        Ok(())
    }

    /// Deletes a group.
    ///
    /// # Errors
    /// `group not found`.
    pub fn delete(&self, name: &str) -> Result<(), PitayaError> {
        self.groups.lock().remove(name).map(drop).ok_or_else(not_found)
    }

    /// Adds a member.
    ///
    /// # Errors
    /// `empty uid`, `group not found`, `member already exists in group`.
    pub fn add(&self, name: &str, uid: &str) -> Result<(), PitayaError> {
        check_uid(uid)?;
        self.with(name, |g| {
            if g.uids.iter().any(|u| u == uid) {
                return Err(group_errors::member_exists());
            }
            g.uids.push(uid.to_owned());
            Ok(())
        })
    }

    /// Removes a member.
    ///
    /// # Errors
    /// `empty uid`, `group not found`, `member not found in the group`.
    pub fn remove(&self, name: &str, uid: &str) -> Result<(), PitayaError> {
        check_uid(uid)?;
        self.with(name, |g| match g.uids.iter().position(|u| u == uid) {
            Some(i) => {
                g.uids.remove(i);
                Ok(())
            }
            None => Err(group_errors::member_not_found()),
        })
    }

    /// Removes every member.
    ///
    /// # Errors
    /// `group not found`.
    pub fn remove_all(&self, name: &str) -> Result<(), PitayaError> {
        self.with(name, |g| {
            g.uids.clear();
            Ok(())
        })
    }

    /// Whether `uid` is a member.
    ///
    /// # Errors
    /// `empty uid`, `group not found`.
    pub fn contains(&self, name: &str, uid: &str) -> Result<bool, PitayaError> {
        check_uid(uid)?;
        self.with(name, |g| Ok(g.uids.iter().any(|u| u == uid)))
    }

    /// The members, in the order they were added.
    ///
    /// # Errors
    /// `group not found`.
    pub fn members(&self, name: &str) -> Result<Vec<String>, PitayaError> {
        self.with(name, |g| Ok(g.uids.clone()))
    }

    /// The number of members.
    ///
    /// # Errors
    /// `group not found`.
    pub fn count(&self, name: &str) -> Result<u32, PitayaError> {
        self.with(name, |g| Ok(u32::try_from(g.uids.len()).unwrap_or(u32::MAX)))
    }

    /// Restarts the TTL.
    ///
    /// # Errors
    /// `group not found`, `memory group TTL not found` (a group without TTL).
    pub fn renew(&self, name: &str) -> Result<(), PitayaError> {
        self.with(name, |g| {
            if g.ttl.is_none() {
                return Err(PitayaError::new(codes::NOT_FOUND, "memory group TTL not found"));
            }
            g.refreshed = Instant::now();
            Ok(())
        })
    }

    /// Deletes the groups whose TTL passed; returns their names.
    pub fn sweep(&self) -> Vec<String> {
        let now = Instant::now();
        let mut gone = Vec::new();
        self.groups.lock().retain(|name, g| {
            let alive = g.ttl.is_none_or(|ttl| now.duration_since(g.refreshed) <= ttl);
            if !alive {
                gone.push(name.clone());
            }
            alive
        });
        gone
    }
}

fn ready<T: Send + 'static>(r: Result<T, PitayaError>) -> BoxFuture<'static, Result<T, ClusterError>> {
    Box::pin(std::future::ready(r.map_err(ClusterError::Pitaya)))
}

impl Groups for MemoryGroups {
    fn create<'a>(&'a self, name: &'a str, ttl: Option<Duration>) -> BoxFuture<'a, Result<(), ClusterError>> {
        ready(MemoryGroups::create(self, name, ttl))
    }
    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), ClusterError>> {
        ready(MemoryGroups::delete(self, name))
    }
    fn add<'a>(&'a self, name: &'a str, uid: &'a str) -> BoxFuture<'a, Result<(), ClusterError>> {
        ready(MemoryGroups::add(self, name, uid))
    }
    fn remove<'a>(&'a self, name: &'a str, uid: &'a str) -> BoxFuture<'a, Result<(), ClusterError>> {
        ready(MemoryGroups::remove(self, name, uid))
    }
    fn remove_all<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), ClusterError>> {
        ready(MemoryGroups::remove_all(self, name))
    }
    fn contains<'a>(&'a self, name: &'a str, uid: &'a str) -> BoxFuture<'a, Result<bool, ClusterError>> {
        ready(MemoryGroups::contains(self, name, uid))
    }
    fn members<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, ClusterError>> {
        ready(MemoryGroups::members(self, name))
    }
    fn count<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<u32, ClusterError>> {
        ready(MemoryGroups::count(self, name))
    }
    fn renew<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), ClusterError>> {
        ready(MemoryGroups::renew(self, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg<T: std::fmt::Debug>(r: Result<T, PitayaError>) -> String {
        r.unwrap_err().msg
    }

    #[test]
    fn lifecycle_and_errors() {
        let g = MemoryGroups::default();
        assert_eq!(msg(g.members("room")), "group not found");
        g.create("room", None).unwrap();
        assert_eq!(msg(g.create("room", None)), "group already exists");
        g.add("room", "a").unwrap();
        g.add("room", "b").unwrap();
        assert_eq!(msg(g.add("room", "a")), "member already exists in group");
        assert_eq!(msg(g.add("room", "")), "empty uid");
        assert_eq!(g.members("room").unwrap(), vec!["a", "b"]);
        assert!(g.contains("room", "b").unwrap());
        g.remove("room", "a").unwrap();
        assert_eq!(msg(g.remove("room", "a")), "member not found in the group");
        assert_eq!(g.count("room").unwrap(), 1);
        assert_eq!(msg(g.renew("room")), "memory group TTL not found");
        g.remove_all("room").unwrap();
        assert_eq!(g.count("room").unwrap(), 0);
        g.delete("room").unwrap();
        assert_eq!(msg(g.delete("room")), "group not found");
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_sweeps_unless_renewed() {
        let g = MemoryGroups::default();
        g.create("short", Some(Duration::from_millis(30))).unwrap();
        g.create("kept", None).unwrap();
        tokio::time::advance(Duration::from_millis(20)).await;
        g.renew("short").unwrap();
        tokio::time::advance(Duration::from_millis(20)).await;
        assert!(g.sweep().is_empty(), "40 ms after creation, 20 after the renewal");
        tokio::time::advance(Duration::from_millis(11)).await;
        assert_eq!(g.sweep(), vec!["short"], "31 ms after the renewal");
        assert!(g.members("kept").is_ok());
    }
}
