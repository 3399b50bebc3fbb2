//! Admission of connections to a frontend: caps on the connections it holds, on those from one
//! IP address, and on those that have not finished the Pitaya handshake. A connection over a
//! cap is closed at accept, before any byte of it is read.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

/// The caps of one frontend (`servers.<type>.max_connections`, `max_connections_per_address`,
/// `max_handshaking`).
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Connections held at once.
    pub connections: usize,
    /// Connections from one IP address.
    pub per_address: usize,
    /// Connections before their handshake ack.
    pub handshaking: usize,
}

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The frontend holds its maximum.
    #[error("the frontend holds its maximum of {0} connections")]
    Connections(usize),
    /// The address holds its maximum.
    #[error("{0} holds its maximum of {1} connections")]
    PerAddress(IpAddr, usize),
    /// Too many connections are still handshaking.
    #[error("{0} connections are already handshaking")]
    Handshaking(usize),
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    handshaking: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// The connection counts of one frontend.
#[derive(Debug)]
pub struct Admission {
    caps: Caps,
    counts: Mutex<Counts>,
}

impl Admission {
    /// Counts against `caps`.
    pub fn new(caps: Caps) -> Arc<Self> {
        Arc::new(Self { caps, counts: Mutex::new(Counts::default()) })
    }

    /// Admits a connection from `ip`, counted as handshaking until [`Ticket::handshaken`].
    ///
    /// # Errors
    /// The cap it would pass.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refusal> {
        let mut c = self.counts.lock();
        if c.total >= self.caps.connections {
            return Err(Refusal::Connections(self.caps.connections));
        }
        if c.handshaking >= self.caps.handshaking {
            return Err(Refusal::Handshaking(self.caps.handshaking));
        }
        let from = c.per_address.entry(ip).or_default();
        if *from >= self.caps.per_address {
            return Err(Refusal::PerAddress(ip, self.caps.per_address));
        }
        *from += 1;
        c.total += 1;
        c.handshaking += 1;
        Ok(Ticket { admission: self.clone(), ip, handshaking: true })
    }

    /// Connections held now.
    pub fn connections(&self) -> usize {
        self.counts.lock().total
    }
}

/// One admitted connection; dropping it gives its place back.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
    handshaking: bool,
}

impl Ticket {
    /// The connection finished its handshake: it no longer counts as handshaking.
    pub fn handshaken(&mut self) {
        if std::mem::take(&mut self.handshaking) {
            self.admission.counts.lock().handshaking -= 1;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut c = self.admission.counts.lock();
        c.total -= 1;
        if self.handshaking {
            c.handshaking -= 1;
        }
        if let Some(n) = c.per_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_address.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_and_places_come_back() {
        let a = Admission::new(Caps { connections: 3, per_address: 2, handshaking: 2 });
        let (x, y) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let mut t1 = a.admit(x).unwrap();
        let t2 = a.admit(x).unwrap();
        assert_eq!(a.admit(y).unwrap_err(), Refusal::Handshaking(2));
        t1.handshaken();
        assert_eq!(a.admit(x).unwrap_err(), Refusal::PerAddress(x, 2));
        let t3 = a.admit(y).unwrap();
        assert_eq!(a.admit(y).unwrap_err(), Refusal::Connections(3));
        drop((t1, t2, t3));
        assert_eq!(a.connections(), 0);
        assert!(a.counts.lock().per_address.is_empty());
        assert_eq!(a.counts.lock().handshaking, 0);
    }
}
