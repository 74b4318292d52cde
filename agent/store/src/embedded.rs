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

use std::collections::VecDeque;
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

/// One stored key.
struct Record {
    value: Vec<u8>,
    create_revision: Revision,
    mod_revision: Revision,
    lease: Option<LeaseId>,
}

const RECORD_V1: u8 = 1;
const RECORD_HEADER: usize = 1 + 8 * 3;

impl Record {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD_HEADER + self.value.len());
        out.push(RECORD_V1);
        out.extend_from_slice(&self.create_revision.to_le_bytes());
        out.extend_from_slice(&self.mod_revision.to_le_bytes());
        out.extend_from_slice(&self.lease.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&self.value);
        out
    }

    fn decode(key: &str, bytes: &[u8]) -> Result<Record, StoreError> {
        let bad = |why: &str| StoreError::Corrupt(format!("record of {key}: {why}"));
        if bytes.first() != Some(&RECORD_V1) {
            return Err(bad("unknown record version"));
        }
        let (Some(create_revision), Some(mod_revision), Some(lease)) =
            (i64_at(bytes, 1), i64_at(bytes, 9), i64_at(bytes, 17))
        else {
            return Err(bad("truncated"));
        };
        if create_revision < 1 || mod_revision < create_revision || lease < 0 {
            return Err(bad("impossible revisions or lease"));
        }
        Ok(Record {
            value: bytes[RECORD_HEADER..].to_vec(),
            create_revision,
            mod_revision,
            lease: (lease != 0).then_some(lease),
        })
    }

    fn into_kv(self, key: String) -> Kv {
        Kv {
            key,
            value: self.value,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            lease: self.lease,
        }
    }
}

fn i64_at(bytes: &[u8], at: usize) -> Option<i64> {
    let b: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(i64::from_le_bytes(b))
}

/// A lease's TTL and the unix time (ms) it expires at.
struct LeaseRecord {
    ttl_ms: i64,
    expiry_ms: i64,
}

impl LeaseRecord {
    fn encode(&self) -> [u8; 16] {
        let mut out = [0; 16];
        out[..8].copy_from_slice(&self.ttl_ms.to_le_bytes());
        out[8..].copy_from_slice(&self.expiry_ms.to_le_bytes());
        out
    }

    fn decode(id: LeaseId, bytes: &[u8]) -> Result<LeaseRecord, StoreError> {
        match (bytes.len(), i64_at(bytes, 0), i64_at(bytes, 8)) {
            (16, Some(ttl_ms), Some(expiry_ms)) => Ok(LeaseRecord { ttl_ms, expiry_ms }),
            _ => Err(StoreError::Corrupt(format!(
                "record of lease {id:x} is malformed"
            ))),
        }
    }
}

fn lease_key(id: LeaseId) -> [u8; 8] {
    // Big-endian so that a lease's `lease_keys` entries are one key range.
    id.to_be_bytes()
}

fn lease_key_entry(id: LeaseId, key: &str) -> Vec<u8> {
    let mut out = lease_key(id).to_vec();
    out.extend_from_slice(key.as_bytes());
    out
}

fn decode_key(bytes: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| StoreError::Corrupt("a stored key is not UTF-8".into()))
}

fn decode_i64(what: &str, bytes: &[u8]) -> Result<i64, StoreError> {
    match (bytes.len(), i64_at(bytes, 0)) {
        (8, Some(v)) => Ok(v),
        _ => Err(StoreError::Corrupt(format!("{what} is malformed"))),
    }
}

