//! Listener ports that survive restarts. A listener without an explicit
//! flag binds an OS-chosen port the first time; the port is remembered in
//! `<data-dir>/ports.json` and reused on the next start, so replica
//! addresses (`tcp://host:port/name`) handed to engines stay valid.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::net::TcpListener;

/// Remembered ports, by listener name.
pub struct PortBook {
    path: PathBuf,
    ports: BTreeMap<String, u16>,
}

impl PortBook {
    /// Loads `<data_dir>/ports.json`; a missing or unreadable file is an
    /// empty book (with a warning for the unreadable case).
    pub fn load(data_dir: &Path) -> PortBook {
        let path = data_dir.join("ports.json");
        let ports = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable ports file");
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        };
        PortBook { path, ports }
    }

    /// Binds listener `name`: at `explicit` if given; otherwise on `host` at
    /// the remembered port, or an OS-chosen one if that is taken or unknown.
    pub async fn bind(
        &mut self,
        name: &str,
        host: std::net::IpAddr,
        explicit: Option<SocketAddr>,
    ) -> std::io::Result<TcpListener> {
        if let Some(addr) = explicit {
            return TcpListener::bind(addr).await;
        }
        if let Some(port) = self.ports.get(name).copied() {
            match TcpListener::bind(SocketAddr::new(host, port)).await {
                Ok(l) => return Ok(l),
                Err(e) => tracing::warn!(listener = name, port, error = %e,
                    "remembered port is taken; choosing a new one (replica addresses change)"),
            }
        }
        let l = TcpListener::bind(SocketAddr::new(host, 0)).await?;
        self.ports.insert(name.to_string(), l.local_addr()?.port());
        self.save();
        Ok(l)
    }

    fn save(&self) {
        let tmp = self.path.with_extension("json.tmp");
        let res = serde_json::to_vec_pretty(&self.ports)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = res {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remember listener ports");
        }
    }
}
