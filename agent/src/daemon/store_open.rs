//! Opening the store given by `--store`. An unreachable etcd is not a
//! reason to exit: the agent says so on stderr and in its log, and keeps
//! trying until it answers (so a node that boots before its etcd comes up
//! on its own).

use std::path::Path;
use std::sync::Arc;

use vigil_store::embedded::EmbeddedStore;
use vigil_store::{SharedStore, StoreError, StoreUrl};

/// Key prefix of vigil's state in a shared etcd.
#[cfg(feature = "etcd")]
pub const ETCD_PREFIX: &str = "/vigil/";

/// Opens the store; retries an unreachable etcd forever (with back-off).
pub async fn open(url: &StoreUrl, data_dir: &Path) -> Result<SharedStore, StoreError> {
    match url {
        StoreUrl::Embedded => {
            let path = data_dir.join("store.redb");
            let store = EmbeddedStore::open(&path)?;
            Ok(Arc::new(store))
        }
        #[cfg(not(feature = "etcd"))]
        StoreUrl::Etcd(_) => Err(StoreError::Invalid(
            "this vigil was built without etcd support; rebuild with `cargo build --release --features etcd` (needs protoc: apt-get install protobuf-compiler)".into(),
        )),
        #[cfg(feature = "etcd")]
        StoreUrl::Etcd(endpoints) => {
            let mut delay = std::time::Duration::from_millis(500);
            loop {
                match connect_and_probe(endpoints).await {
                    Ok(s) => return Ok(s),
                    Err(e) if e.is_transient() => {
                        eprintln!(
                            "vigil agent: {e}; retrying in {:.1}s",
                            delay.as_secs_f64()
                        );
                        tracing::warn!(error = %e, retry_in = ?delay, "store unreachable; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(std::time::Duration::from_secs(5));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

#[cfg(feature = "etcd")]
async fn connect_and_probe(endpoints: &[String]) -> Result<SharedStore, StoreError> {
    let store = vigil_store::etcd::EtcdStore::connect(endpoints, ETCD_PREFIX).await?;
    // a connect can succeed lazily; one linearizable read proves the
    // cluster answers and has a quorum
    vigil_store::Store::get(&store, "probe").await?;
    Ok(Arc::new(store))
}
