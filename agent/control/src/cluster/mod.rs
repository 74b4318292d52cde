//! Typed access to the store: objects of the [`vigil_model`] read and
//! written as JSON with compare-and-swap on their revision, plus settings,
//! node liveness and events. Every controller and API handler goes through
//! here; nothing else encodes keys.

pub mod epoch;
pub mod events;
pub mod insync;
pub mod liveness;
pub mod placement;
pub mod uninstall;
pub mod watch;

use std::future::Future;

use thiserror::Error;

use vigil_model::settings::{Settings, StoredSetting};
use vigil_model::state::TransitionError;
use vigil_model::{Object, Versioned, key_of};
use vigil_store::{Expect, Op, Revision, SharedStore, StoreError};

/// Why a cluster operation failed.
#[derive(Debug, Clone, Error)]
pub enum ClusterError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored object does not decode (written by a newer version, or
    /// damaged). The object is left as it is.
    #[error("stored {key} is not a valid object: {message}")]
    Decode { key: String, message: String },
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error(transparent)]
    MigrationPhase(#[from] vigil_model::migration::PhaseError),
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    /// An engine's write on behalf of a volume whose newest engine epoch
    /// is no longer its own (a newer engine started; this one has not
    /// learnt it yet). Nothing was written.
    #[error("volume {volume}: engine epoch {epoch} is superseded by epoch {newest}; not recorded")]
    Superseded {
        volume: String,
        epoch: u64,
        newest: u64,
    },
}

impl ClusterError {
    pub fn is_conflict(&self) -> bool {
        matches!(self, ClusterError::Store(StoreError::Conflict { .. }))
    }
}

pub type Result<T> = std::result::Result<T, ClusterError>;

/// How many times a read-modify-write is retried after losing a race.
const CAS_RETRIES: usize = 32;

/// The typed cluster view of one agent.
#[derive(Clone)]
pub struct Cluster {
    store: SharedStore,
    /// This agent's node name (recorded on events).
    node: String,
}

fn decode<T: Object>(key: &str, value: &[u8]) -> Result<T> {
    serde_json::from_slice(value).map_err(|e| ClusterError::Decode {
        key: key.to_string(),
        message: e.to_string(),
    })
}

/// Encodes an object (serialising our own types cannot fail; the empty
/// fallback would be refused on decode rather than silently accepted).
pub fn encode<T: Object>(object: &T) -> Vec<u8> {
    serde_json::to_vec(object).unwrap_or_default()
}

/// A put of `object` that commits only if its key is in the state `expect`.
pub fn put_op<T: Object>(object: &T, expect: Expect) -> Op {
    Op::put(object.key(), encode(object), expect)
}

/// A put of a read object, compare-and-swap on the revision it was read at.
pub fn update_op<T: Object>(v: &Versioned<T>) -> Op {
    put_op(&v.object, Expect::Revision(v.revision))
}

/// A write of `next` over what a read found: compare-and-swap on the
/// revision read, or a create when the read found nothing.
pub fn replace_op<T: Object>(current: Option<&Versioned<T>>, next: &T) -> Op {
    match current {
        Some(v) => put_op(next, Expect::Revision(v.revision)),
        None => put_op(next, Expect::Absent),
    }
}

/// A delete of a read object, compare-and-swap on its revision.
pub fn delete_op<T: Object>(v: &Versioned<T>) -> Op {
    Op::delete(v.object.key(), Expect::Revision(v.revision))
}

impl Cluster {
    pub fn new(store: SharedStore, node: &str) -> Cluster {
        Cluster {
            store,
            node: node.to_string(),
        }
    }

