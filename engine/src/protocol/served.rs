//! The connections a replica server holds open, for whoever watches the
//! server from outside the data path (the agent's eBPF peer filter learns
//! from it which of its sockets carry which replica, and so which node's
//! engine sits at the other end).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// One open, authenticated connection.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServedConnection {
    /// The client's address and port, as the server's socket sees it.
    pub peer: SocketAddr,
    /// The replica the client opened.
    pub replica: String,
}

/// The open connections of one server. Cloning shares the list.
#[derive(Debug, Clone, Default)]
pub struct ServedConnections {
    open: Arc<Mutex<BTreeMap<u64, ServedConnection>>>,
    next_id: Arc<AtomicU64>,
}

impl ServedConnections {
    /// The connections open now.
    pub fn list(&self) -> Vec<ServedConnection> {
        self.lock().values().cloned().collect()
    }

    /// Records a connection until the returned guard drops.
    pub(crate) fn open(&self, peer: SocketAddr, replica: &str) -> Served {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            ServedConnection {
                peer,
                replica: replica.to_string(),
            },
        );
        Served {
            list: self.clone(),
            id,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, ServedConnection>> {
        // The map is left consistent by every holder: a poisoned lock
        // only means a panic elsewhere while it was held.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection's entry; removed when dropped (the connection ended).
pub(crate) struct Served {
    list: ServedConnections,
    id: u64,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.list.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_lasts_as_long_as_its_guard() {
        let c = ServedConnections::default();
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap_or_else(|e| panic!("{e}"));
        let a = c.open(peer, "r1");
        let b = c.open(peer, "r2");
        assert_eq!(c.list().len(), 2);
        drop(a);
        assert_eq!(
            c.list(),
            vec![ServedConnection {
                peer,
                replica: "r2".into()
            }]
        );
        drop(b);
        assert!(c.list().is_empty());
    }
}
