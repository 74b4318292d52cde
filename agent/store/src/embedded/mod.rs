//! The embedded store: one redb database file owned by one process.
//!
//! Layout (every table maps bytes to bytes; records are decoded by hand so
//! that a damaged file yields [`StoreError::Corrupt`], never a panic):
//! - `keys`: key → [`Record`] (value, create/mod revision, lease);
//! - `meta`: `revision` (the store revision) and `lease_seq` (the last lease
//!   id handed out);
//! - `leases`: lease id (big-endian) → TTL and expiry, both in ms, the expiry
//!   as wall-clock unix time so that it survives a restart;
//! - `lease_keys`: lease id (big-endian) ++ key → nothing, the keys to
//!   delete when the lease goes.
//!
//! Every [`Store::txn`] is one redb write transaction (fsync on commit). A
//! transaction that changes nothing (only checks, or deletes of absent keys)
//! commits nothing and returns the current revision, as etcd does.
//!
//! Watches read an in-memory history of the latest events, so a watch can
//! start from any revision since the store was opened as long as the history
//! still holds it.

use std::ops::Bound;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};
use tokio::sync::{mpsc, oneshot, watch};

use super::{
    Expect, Kv, LeaseId, Listing, Op, Revision, Store, StoreError, WatchEvent, WatchStream,
    check_ops,
};

mod history;
mod leases;
mod records;
#[cfg(test)]
mod tests;

use history::{History, forward_watch};
use leases::reap_loop;
use records::*;

const KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("keys");
const META: TableDefinition<&[u8], &[u8]> = TableDefinition::new("meta");
const LEASES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("leases");
const LEASE_KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("lease_keys");

const META_REVISION: &[u8] = b"revision";
const META_LEASE_SEQ: &[u8] = b"lease_seq";

/// Events kept for watches that start in the past.
const HISTORY_EVENTS: usize = 10_000;
/// Bytes of keys and values kept in the history: values may be up to 1 MiB,
/// and 10,000 of those would not fit in memory.
const HISTORY_BYTES: usize = 64 << 20;
/// How often expired leases are looked for; a lease outlives its TTL by at
/// most this much.
const REAP_EVERY: Duration = Duration::from_millis(250);
/// Events buffered between a watch and its reader.
const WATCH_BUFFER: usize = 1024;
/// Events a watch copies out of the history per lock, so that one slow
/// watch cannot hold up commits.
const WATCH_BATCH: usize = 256;

/// A store in one redb database file; see the module docs.
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    reaper: Reaper,
}

struct Inner {
    path: PathBuf,
    db: Database,
    /// Held across commit *and* publication, so that watches see
    /// transactions in revision order.
    writer: Mutex<()>,
    history: Arc<Mutex<History>>,
    /// The latest published revision; watches wait on it.
    published: watch::Sender<Revision>,
}

/// The lease reaper task; dropping this stops it.
struct Reaper {
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store at `path`, reaping leases that
    /// expired while it was closed. Must run inside a tokio runtime (the
    /// lease reaper runs on it). Blocks on file I/O.
    pub fn open(path: &Path) -> Result<EmbeddedStore, StoreError> {
        EmbeddedStore::open_with_history(path, HISTORY_EVENTS)
    }

