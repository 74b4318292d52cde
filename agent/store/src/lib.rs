//! The cluster store: one trait, two implementations.
//!
//! - [`embedded`]: a redb database file in the data dir (default; one node,
//!   no other process).
//! - [`etcd`]: an etcd v3 cluster (`--store etcd://h1:2379,h2:2379`); every
//!   agent sharing it is one cluster.
//!
//! The contract, which the shared conformance suite ([`conformance`]) checks
//! against both implementations:
//! - keys are UTF-8 strings, values opaque bytes; every committed change
//!   bumps one store-wide revision (like etcd's), and each key records the
//!   revision of its last change (`mod_revision`);
//! - every write goes through [`Store::txn`], which checks all its
//!   [`Expect`]ations and applies all its ops atomically, or applies nothing
//!   and returns [`StoreError::Conflict`] naming the first key that failed;
//! - reads ([`Store::get`], [`Store::list`]) are linearizable: they see every
//!   transaction committed before they started (never a stale cache);
//! - a lease expires unless kept alive within its TTL; keys written with it
//!   are then deleted (that deletion is seen by watches);
//! - a watch delivers, in revision order, every change under its prefix
//!   after the given revision, or [`StoreError::Compacted`] when that history
//!   is gone.

#[cfg(any(test, feature = "testkit"))]
pub mod conformance;
pub mod embedded;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod instrumented;

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

/// A store-wide revision; every committed transaction gets the next one.
pub type Revision = i64;

/// A lease id.
pub type LeaseId = i64;

/// One key and its current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the transaction that created the key.
    pub create_revision: Revision,
    /// Revision of the transaction that last changed it.
    pub mod_revision: Revision,
    /// Lease the key is bound to, if any.
    pub lease: Option<LeaseId>,
}

/// The result of a prefix listing: the keys in key order and the store
/// revision the listing was taken at (start a watch after it to miss
/// nothing).
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub kvs: Vec<Kv>,
    pub revision: Revision,
}

/// A condition on a key's state when a transaction commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No condition.
    Any,
    /// The key must not exist.
    Absent,
    /// The key must exist with exactly this `mod_revision`.
    Revision(Revision),
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Writes `value` at `key` (bound to `lease` if given).
    Put {
        key: String,
        value: Vec<u8>,
        expect: Expect,
        lease: Option<LeaseId>,
    },
    /// Deletes `key`. Deleting an absent key with `Expect::Any` is not an
    /// error.
    Delete { key: String, expect: Expect },
    /// Only checks `expect` on `key`; writes nothing.
    Check { key: String, expect: Expect },
}

impl Op {
    pub fn put(key: impl Into<String>, value: Vec<u8>, expect: Expect) -> Op {
        Op::Put {
            key: key.into(),
            value,
            expect,
            lease: None,
        }
    }
    pub fn delete(key: impl Into<String>, expect: Expect) -> Op {
        Op::Delete {
            key: key.into(),
            expect,
        }
    }
    /// The key this op touches.
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } | Op::Check { key, .. } => key,
        }
    }
    /// The condition on that key.
    pub fn expect(&self) -> Expect {
        match self {
            Op::Put { expect, .. } | Op::Delete { expect, .. } | Op::Check { expect, .. } => {
                *expect
            }
        }
    }
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or changed; `kv` is its new state.
    Put(Kv),
    /// The key was deleted at `revision`.
    Delete { key: String, revision: Revision },
}

impl WatchEvent {
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
        }
    }
}

/// The receiving end of a watch. The stream ends (`None`) or yields an
/// error when the watch breaks; the caller re-lists and watches again.
pub type WatchStream = tokio::sync::mpsc::Receiver<Result<WatchEvent, StoreError>>;

/// Why a store operation failed.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum StoreError {
    /// A transaction's expectation did not hold: someone else changed `key`
    /// first. Re-read and retry, or report.
    #[error("conflict on {key}: it was changed concurrently")]
    Conflict { key: String },
    /// The store cannot be reached or did not answer in time.
    #[error("store {endpoint} unavailable: {message}")]
    Unavailable { endpoint: String, message: String },
    /// The lease does not exist any more (expired or revoked).
    #[error("lease {0:x} expired or revoked")]
    LeaseExpired(LeaseId),
    /// The history a watch asked for has been compacted away.
    #[error("revision {requested} is compacted (oldest available {oldest})")]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    /// A request the store refuses (empty key, value too large, a
    /// transaction touching one key twice, ...).
    #[error("invalid store request: {0}")]
    Invalid(String),
    /// The store's own data is unreadable.
    #[error("store data corrupt: {0}")]
    Corrupt(String),
    /// A local I/O or database error.
    #[error("store I/O error: {0}")]
    Io(String),
}

