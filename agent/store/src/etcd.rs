//! The etcd store: an etcd v3 cluster shared by every agent of one cluster.
//!
//! All keys live under a prefix (e.g. `/vigil/`), which callers never see.
//! Reads are etcd's default linearizable reads. Every call has a deadline,
//! so an unreachable cluster gives [`StoreError::Unavailable`], never a hang.

use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue, KvClient,
    LeaseClient, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, WatchClient,
    WatchOptions,
};
use tokio::sync::mpsc;

use super::{
    Expect, Kv, LeaseId, Listing, Op, Revision, Store, StoreError, WatchEvent, WatchStream,
    check_ops,
};

/// Longest wait to reach the cluster when connecting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for any one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings on idle connections, so that a watch on a dead member
/// fails instead of waiting forever.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response accepted: a listing may hold many values of up to
/// [`super::MAX_VALUE`] (the client's default is 4 MiB).
const MAX_RESPONSE: usize = 256 << 20;
/// Events buffered between a watch and its reader.
const WATCH_BUFFER: usize = 1024;

/// A store in an etcd cluster; see the module docs.
pub struct EtcdStore {
    /// Kept so that the client's connections stay open.
    _client: Client,
    kv: KvClient,
    watch: WatchClient,
    lease: LeaseClient,
    prefix: String,
    /// The endpoints, comma-separated, for errors and `location`.
    endpoint: String,
}

impl EtcdStore {
    /// Connects to the cluster at `endpoints` (`http://host:port`) and checks
    /// that it answers a linearizable read; keys are stored under `prefix`.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<EtcdStore, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::Invalid("no etcd endpoints given".into()));
        }
        let endpoint = endpoints.join(",");
        let unavailable = |message: String| StoreError::Unavailable {
            endpoint: endpoint.clone(),
            message,
        };
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
            .with_keep_alive_while_idle(true)
            // A member cut off from its leader refuses requests (and cancels
            // watches) instead of serving a stale view.
            .with_require_leader(true);
        let connecting = async {
            let client = Client::connect(endpoints, Some(options))
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            // The client connects lazily; one read proves the cluster answers.
            let mut kv = client.kv_client().max_decoding_message_size(MAX_RESPONSE);
            kv.get(prefix, Some(GetOptions::new().with_count_only()))
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            Ok::<_, StoreError>((client, kv))
        };
        let (client, kv) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| unavailable(format!("no answer within {CONNECT_TIMEOUT:?}")))??;
        Ok(EtcdStore {
            watch: client
                .watch_client()
                .max_decoding_message_size(MAX_RESPONSE),
            lease: client.lease_client(),
            kv,
            _client: client,
            prefix: prefix.to_string(),
            endpoint,
        })
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn unavailable(&self, message: String) -> StoreError {
        StoreError::Unavailable {
            endpoint: self.endpoint.clone(),
            message,
        }
    }

    /// Runs one request with the request deadline; errors are translated
    /// by [`EtcdStore::error`] with `lease` as the lease it concerns.
    async fn call<T>(
        &self,
        what: &str,
        lease: Option<LeaseId>,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.error(what, lease, e)),
            Err(_) => {
                Err(self.unavailable(format!("{what}: no answer within {REQUEST_TIMEOUT:?}")))
            }
        }
    }

    fn error(&self, what: &str, lease: Option<LeaseId>, e: etcd_client::Error) -> StoreError {
        use etcd_client::Error as E;
        // gRPC status codes (tonic is not a direct dependency, so by number).
        const INVALID_ARGUMENT: i32 = 3;
        const NOT_FOUND: i32 = 5;
        const FAILED_PRECONDITION: i32 = 9;
        match e {
            E::GRpcStatus(status) => match i32::from(status.code()) {
                NOT_FOUND if status.message().contains("lease not found") => {
                    StoreError::LeaseExpired(lease.unwrap_or(0))
                }
                INVALID_ARGUMENT | FAILED_PRECONDITION => {
                    StoreError::Invalid(format!("{what}: {}", status.message()))
                }
                _ => self.unavailable(format!("{what}: {}", status.message())),
            },
            // The client's keep-alive reports a lease the server no longer has.
            E::LeaseKeepAliveError(_) if lease.is_some() => {
                StoreError::LeaseExpired(lease.unwrap_or(0))
            }
            E::InvalidArgs(m) => StoreError::Invalid(format!("{what}: {m}")),
            other => self.unavailable(format!("{what}: {other}")),
        }
    }

    /// A key/value from etcd without the prefix.
    fn kv(&self, kv: &KeyValue) -> Result<Kv, StoreError> {
        Ok(Kv {
            key: strip(&self.prefix, kv)?,
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            lease: (kv.lease() != 0).then_some(kv.lease()),
        })
    }
}