/// The smallest byte string greater than every string starting with
/// `prefix`, or `None` when there is none (all 0xff).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn expectation_holds(expect: Expect, current: Option<&Record>) -> bool {
    match expect {
        Expect::Any => true,
        Expect::Absent => current.is_none(),
        Expect::Revision(r) => current.is_some_and(|c| c.mod_revision == r),
    }
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

    fn lease(&self, leases: &Bytes<'_>, id: LeaseId) -> Result<Option<LeaseRecord>, StoreError> {
        match leases
            .get(lease_key(id).as_slice())
            .map_err(|e| self.err(e))?
        {
            None => Ok(None),
            Some(v) => LeaseRecord::decode(id, v.value()).map(Some),
        }
    }

    /// A lease that exists and has not expired, or `LeaseExpired`.
    fn live_lease(&self, t: &Tables<'_>, id: LeaseId, now: i64) -> Result<LeaseRecord, StoreError> {
        match self.lease(&t.leases, id)? {
            Some(l) if l.expiry_ms > now => Ok(l),
            _ => Err(StoreError::LeaseExpired(id)),
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

    /// Deletes leases `ids` and their keys at the next revision (if any key
    /// goes).
    fn drop_leases(&self, t: &mut Tables<'_>, ids: &[LeaseId]) -> Result<Changed, StoreError> {
        let revision = self.meta_i64(&t.meta, META_REVISION)? + 1;
        let mut events = Vec::new();
        for &id in ids {
            let start = lease_key(id);
            let end = lease_key(id.saturating_add(1));
            let mut keys = Vec::new();
            for entry in t
                .lease_keys
                .range::<&[u8]>((
                    Bound::Included(start.as_slice()),
                    Bound::Excluded(end.as_slice()),
                ))
                .map_err(|e| self.err(e))?
            {
                let (k, _) = entry.map_err(|e| self.err(e))?;
                let key = k.value().get(8..).ok_or_else(|| {
                    StoreError::Corrupt(format!("an index entry of lease {id:x} is truncated"))
                })?;
                keys.push(decode_key(key)?);
            }
            for key in keys {
                t.lease_keys
                    .remove(lease_key_entry(id, &key).as_slice())
                    .map_err(|e| self.err(e))?;
                // The index may lag a key rebound to another lease; only
                // delete keys still bound to this one.
                if let Some(record) = self.record(&t.keys, &key)?
                    && record.lease == Some(id)
                {
                    t.keys.remove(key.as_bytes()).map_err(|e| self.err(e))?;
                    events.push(WatchEvent::Delete { key, revision });
                }
            }
            t.leases.remove(start.as_slice()).map_err(|e| self.err(e))?;
        }
        if events.is_empty() {
            return Ok(None);
        }
        self.set_meta_i64(&mut t.meta, META_REVISION, revision)?;
        Ok(Some((revision, events)))
    }

    /// Deletes every lease expired at `now` with its keys.
    fn reap_expired(&self, now: i64) -> Result<Changed, StoreError> {
        self.commit_and_publish(|t| {
            let mut expired = Vec::new();
            for entry in t.leases.iter().map_err(|e| self.err(e))? {
                let (k, v) = entry.map_err(|e| self.err(e))?;
                let id = decode_i64_be(k.value())?;
                if LeaseRecord::decode(id, v.value())?.expiry_ms <= now {
                    expired.push(id);
                }
            }
            if expired.is_empty() {
                return Ok((false, (None, None)));
            }
            let changed = self.drop_leases(t, &expired)?;
            Ok((true, (changed.clone(), changed)))
        })
    }
}

fn decode_i64_be(bytes: &[u8]) -> Result<i64, StoreError> {
    let b: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("a lease id is malformed".into()))?;
    Ok(i64::from_be_bytes(b))
}

async fn reap_loop(inner: Weak<Inner>, mut stop: oneshot::Receiver<()>) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        // A weak reference, so that a forgotten store still closes.
        let Some(inner) = inner.upgrade() else { return };
        let path = inner.path.clone();
        match tokio::task::spawn_blocking(move || inner.reap_expired(now_ms())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(store = %path.display(), "reap expired leases: {e}"),
            Err(e) => tracing::warn!(store = %path.display(), "lease reaper task failed: {e}"),
        }
    }
}

/// The latest events, for watches.
struct History {
    events: VecDeque<WatchEvent>,
    bytes: usize,
    /// Events up to this revision may be missing (before the store was
    /// opened, or evicted); a watch after it sees everything.
    compacted_through: Revision,
    max_events: usize,
}

fn event_bytes(e: &WatchEvent) -> usize {
    let value = match e {
        WatchEvent::Put(kv) => kv.value.len(),
        WatchEvent::Delete { .. } => 0,
    };
    e.key().len() + value + 64
}