    fn open_with_history(path: &Path, history_events: usize) -> Result<EmbeddedStore, StoreError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            StoreError::Io(format!(
                "{}: the embedded store must be opened inside a tokio runtime",
                path.display()
            ))
        })?;
        let db = open_database(path)?;
        let mut inner = Inner {
            path: path.to_path_buf(),
            db,
            writer: Mutex::new(()),
            history: Arc::new(Mutex::new(History::new(0, history_events))),
            published: watch::channel(0).0,
        };
        let revision = inner.init()?;
        // Nobody can watch yet, so the deletions of leases that expired while
        // the store was closed go unpublished; the history starts after them.
        let (revision, _) = inner
            .reap_expired(now_ms())?
            .unwrap_or((revision, Vec::new()));
        inner.history = Arc::new(Mutex::new(History::new(revision, history_events)));
        inner.published = watch::channel(revision).0;

        let inner = Arc::new(inner);
        let (stop, stopped) = oneshot::channel();
        let task = runtime.spawn(reap_loop(Arc::downgrade(&inner), stopped));
        Ok(EmbeddedStore {
            inner,
            reaper: Reaper {
                stop: Some(stop),
                task: Some(task),
            },
        })
    }

    /// Stops the lease reaper and closes the database file, so that it can be
    /// opened again at once (dropping the store closes it too, but possibly a
    /// moment later).
    pub async fn close(self) -> Result<(), StoreError> {
        let EmbeddedStore { inner, mut reaper } = self;
        reaper.stop.take();
        if let Some(task) = reaper.task.take() {
            // The task only ends between reaps, so it no longer holds the database.
            let _ = task.await;
        }
        let path = inner.path.clone();
        let mut inner = inner;
        // A cancelled call may still run on a blocking thread; wait for it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match Arc::try_unwrap(inner) {
                Ok(owned) => {
                    return owned
                        .db
                        .close()
                        .map_err(|e| db_error(&path, redb::Error::from(e)));
                }
                Err(shared) if tokio::time::Instant::now() < deadline => {
                    inner = shared;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(_) => {
                    return Err(StoreError::Io(format!(
                        "{}: still in use by a running operation; not closed",
                        path.display()
                    )));
                }
            }
        }
    }

    /// Runs `f` on a blocking thread: redb calls do file I/O and fsync.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Io(format!("store task failed: {e}")))?
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // Dropping the sender wakes the task, which then ends; nothing to join.
        self.stop.take();
    }
}

/// Opens or creates the redb file, turning redb's errors (and any panic on a
/// damaged file) into errors that name the file.
fn open_database(path: &Path) -> Result<Database, StoreError> {
    let mut builder = Database::builder();
    // Verify page checksums on every open: a damaged file then fails with
    // `Corrupted` instead of being trusted. The store is small, so this is cheap.
    builder.set_check_integrity_on_open(true);
    builder.set_cache_size(64 << 20);
    let opened = std::panic::catch_unwind(AssertUnwindSafe(|| builder.create(path)));
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => Err(StoreError::Io(format!(
            "{}: the store is already open in another process (or in this one)",
            path.display()
        ))),
        Ok(Err(e)) => Err(db_error(path, redb::Error::from(e))),
        Err(_) => Err(StoreError::Corrupt(format!(
            "{}: the database file is damaged (redb panicked reading it)",
            path.display()
        ))),
    }
}

fn db_error(path: &Path, e: redb::Error) -> StoreError {
    match e {
        redb::Error::Corrupted(m) => StoreError::Corrupt(format!("{}: {m}", path.display())),
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            StoreError::Corrupt(format!("{}: {io}", path.display()))
        }
        other => StoreError::Io(format!("{}: {other}", path.display())),
    }
}

/// Poisoning only means another thread panicked while holding the lock; the
/// data it guards (history, or nothing) is still consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

type Bytes<'t> = Table<'t, &'static [u8], &'static [u8]>;

/// The tables of one write transaction.
struct Tables<'t> {
    keys: Bytes<'t>,
    meta: Bytes<'t>,
    leases: Bytes<'t>,
    lease_keys: Bytes<'t>,
}

impl Tables<'_> {
    fn open(wtx: &redb::WriteTransaction) -> Result<Tables<'_>, redb::Error> {
        Ok(Tables {
            keys: wtx.open_table(KEYS)?,
            meta: wtx.open_table(META)?,
            leases: wtx.open_table(LEASES)?,
            lease_keys: wtx.open_table(LEASE_KEYS)?,
        })
    }
}

/// What a write transaction did: the new revision and its events, if it
/// changed any key.
type Changed = Option<(Revision, Vec<WatchEvent>)>;