fn strip(prefix: &str, kv: &KeyValue) -> Result<String, StoreError> {
    let key = kv
        .key_str()
        .map_err(|_| StoreError::Corrupt("etcd holds a key that is not UTF-8".into()))?;
    key.strip_prefix(prefix)
        .map(str::to_string)
        .ok_or_else(|| StoreError::Corrupt(format!("etcd returned {key:?}, outside {prefix:?}")))
}

/// Whether `expect` holds for the key as read in the failed transaction's
/// else branch (`None`: absent).
fn holds(expect: Expect, current: Option<&KeyValue>) -> bool {
    match expect {
        Expect::Any => true,
        Expect::Absent => current.is_none(),
        Expect::Revision(r) => current.is_some_and(|kv| kv.mod_revision() == r),
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    fn location(&self) -> String {
        self.endpoint.clone()
    }

    async fn get(&self, key: &str) -> Result<Option<Kv>, StoreError> {
        let mut kv = self.kv.clone();
        let resp = self
            .call("get", None, kv.get(self.full_key(key), None))
            .await?;
        resp.kvs().first().map(|kv| self.kv(kv)).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let mut kv = self.kv.clone();
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Key, SortOrder::Ascend);
        let resp = self
            .call("list", None, kv.get(self.full_key(prefix), Some(options)))
            .await?;
        let kvs = resp
            .kvs()
            .iter()
            .map(|kv| self.kv(kv))
            .collect::<Result<Vec<_>, _>>()?;
        let revision = resp.header().map_or(0, |h| h.revision());
        Ok(Listing { kvs, revision })
    }

    async fn txn(&self, ops: Vec<Op>) -> Result<Revision, StoreError> {
        check_ops(&ops)?;
        let mut compares = Vec::new();
        let mut writes = Vec::new();
        // On failure, the else branch reads every key with an expectation,
        // in the same atomic step, so the failing key can be named exactly.
        let mut reads = Vec::new();
        for op in &ops {
            let key = self.full_key(op.key());
            match op.expect() {
                Expect::Any => {}
                Expect::Absent => {
                    compares.push(Compare::create_revision(key.clone(), CompareOp::Equal, 0));
                }
                // An existing key's mod_revision is at least 1, so a
                // non-positive one can never hold (and `mod_revision == 0`
                // would match an absent key).
                Expect::Revision(r) if r <= 0 => {
                    return Err(StoreError::Conflict {
                        key: op.key().to_string(),
                    });
                }
                Expect::Revision(r) => {
                    compares.push(Compare::mod_revision(key.clone(), CompareOp::Equal, r));
                }
            }
            if op.expect() != Expect::Any {
                reads.push((op, TxnOp::get(key.clone(), None)));
            }
            match op {
                Op::Put { value, lease, .. } => {
                    let options = lease.map(|id| PutOptions::new().with_lease(id));
                    writes.push(TxnOp::put(key, value.clone(), options));
                }
                Op::Delete { .. } => writes.push(TxnOp::delete(key, None)),
                Op::Check { .. } => {}
            }
        }
        let checked: Vec<&Op> = reads.iter().map(|(op, _)| *op).collect();
        let txn = Txn::new()
            .when(compares)
            .and_then(writes)
            .or_else(reads.into_iter().map(|(_, get)| get).collect::<Vec<_>>());
        let lease = ops.iter().find_map(|op| match op {
            Op::Put { lease, .. } => *lease,
            _ => None,
        });
        let mut kv = self.kv.clone();
        let resp = self.call("txn", lease, kv.txn(txn)).await?;
        if resp.succeeded() {
            return Ok(resp.header().map_or(0, |h| h.revision()));
        }
        let reads = resp.op_responses();
        for (op, read) in checked.iter().zip(&reads) {
            let current = match read {
                TxnOpResponse::Get(get) => get.kvs().first(),
                _ => None,
            };
            if !holds(op.expect(), current) {
                return Err(StoreError::Conflict {
                    key: op.key().to_string(),
                });
            }
        }
        // Unreachable in practice (the reads ran with the comparisons);
        // name the first checked key rather than invent success.
        Err(StoreError::Conflict {
            key: checked
                .first()
                .map_or_else(String::new, |op| op.key().to_string()),
        })
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        if ttl.is_zero() {
            return Err(StoreError::Invalid("a lease TTL must be positive".into()));
        }
        // etcd counts TTLs in whole seconds; round up so a lease never
        // lasts less than asked.
        let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let secs = if ttl.subsec_nanos() > 0 {
            secs.saturating_add(1)
        } else {
            secs
        };
        let mut lease = self.lease.clone();
        let resp = self
            .call("grant lease", None, lease.grant(secs.max(1), None))
            .await?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut client = self.lease.clone();
        // The client sends one keep-alive on a new stream and reads its
        // answer; a TTL of 0 in it (lease gone) comes back as an error.
        let (_keeper, _stream) = self
            .call("keep lease alive", Some(lease), client.keep_alive(lease))
            .await?;
        Ok(())
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut client = self.lease.clone();
        self.call("revoke lease", Some(lease), client.revoke(lease))
            .await?;
        Ok(())
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        let mut client = self.watch.clone();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(after.saturating_add(1).max(1));
        let mut stream = self
            .call(
                "watch",
                None,
                client.watch(self.full_key(prefix), Some(options)),
            )
            .await?;
        // Wait for the server to accept the watch, so a refused one fails here.
        let created = self.call("watch", None, stream.message()).await?;
        match created {
            Some(resp) if resp.created() && !resp.canceled() => {}
            Some(resp) if resp.compact_revision() > 0 => {
                return Err(StoreError::Compacted {
                    requested: after + 1,
                    oldest: resp.compact_revision(),
                });
            }
            Some(resp) => {
                return Err(self.unavailable(format!("watch refused: {}", resp.cancel_reason())));
            }
            None => return Err(self.unavailable("watch: the stream closed".into())),
        }
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(forward_watch(
            stream,
            tx,
            self.prefix.clone(),
            self.endpoint.clone(),
            after,
        ));
        Ok(rx)
    }
}