impl History {
    fn new(compacted_through: Revision, max_events: usize) -> History {
        History {
            events: VecDeque::new(),
            bytes: 0,
            compacted_through,
            max_events,
        }
    }

    fn push(&mut self, events: Vec<WatchEvent>) {
        for e in events {
            self.bytes += event_bytes(&e);
            self.events.push_back(e);
        }
        while self.events.len() > self.max_events || self.bytes > HISTORY_BYTES {
            let Some(e) = self.events.pop_front() else {
                break;
            };
            self.bytes -= event_bytes(&e);
            self.compacted_through = self.compacted_through.max(e.revision());
        }
    }

    fn check(&self, after: Revision) -> Result<(), StoreError> {
        if after < self.compacted_through {
            return Err(StoreError::Compacted {
                requested: after + 1,
                oldest: self.compacted_through + 1,
            });
        }
        Ok(())
    }

    /// Events under `prefix` with revisions after `after`, whole revisions
    /// at a time, at most about [`WATCH_BATCH`] looked at; and the revision
    /// read up to.
    fn since(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<(Vec<WatchEvent>, Revision), StoreError> {
        self.check(after)?;
        let start = self.events.partition_point(|e| e.revision() <= after);
        let mut read_to = after;
        let mut out = Vec::new();
        for (n, e) in self.events.range(start..).enumerate() {
            if n >= WATCH_BATCH && e.revision() != read_to {
                break;
            }
            read_to = e.revision();
            if e.key().starts_with(prefix) {
                out.push(e.clone());
            }
        }
        Ok((out, read_to))
    }
}

/// Feeds one watch from the history. It needs no hand-off between replay
/// and live events: it always reads the history after marking the latest
/// published revision as seen, so a commit it misses wakes it again.
async fn forward_watch(
    history: Arc<Mutex<History>>,
    mut published: watch::Receiver<Revision>,
    prefix: String,
    mut after: Revision,
    tx: mpsc::Sender<Result<WatchEvent, StoreError>>,
) {
    loop {
        published.borrow_and_update();
        let batch = lock(&history).since(&prefix, after);
        match batch {
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
            Ok((events, read_to)) => {
                for e in events {
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
                if read_to != after {
                    after = read_to;
                    continue;
                }
            }
        }
        tokio::select! {
            changed = published.changed() => {
                // Closed: the store is gone and every commit was published.
                if changed.is_err() {
                    return;
                }
            }
            _ = tx.closed() => return,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    fn fresh() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(&dir.path().join("store.redb")).expect("open store");
        (dir, store)
    }

    macro_rules! conformance_tests {
        ($($name:ident),* $(,)?) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (_dir, store) = fresh();
                conformance::$name(Arc::new(store)).await;
            }
        )*};
    }

    conformance_tests!(
        create_if_absent_conflicts,
        stale_revision_conflicts_and_applies_nothing,
        delete_checks_expectations,
        revisions_increase,
        list_is_ordered_by_key_under_prefix,
        watch_delivers_changes_in_order,
        lease_expiry_deletes_keys_unless_kept_alive,
        revoke_deletes_keys,
        concurrent_increments_are_atomic,
        invalid_ops_are_rejected,
    );

    #[tokio::test]
    async fn data_survives_close_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.redb");
        let store = EmbeddedStore::open(&path).expect("open");
        store
            .txn(vec![Op::put("a", b"1".to_vec(), Expect::Absent)])
            .await
            .expect("put a");
        let last = store
            .txn(vec![Op::put("b", b"2".to_vec(), Expect::Absent)])
            .await
            .expect("put b");
        store.close().await.expect("close");

