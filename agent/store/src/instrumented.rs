//! A [`Store`] that measures every request it forwards: latency per
//! operation (`vigil_store_request_duration_seconds{op}`) and failures per
//! operation and kind (`vigil_store_request_errors_total{op,kind}`). The
//! agent wraps whichever store it opened in this, so both implementations
//! are measured the same way and neither knows about metrics.

use std::time::{Duration, Instant};

use metrics::Histogram;

use super::{Kv, LeaseId, Listing, Op, Revision, SharedStore, Store, StoreError, WatchStream};

/// The families this wrapper records (the metrics catalogue lists them with
/// their HELP and labels).
pub mod names {
    /// Histogram, label `op`.
    pub const STORE_REQUEST_DURATION: &str = "vigil_store_request_duration_seconds";
    /// Counter, labels `op` and `kind`.
    pub const STORE_REQUEST_ERRORS: &str = "vigil_store_request_errors_total";
}

/// The store operations, as the `op` label names them.
const OPS: [&str; 7] = [
    "get",
    "list",
    "txn",
    "grant_lease",
    "keep_alive",
    "revoke_lease",
    "watch",
];

/// The error kinds, as the `kind` label names them.
const KINDS: [&str; 7] = [
    "conflict",
    "unavailable",
    "lease_expired",
    "compacted",
    "invalid",
    "corrupt",
    "io",
];

fn kind_index(e: &StoreError) -> usize {
    match e {
        StoreError::Conflict { .. } => 0,
        StoreError::Unavailable { .. } => 1,
        StoreError::LeaseExpired(_) => 2,
        StoreError::Compacted { .. } => 3,
        StoreError::Invalid(_) => 4,
        StoreError::Corrupt(_) => 5,
        StoreError::Io(_) => 6,
    }
}

/// Handles for one operation, made once so a request costs an atomic or
/// two. Error series are made on the first error of their kind (errors are
/// rare; 49 series at zero would only be noise).
struct OpMetrics {
    op: &'static str,
    latency: Histogram,
}

/// The measuring wrapper.
pub struct Instrumented {
    inner: SharedStore,
    ops: Vec<OpMetrics>,
}

impl Instrumented {
    /// Wraps `inner`; registers every series so they exist (at zero) from
    /// the start.
    pub fn wrap(inner: SharedStore) -> SharedStore {
        let ops = OPS
            .iter()
            .map(|op| OpMetrics {
                op,
                latency: metrics::histogram!(names::STORE_REQUEST_DURATION, "op" => *op),
            })
            .collect();
        std::sync::Arc::new(Instrumented { inner, ops })
    }

    fn record<T>(&self, op: usize, started: Instant, r: &Result<T, StoreError>) {
        if let Some(m) = self.ops.get(op) {
            m.latency.record(started.elapsed().as_secs_f64());
            if let Err(e) = r {
                let kind = KINDS.get(kind_index(e)).copied().unwrap_or("io");
                metrics::counter!(names::STORE_REQUEST_ERRORS, "op" => m.op, "kind" => kind)
                    .increment(1);
            }
        }
    }
}

#[async_trait::async_trait]
impl Store for Instrumented {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn get(&self, key: &str) -> Result<Option<Kv>, StoreError> {
        let t = Instant::now();
        let r = self.inner.get(key).await;
        self.record(0, t, &r);
        r
    }
    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let t = Instant::now();
        let r = self.inner.list(prefix).await;
        self.record(1, t, &r);
        r
    }
    async fn txn(&self, ops: Vec<Op>) -> Result<Revision, StoreError> {
        let t = Instant::now();
        let r = self.inner.txn(ops).await;
        self.record(2, t, &r);
        r
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let t = Instant::now();
        let r = self.inner.grant_lease(ttl).await;
        self.record(3, t, &r);
        r
    }
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let t = Instant::now();
        let r = self.inner.keep_alive(lease).await;
        self.record(4, t, &r);
        r
    }
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        let t = Instant::now();
        let r = self.inner.revoke_lease(lease).await;
        self.record(5, t, &r);
        r
    }
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        let t = Instant::now();
        let r = self.inner.watch(prefix, after).await;
        self.record(6, t, &r);
        r
    }
}