impl Inner {
    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        db_error(&self.path, e.into())
    }

    /// Creates the tables of a new file; returns the current revision.
    fn init(&self) -> Result<Revision, StoreError> {
        self.write(|t| {
            let revision = self.meta_i64(&t.meta, META_REVISION)?;
            if revision < 0 {
                return Err(StoreError::Corrupt(format!(
                    "revision {revision} is negative"
                )));
            }
            Ok((true, revision))
        })
    }

    /// Runs `f` in one write transaction; commits when `f` says so (and
    /// succeeds), aborts otherwise. Takes no lock of its own (redb runs one
    /// write transaction at a time): enough for writes that change no key,
    /// such as lease grants and renewals; writes that do must go through
    /// [`Inner::commit_and_publish`].
    fn write<T>(
        &self,
        f: impl FnOnce(&mut Tables<'_>) -> Result<(bool, T), StoreError>,
    ) -> Result<T, StoreError> {
        let wtx = self.db.begin_write().map_err(|e| self.err(e))?;
        let outcome = match Tables::open(&wtx) {
            Ok(mut tables) => f(&mut tables),
            Err(e) => Err(self.err(e)),
        };
        match outcome {
            Ok((true, value)) => {
                wtx.commit().map_err(|e| self.err(e))?;
                Ok(value)
            }
            Ok((false, value)) => {
                wtx.abort().map_err(|e| self.err(e))?;
                Ok(value)
            }
            Err(e) => {
                // The transaction's own failure is the one worth reporting.
                let _ = wtx.abort();
                Err(e)
            }
        }
    }

    /// Runs a write that may change keys: commits it and publishes its
    /// events to watches before the next write can commit.
    fn commit_and_publish<T>(
        &self,
        f: impl FnOnce(&mut Tables<'_>) -> Result<(bool, (T, Changed)), StoreError>,
    ) -> Result<T, StoreError> {
        let _writer = lock(&self.writer);
        let (value, changed) = self.write(f)?;
        if let Some((revision, events)) = changed {
            lock(&self.history).push(events);
            self.published.send_replace(revision);
        }
        Ok(value)
    }

    fn meta_i64(&self, meta: &Bytes<'_>, name: &[u8]) -> Result<i64, StoreError> {
        match meta.get(name).map_err(|e| self.err(e))? {
            None => Ok(0),
            Some(v) => decode_i64(&String::from_utf8_lossy(name), v.value()),
        }
    }

    fn set_meta_i64(&self, meta: &mut Bytes<'_>, name: &[u8], v: i64) -> Result<(), StoreError> {
        meta.insert(name, v.to_le_bytes().as_slice())
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn record(
        &self,
        keys: &impl ReadableTable<&'static [u8], &'static [u8]>,
        key: &str,
    ) -> Result<Option<Record>, StoreError> {
        match keys.get(key.as_bytes()).map_err(|e| self.err(e))? {
            None => Ok(None),
            Some(v) => Record::decode(key, v.value()).map(Some),
        }
    }

    fn apply(&self, t: &mut Tables<'_>, ops: &[Op]) -> Result<(Revision, Changed), StoreError> {
        let current = self.meta_i64(&t.meta, META_REVISION)?;
        // 1. Every expectation, in op order, so the first failing key is named.
        let mut olds = Vec::with_capacity(ops.len());
        for op in ops {
            let old = self.record(&t.keys, op.key())?;
            if !expectation_holds(op.expect(), old.as_ref()) {
                return Err(StoreError::Conflict {
                    key: op.key().to_string(),
                });
            }
            olds.push(old);
        }
        // 2. Leases of puts must be live, before anything is written.
        let now = now_ms();
        for op in ops {
            if let Op::Put {
                lease: Some(id), ..
            } = op
            {
                self.live_lease(t, *id, now)?;
            }
        }
        // 3. Apply, all at the next revision.
        let revision = current + 1;
        let mut events = Vec::new();
        for (op, old) in ops.iter().zip(olds) {
            match op {
                Op::Put {
                    key, value, lease, ..
                } => {
                    let old_lease = old.as_ref().and_then(|o| o.lease);
                    if old_lease != *lease {
                        if let Some(id) = old_lease {
                            t.lease_keys
                                .remove(lease_key_entry(id, key).as_slice())
                                .map_err(|e| self.err(e))?;
                        }
                        if let Some(id) = lease {
                            t.lease_keys
                                .insert(lease_key_entry(*id, key).as_slice(), [].as_slice())
                                .map_err(|e| self.err(e))?;
                        }
                    }
                    let record = Record {
                        value: value.clone(),
                        create_revision: old.map_or(revision, |o| o.create_revision),
                        mod_revision: revision,
                        lease: *lease,
                    };
                    t.keys
                        .insert(key.as_bytes(), record.encode().as_slice())
                        .map_err(|e| self.err(e))?;
                    events.push(WatchEvent::Put(record.into_kv(key.clone())));
                }
                Op::Delete { key, .. } => {
                    if let Some(old) = old {
                        self.remove_key(t, key, old.lease)?;
                        events.push(WatchEvent::Delete {
                            key: key.clone(),
                            revision,
                        });
                    }
                }
                Op::Check { .. } => {}
            }
        }
        if events.is_empty() {
            return Ok((current, None));
        }
        self.set_meta_i64(&mut t.meta, META_REVISION, revision)?;
        Ok((revision, Some((revision, events))))
    }

    fn remove_key(
        &self,
        t: &mut Tables<'_>,
        key: &str,
        lease: Option<LeaseId>,
    ) -> Result<(), StoreError> {
        t.keys.remove(key.as_bytes()).map_err(|e| self.err(e))?;
        if let Some(id) = lease {
            t.lease_keys
                .remove(lease_key_entry(id, key).as_slice())
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn location(&self) -> String {
        self.inner.path.display().to_string()
    }

    async fn get(&self, key: &str) -> Result<Option<Kv>, StoreError> {
        let key = key.to_string();
        self.blocking(move |inner| {
            let rtx = inner.db.begin_read().map_err(|e| inner.err(e))?;
            let keys = rtx.open_table(KEYS).map_err(|e| inner.err(e))?;
            Ok(inner.record(&keys, &key)?.map(|r| r.into_kv(key)))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let prefix = prefix.as_bytes().to_vec();
        self.blocking(move |inner| {
            // One read transaction: the keys and the revision are one snapshot.
            let rtx = inner.db.begin_read().map_err(|e| inner.err(e))?;
            let keys = rtx.open_table(KEYS).map_err(|e| inner.err(e))?;
            let meta = rtx.open_table(META).map_err(|e| inner.err(e))?;
            let revision = match meta.get(META_REVISION).map_err(|e| inner.err(e))? {
                None => 0,
                Some(v) => decode_i64("revision", v.value())?,
            };
            let end = prefix_end(&prefix);
            let upper = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            let mut kvs = Vec::new();
            for entry in keys
                .range::<&[u8]>((Bound::Included(prefix.as_slice()), upper))
                .map_err(|e| inner.err(e))?
            {
                let (k, v) = entry.map_err(|e| inner.err(e))?;
                let key = decode_key(k.value())?;
                kvs.push(Record::decode(&key, v.value())?.into_kv(key));
            }
            Ok(Listing { kvs, revision })
        })
        .await
    }

    async fn txn(&self, ops: Vec<Op>) -> Result<Revision, StoreError> {
        check_ops(&ops)?;
        self.blocking(move |inner| {
            inner.commit_and_publish(|t| {
                let (revision, changed) = inner.apply(t, &ops)?;
                Ok((changed.is_some(), (revision, changed)))
            })
        })
        .await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        if ttl_ms <= 0 {
            return Err(StoreError::Invalid(
                "a lease TTL must be at least 1 ms".into(),
            ));
        }
        self.blocking(move |inner| {
            inner.write(|t| {
                let id = inner.meta_i64(&t.meta, META_LEASE_SEQ)? + 1;
                inner.set_meta_i64(&mut t.meta, META_LEASE_SEQ, id)?;
                let record = LeaseRecord {
                    ttl_ms,
                    expiry_ms: now_ms().saturating_add(ttl_ms),
                };
                t.leases
                    .insert(lease_key(id).as_slice(), record.encode().as_slice())
                    .map_err(|e| inner.err(e))?;
                Ok((true, id))
            })
        })
        .await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.blocking(move |inner| {
            inner.write(|t| {
                let now = now_ms();
                let mut record = inner.live_lease(t, lease, now)?;
                record.expiry_ms = now.saturating_add(record.ttl_ms);
                t.leases
                    .insert(lease_key(lease).as_slice(), record.encode().as_slice())
                    .map_err(|e| inner.err(e))?;
                Ok((true, ()))
            })
        })
        .await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.blocking(move |inner| {
            inner.commit_and_publish(|t| {
                if inner.lease(&t.leases, lease)?.is_none() {
                    return Err(StoreError::LeaseExpired(lease));
                }
                let changed = inner.drop_leases(t, &[lease])?;
                Ok((true, ((), changed)))
            })
        })
        .await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        lock(&self.inner.history).check(after)?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(forward_watch(
            self.inner.history.clone(),
            self.inner.published.subscribe(),
            prefix.to_string(),
            after,
            tx,
        ));
        Ok(rx)
    }
}