        let store = EmbeddedStore::open(&path).expect("reopen");
        let listing = store.list("").await.expect("list");
        let keys: Vec<_> = listing.kvs.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(listing.revision, last);
        let next = store
            .txn(vec![Op::put("c", b"3".to_vec(), Expect::Absent)])
            .await
            .expect("put c");
        assert_eq!(next, last + 1);
        // History before the reopen is gone; from the reopen on it is there.
        assert!(matches!(
            store.watch("", last - 1).await,
            Err(StoreError::Compacted { .. })
        ));
        let mut w = store.watch("", last).await.expect("watch");
        let e = w.recv().await.expect("event").expect("not an error");
        assert_eq!(e.key(), "c");
    }

    #[tokio::test]
    async fn leases_that_expired_while_closed_are_reaped_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.redb");
        let store = EmbeddedStore::open(&path).expect("open");
        let lease = store
            .grant_lease(Duration::from_millis(300))
            .await
            .expect("grant");
        store
            .txn(vec![Op::Put {
                key: "leased".into(),
                value: vec![],
                expect: Expect::Absent,
                lease: Some(lease),
            }])
            .await
            .expect("put");
        store.close().await.expect("close");
        std::thread::sleep(Duration::from_millis(400));

        let store = EmbeddedStore::open(&path).expect("reopen");
        assert_eq!(store.get("leased").await.expect("get"), None);
        assert_eq!(
            store.keep_alive(lease).await,
            Err(StoreError::LeaseExpired(lease))
        );
    }

    #[tokio::test]
    async fn garbage_file_is_reported_corrupt_and_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.redb");
        let garbage: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &garbage).expect("write garbage");

        let err = EmbeddedStore::open(&path).err().expect("open must fail");
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
        assert!(err.to_string().contains("store.redb"), "{err}");
        assert_eq!(std::fs::read(&path).expect("read back"), garbage);
    }

    #[tokio::test]
    async fn damaged_pages_are_reported_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.redb");
        let store = EmbeddedStore::open(&path).expect("open");
        for i in 0..50 {
            store
                .txn(vec![Op::put(format!("k{i}"), vec![i; 100], Expect::Any)])
                .await
                .expect("put");
        }
        store.close().await.expect("close");
        // Keep redb's header page; scribble over every page after it.
        let mut bytes = std::fs::read(&path).expect("read");
        for (i, b) in bytes.iter_mut().enumerate().skip(4096) {
            *b = (i * 31 % 253) as u8;
        }
        std::fs::write(&path, &bytes).expect("write damaged file");

        let err = EmbeddedStore::open(&path).err().expect("open must fail");
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    }

    #[tokio::test]
    async fn second_open_of_the_same_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.redb");
        let _first = EmbeddedStore::open(&path).expect("open");
        let err = EmbeddedStore::open(&path)
            .err()
            .expect("second open must fail");
        assert!(err.to_string().contains("already open"), "{err}");
        assert!(err.to_string().contains("store.redb"), "{err}");
    }

    #[tokio::test]
    async fn watch_behind_the_history_is_compacted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open_with_history(&dir.path().join("s.redb"), 4).expect("open");
        let mut last = 0;
        for i in 0..6 {
            last = store
                .txn(vec![Op::put(format!("k{i}"), vec![], Expect::Any)])
                .await
                .expect("put");
        }
        // Revisions 3..=6 are kept; a watch must start after 2 or later.
        assert_eq!(
            store.watch("", 1).await.err(),
            Some(StoreError::Compacted {
                requested: 2,
                oldest: 3
            })
        );
        let mut w = store.watch("", 2).await.expect("watch after 2");
        for rev in 3..=last {
            let e = w.recv().await.expect("event").expect("not an error");
            assert_eq!(e.revision(), rev);
        }
    }

    #[test]
    fn damaged_records_are_corrupt_not_panics() {
        assert!(matches!(
            Record::decode("k", &[]),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            Record::decode("k", &[RECORD_V1, 1, 2]),
            Err(StoreError::Corrupt(_))
        ));
        let ok = Record {
            value: b"v".to_vec(),
            create_revision: 2,
            mod_revision: 5,
            lease: Some(7),
        };
        let back = Record::decode("k", &ok.encode()).expect("round trip");
        assert_eq!(back.into_kv("k".into()), ok.into_kv("k".into()));
        assert!(LeaseRecord::decode(1, &[0; 15]).is_err());
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff"), None);
    }
}