impl StoreError {
    /// Whether retrying the same request later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Conflict { .. } | StoreError::Unavailable { .. }
        )
    }
}

/// Largest value accepted (etcd's default request limit is 1.5 MiB).
pub const MAX_VALUE: usize = 1 << 20;

/// The store contract; see the module docs.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// `embedded` or `etcd`, for logs and `vigil node get`.
    fn kind(&self) -> &'static str;
    /// Where the store lives (a file path or the etcd endpoints).
    fn location(&self) -> String;
    /// Linearizable read of one key.
    async fn get(&self, key: &str) -> Result<Option<Kv>, StoreError>;
    /// Linearizable read of every key starting with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Listing, StoreError>;
    /// Applies `ops` atomically if every expectation holds; returns the new
    /// store revision. A transaction may touch each key at most once.
    async fn txn(&self, ops: Vec<Op>) -> Result<Revision, StoreError>;
    /// Grants a lease that expires `ttl` after its last keep-alive.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError>;
    /// Renews a lease; `LeaseExpired` when it is gone.
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError>;
    /// Revokes a lease now, deleting its keys.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError>;
    /// Watches every change under `prefix` with a revision greater than
    /// `after`.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError>;
}

/// A shared handle on the store.
pub type SharedStore = Arc<dyn Store>;

/// Where the store is, parsed from `--store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// The embedded database file under the data dir.
    Embedded,
    /// etcd endpoints (`http://h1:2379`, ...).
    Etcd(Vec<String>),
}

impl std::str::FromStr for StoreUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<StoreUrl, String> {
        if s.is_empty() || s == "embedded" {
            return Ok(StoreUrl::Embedded);
        }
        let Some(rest) = s.strip_prefix("etcd://") else {
            return Err(format!(
                "unknown store {s:?}: use `embedded` or `etcd://host:port[,host:port...]`"
            ));
        };
        let mut endpoints = Vec::new();
        for hp in rest.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            let Some((host, port)) = hp.rsplit_once(':') else {
                return Err(format!("etcd endpoint {hp:?} has no port (host:port)"));
            };
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(format!("etcd endpoint {hp:?} is not host:port"));
            }
            endpoints.push(format!("http://{hp}"));
        }
        if endpoints.is_empty() {
            return Err("etcd:// needs at least one host:port".into());
        }
        Ok(StoreUrl::Etcd(endpoints))
    }
}

/// Checks a transaction's shape before it is sent: non-empty keys, each key
/// once, values within [`MAX_VALUE`].
pub fn check_ops(ops: &[Op]) -> Result<(), StoreError> {
    let mut seen = std::collections::BTreeSet::new();
    for op in ops {
        if op.key().is_empty() {
            return Err(StoreError::Invalid("empty key".into()));
        }
        if !seen.insert(op.key()) {
            return Err(StoreError::Invalid(format!(
                "key {} appears twice in one transaction",
                op.key()
            )));
        }
        if let Op::Put { value, .. } = op
            && value.len() > MAX_VALUE
        {
            return Err(StoreError::Invalid(format!(
                "value of {} is {} bytes; the limit is {MAX_VALUE}",
                op.key(),
                value.len()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse() {
        assert_eq!("".parse::<StoreUrl>(), Ok(StoreUrl::Embedded));
        assert_eq!(
            "etcd://127.0.0.1:2379,h2:2380".parse::<StoreUrl>(),
            Ok(StoreUrl::Etcd(vec![
                "http://127.0.0.1:2379".into(),
                "http://h2:2380".into()
            ]))
        );
        assert!("etcd://".parse::<StoreUrl>().is_err());
        assert!("etcd://host".parse::<StoreUrl>().is_err());
        assert!("etcd://h:99999".parse::<StoreUrl>().is_err());
        assert!("redis://x:1".parse::<StoreUrl>().is_err());
    }

    #[test]
    fn ops_are_checked() {
        assert!(check_ops(&[Op::put("a", vec![], Expect::Any)]).is_ok());
        assert!(check_ops(&[Op::put("", vec![], Expect::Any)]).is_err());
        assert!(
            check_ops(&[
                Op::put("a", vec![], Expect::Any),
                Op::delete("a", Expect::Any)
            ])
            .is_err()
        );
        assert!(check_ops(&[Op::put("a", vec![0; MAX_VALUE + 1], Expect::Any)]).is_err());
    }
}