    /// The store's kind (`embedded` or `etcd`) and where it lives, for
    /// display; the store itself stays behind this type.
    pub fn store_kind(&self) -> &'static str {
        self.store.kind()
    }

    /// Where the store lives (a file path or the etcd endpoints).
    pub fn store_location(&self) -> String {
        self.store.location()
    }

    /// Every key of the store, raw: for the support bundle's dump only
    /// (everything else reads typed objects).
    pub async fn dump(&self) -> Result<vigil_store::Listing> {
        Ok(self.store.list("").await?)
    }

    /// The same store as `node` sees it (tests run several agents on one
    /// store).
    pub fn as_node(&self, node: &str) -> Cluster {
        Cluster::new(self.store.clone(), node)
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Linearizable read of one object.
    pub async fn get<T: Object>(&self, name: &str) -> Result<Option<Versioned<T>>> {
        let key = key_of::<T>(name);
        match self.store.get(&key).await? {
            None => Ok(None),
            Some(kv) => Ok(Some(Versioned {
                object: decode(&key, &kv.value)?,
                revision: kv.mod_revision,
            })),
        }
    }

    /// Like [`Cluster::get`], `NotFound` when absent.
    pub async fn must_get<T: Object>(&self, name: &str) -> Result<Versioned<T>> {
        self.get(name).await?.ok_or_else(|| ClusterError::NotFound {
            kind: T::KIND,
            name: name.to_string(),
        })
    }

    /// Linearizable read of every object of a kind. An object that does not
    /// decode is skipped with a warning (one bad record must not hide the
    /// rest).
    pub async fn list<T: Object>(&self) -> Result<Vec<Versioned<T>>> {
        let listing = self.store.list(T::PREFIX).await?;
        let mut out = Vec::with_capacity(listing.kvs.len());
        for kv in listing.kvs {
            match decode::<T>(&kv.key, &kv.value) {
                Ok(object) => out.push(Versioned {
                    object,
                    revision: kv.mod_revision,
                }),
                Err(e) => tracing::warn!(error = %e, "skipping undecodable object"),
            }
        }
        Ok(out)
    }

    /// Creates an object; `Conflict` when the name is taken.
    pub async fn create<T: Object>(&self, object: &T) -> Result<Revision> {
        Ok(self.store.txn(vec![put_op(object, Expect::Absent)]).await?)
    }

    /// Writes an object read at `v.revision`; `Conflict` if it changed since.
    pub async fn update<T: Object>(&self, v: &Versioned<T>) -> Result<Revision> {
        Ok(self.store.txn(vec![update_op(v)]).await?)
    }

    /// Deletes an object read at `v.revision`; `Conflict` if it changed since.
    pub async fn delete<T: Object>(&self, v: &Versioned<T>) -> Result<Revision> {
        Ok(self.store.txn(vec![delete_op(v)]).await?)
    }

    /// Applies `ops` atomically.
    pub async fn txn(&self, ops: Vec<Op>) -> Result<Revision> {
        Ok(self.store.txn(ops).await?)
    }

    /// Read-modify-write of one object with compare-and-swap, retried when
    /// another writer got there first. `change` returns `Ok(false)` when
    /// there is nothing to write. Returns the object as finally stored.
    pub async fn modify<T, F>(&self, name: &str, mut change: F) -> Result<T>
    where
        T: Object,
        F: FnMut(&mut T) -> Result<bool>,
    {
        for _ in 0..CAS_RETRIES {
            let mut v = self.must_get::<T>(name).await?;
            if !change(&mut v.object)? {
                return Ok(v.object);
            }
            match self.update(&v).await {
                Ok(_) => return Ok(v.object),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict {
            key: key_of::<T>(name),
        }
        .into())
    }

    /// Runs `attempt` until it does not end in a conflict (bounded).
    pub async fn retry<T, F, Fut>(&self, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut last = None;
        for _ in 0..CAS_RETRIES {
            match attempt().await {
                Err(e) if e.is_conflict() => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| StoreError::Conflict { key: String::new() }.into()))
    }

    /// Effective settings, read linearizably (never cached).
    pub async fn settings(&self) -> Result<Settings> {
        let stored = self.list::<StoredSetting>().await?;
        Ok(Settings::from_stored(stored.into_iter().map(|v| v.object)))
    }
}