/// Translates one etcd watch into [`WatchEvent`]s until it breaks or the
/// reader goes away (dropping the etcd stream cancels the watch).
async fn forward_watch(
    mut stream: etcd_client::WatchStream,
    tx: mpsc::Sender<Result<WatchEvent, StoreError>>,
    prefix: String,
    endpoint: String,
    mut delivered: Revision,
) {
    let unavailable = |message: String| StoreError::Unavailable {
        endpoint: endpoint.clone(),
        message,
    };
    loop {
        let message = tokio::select! {
            m = stream.message() => m,
            _ = tx.closed() => return,
        };
        let resp = match message {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                let _ = tx
                    .send(Err(unavailable("watch: the stream closed".into())))
                    .await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(unavailable(format!("watch: {e}")))).await;
                return;
            }
        };
        if resp.compact_revision() > 0 {
            let _ = tx
                .send(Err(StoreError::Compacted {
                    requested: delivered + 1,
                    oldest: resp.compact_revision(),
                }))
                .await;
            return;
        }
        if resp.canceled() {
            let reason = format!("watch cancelled: {}", resp.cancel_reason());
            let _ = tx.send(Err(unavailable(reason))).await;
            return;
        }
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            let translated = strip(&prefix, kv).map(|key| match event.event_type() {
                EventType::Put => WatchEvent::Put(Kv {
                    key,
                    value: kv.value().to_vec(),
                    create_revision: kv.create_revision(),
                    mod_revision: kv.mod_revision(),
                    lease: (kv.lease() != 0).then_some(kv.lease()),
                }),
                // A deletion's kv carries the deleting revision.
                EventType::Delete => WatchEvent::Delete {
                    key,
                    revision: kv.mod_revision(),
                },
            });
            let failed = translated.is_err();
            if let Ok(e) = &translated {
                delivered = e.revision();
            }
            if tx.send(translated).await.is_err() || failed {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::conformance;

    /// A throwaway single-member etcd on free loopback ports, killed on drop.
    struct Etcd {
        child: Child,
        endpoint: String,
        dir: tempfile::TempDir,
    }

    impl Etcd {
        async fn start() -> Etcd {
            let dir = tempfile::tempdir().expect("tempdir");
            // Hold both listeners until both ports are chosen, so they differ.
            let client = TcpListener::bind("127.0.0.1:0").expect("bind");
            let peer = TcpListener::bind("127.0.0.1:0").expect("bind");
            let client_url = format!("http://{}", client.local_addr().expect("addr"));
            let peer_url = format!("http://{}", peer.local_addr().expect("addr"));
            drop((client, peer));
            let log = std::fs::File::create(dir.path().join("etcd.log")).expect("log file");
            let child = Command::new("/usr/bin/etcd")
                .args(["--name", "default"])
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("default={peer_url}")])
                // Short raft timers: faster start, and a minimum lease TTL
                // of 1 s instead of 2 s.
                .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start /usr/bin/etcd");
            let mut etcd = Etcd {
                child,
                endpoint: client_url,
                dir,
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(status)) = etcd.child.try_wait() {
                    panic!("etcd exited ({status}): {}", etcd.log());
                }
                if EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "/probe/")
                    .await
                    .is_ok()
                {
                    return etcd;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd never answered: {}",
                    etcd.log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }

        fn log(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
        }

        async fn store(&self) -> EtcdStore {
            EtcdStore::connect(std::slice::from_ref(&self.endpoint), "/vigil/")
                .await
                .expect("connect")
        }
    }

    impl Drop for Etcd {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    macro_rules! conformance_tests {
        ($($name:ident),* $(,)?) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let etcd = Etcd::start().await;
                conformance::$name(Arc::new(etcd.store().await)).await;
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
    async fn connect_to_a_dead_port_is_unavailable_quickly() {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let result = EtcdStore::connect(std::slice::from_ref(&endpoint), "/vigil/").await;
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "took {:?}",
            started.elapsed()
        );
        match result {
            Err(StoreError::Unavailable { endpoint: e, .. }) => assert_eq!(e, endpoint),
            Err(other) => panic!("expected Unavailable, got {other}"),
            Ok(_) => panic!("connected to a dead port"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_live_under_the_prefix_and_come_back_without_it() {
        let etcd = Etcd::start().await;
        let a = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "/a/")
            .await
            .expect("connect /a/");
        let b = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "/b/")
            .await
            .expect("connect /b/");
        a.txn(vec![Op::put("k", b"a".to_vec(), Expect::Absent)])
            .await
            .expect("put in a");
        // The same key under another prefix is another key.
        b.txn(vec![Op::put("k", b"b".to_vec(), Expect::Absent)])
            .await
            .expect("put in b");
        let listing = a.list("").await.expect("list a");
        assert_eq!(listing.kvs.len(), 1);
        assert_eq!(
            (listing.kvs[0].key.as_str(), listing.kvs[0].value.as_slice()),
            ("k", &b"a"[..])
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_from_a_compacted_revision_is_compacted() {
        let etcd = Etcd::start().await;
        let store = etcd.store().await;
        let mut last = 0;
        for i in 0..5 {
            last = store
                .txn(vec![Op::put(format!("k{i}"), vec![], Expect::Any)])
                .await
                .expect("put");
        }
        let mut client = Client::connect([etcd.endpoint.as_str()], None)
            .await
            .expect("raw client");
        client
            .compact(
                last,
                Some(etcd_client::CompactionOptions::new().with_physical()),
            )
            .await
            .expect("compact");
        let outcome = match store.watch("", 1).await {
            Err(e) => Err(e),
            Ok(mut w) => match w.recv().await {
                Some(Err(e)) => Err(e),
                other => Ok(other),
            },
        };
        assert!(
            matches!(outcome, Err(StoreError::Compacted { oldest, .. }) if oldest == last),
            "{outcome:?}"
        );
    }
}
