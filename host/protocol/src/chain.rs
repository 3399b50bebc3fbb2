//! The chain of calls an RPC stands in, as Kiwano carries it in the propagated metadata
//! (`kiwano.hops`, `kiwano.waiting`): how many RPCs led to a call, and which remote instances
//! wait for it. Pitaya servers ignore these keys and pass them on unchanged.

/// Where an RPC stands in a chain of calls, carried in the RPC's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallChain {
    /// The RPCs that led to this one, this one included (a client call's RPC has 1).
    pub hops: u64,
    /// The remote instances up the chain that wait for this call to return, as
    /// `server-id#r<index>` separated by commas: a remote sent to one of them would wait on its
    /// own caller, so it is sent to another instance of the type or failed at once.
    pub waiting: String,
}

impl CallChain {
    /// Whether the remote instance `entry` (`server-id#r<index>`) waits up the chain.
    pub fn holds(&self, entry: &str) -> bool {
        self.waiting.split(',').any(|w| w == entry)
    }
}

