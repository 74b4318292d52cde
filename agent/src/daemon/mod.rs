//! `vigil agent`: the long-running process of a node. It holds this node's
//! replicas (served in-process and over the replica protocol), runs engines
//! (served over NBD) and answers the HTTP API.

mod ports;
mod store_open;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;
use tokio::net::UnixListener;
use vigil_engine::engine::EngineConfig;
use vigil_engine::protocol::{self, ClusterToken};

use vigil_control::local::backends::Backends;
use vigil_control::local::engines::EngineSet;
use vigil_control::local::names::NameSet;
use vigil_control::local::replicas::ReplicaSet;
use vigil_control::local::{Identity, Local, disks, frontend};

/// How the agent was started (`vigil agent --help` documents each).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub replica_listen: Option<SocketAddr>,
    pub nbd_listen: Option<SocketAddr>,
    pub nbd_socket: Option<PathBuf>,
    pub advertise: Option<IpAddr>,
    pub engine: EngineConfig,
    /// Disk directories (`--disk`); default `<data-dir>/disks/default`.
    pub disks: Vec<PathBuf>,
    /// Node labels (`--label k=v`).
    pub labels: std::collections::BTreeMap<String, String>,
    /// Where the cluster state lives (`--store`).
    pub store: vigil_store::StoreUrl,
    /// The log file (`--log-file`), for the support bundle to collect.
    pub log_file: Option<crate::telemetry::file::LogFile>,
}

/// Why the agent could not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("load cluster token: {0}")]
    Token(#[from] protocol::TokenError),
    #[error(transparent)]
    Disk(#[from] disks::DiskError),
    #[error("open the store: {0}")]
    Store(#[from] vigil_store::StoreError),
    #[error("register this node: {0}")]
    Register(#[from] vigil_control::cluster::ClusterError),
    #[error("open replicas under {path}: {source}")]
    Replicas {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bind {what} listener on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// The state every API handler sees: the agent's configuration and
/// credentials, the replica server's connections, and the node-local
/// handles the controllers act with ([`Local`]).
pub struct Agent {
    pub config: AgentConfig,
    pub token: ClusterToken,
    /// The replica server's open connections (for the eBPF peer filter).
    pub replica_connections: vigil_engine::protocol::ServedConnections,
    /// This node's identity, the cluster, and its replicas, engines and
    /// backends: shared with the controllers.
    pub local: Arc<Local>,
}

impl Agent {
    /// Flushes every replica and engine; called on SIGTERM.
    pub async fn shutdown(&self) {
        for engine in self.local.engines.all() {
            engine.shutdown();
        }
        for (name, replica) in self.local.replicas.all() {
            let res = tokio::task::spawn_blocking(move || replica.flush()).await;
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(replica = %name, error = %e, "flush on shutdown failed")
                }
                Err(e) => tracing::error!(replica = %name, error = %e, "flush task failed"),
            }
        }
    }
}

fn bind_err(what: &'static str, addr: impl ToString) -> impl FnOnce(std::io::Error) -> StartError {
    let addr = addr.to_string();
    move |source| StartError::Bind { what, addr, source }
}

/// Starts every listener and serves until SIGTERM or SIGINT.
pub async fn run(config: AgentConfig) -> Result<(), StartError> {
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| StartError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let token = ClusterToken::load(&data_dir)?;
    let disk_paths = if config.disks.is_empty() {
        vec![data_dir.join("disks").join("default")]
    } else {
        config.disks.clone()
    };
    let local_disks = disks::open_all(&disk_paths, &config.node_name)?;
    let replicas =
        Arc::new(
            ReplicaSet::open_all(&local_disks).map_err(|source| StartError::Replicas {
                path: disk_paths.first().cloned().unwrap_or_default(),
                source,
            })?,
        );
    let engines = Arc::new(EngineSet::default());

    let host = config.listen.ip();
    let advertise = config.advertise.unwrap_or(host);
    let mut ports = ports::PortBook::load(&data_dir);
    // The store first: until it answers, the API port stays closed, so
    // clients get "connection refused" at once instead of a hung request.
    let store = vigil_store::instrumented::Instrumented::wrap(
        store_open::open(&config.store, &data_dir).await?,
    );
    let cluster = vigil_control::cluster::Cluster::new(store, &config.node_name);
    let http = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(bind_err("HTTP", config.listen))?;
    let replica_listener = ports
        .bind("replica", host, config.replica_listen)
        .await
        .map_err(bind_err("replica", host))?;
    let nbd_listener = ports
        .bind("nbd", host, config.nbd_listen)
        .await
        .map_err(bind_err("NBD", host))?;
    let nbd_socket = config
        .nbd_socket
        .clone()
        .unwrap_or_else(|| data_dir.join("nbd.sock"));
    let _ = std::fs::remove_file(&nbd_socket);
    let nbd_unix =
        UnixListener::bind(&nbd_socket).map_err(bind_err("NBD unix", nbd_socket.display()))?;

    let handovers = Arc::new(frontend::Handovers::default());
    let port_of = |l: &tokio::net::TcpListener| l.local_addr().map(|a| a.port()).unwrap_or(0);
    // Addresses on this one are opened in-process (`Backends`).
    let replica_address = SocketAddr::new(advertise, port_of(&replica_listener)).to_string();
    let local = Arc::new(Local {
        me: Identity {
            name: config.node_name.clone(),
            replica_address: replica_address.clone(),
            nbd_address: SocketAddr::new(advertise, port_of(&nbd_listener)).to_string(),
            nbd_socket: nbd_socket.clone(),
            api_address: format!("http://{}", SocketAddr::new(advertise, port_of(&http))),
            labels: config.labels.clone(),
        },
        cluster,
        managed_engines: NameSet::default(),
        maintenance: Default::default(),
        lease_clock: Default::default(),
        backends: Backends::new(token.clone(), replica_address, Arc::clone(&replicas)),
        replicas: Arc::clone(&replicas),
        engines: Arc::clone(&engines),
        handovers: Arc::clone(&handovers),
        engine: config.engine.clone(),
        quiet: Default::default(),
    });
    let agent = Arc::new(Agent {
        replica_connections: Default::default(),
        token: token.clone(),
        local: Arc::clone(&local),
        config,
    });

    let replica_server = tokio::spawn(protocol::serve(
        replica_listener,
        replicas.clone() as Arc<dyn protocol::ReplicaSource>,
        protocol::ServerConfig {
            token,
            connections: agent.replica_connections.clone(),
        },
    ));
    let frontend = Arc::new(frontend::Frontend {
        engines: Arc::clone(&engines),
        handovers,
    });
    let nbd_tcp = tokio::spawn(vigil_engine::nbd::serve_tcp(
        nbd_listener,
        Arc::clone(&frontend),
    ));
    let nbd_unix = tokio::spawn(vigil_engine::nbd::serve_unix(nbd_unix, frontend));
    // After an uninstall, a start is a fresh install (or, while one is
    // cleaning, no registration at all): see `controller::uninstall`.
    if vigil_control::controller::uninstall::at_start(&local).await? {
        vigil_control::controller::registration::register_node(&local).await?;
        vigil_control::controller::registration::register_disks(&local).await?;
    }
    // Live before the API answers: a client that sees the agent ready also
    // sees the node ready.
    let lease = vigil_control::controller::registration::go_live(&local).await?;
    let liveness = tokio::spawn(vigil_control::controller::registration::keep_live(
        Arc::clone(&local),
        lease,
    ));
    let lease_fence = tokio::spawn(vigil_control::controller::lease_fence::run(Arc::clone(
        &local,
    )));
    let controllers = tokio::spawn(vigil_control::controller::run(Arc::clone(&local)));
    let metrics_upkeep = tokio::spawn(crate::metrics::upkeep());
    let kernel_tracing = tokio::spawn(crate::ebpf::run(crate::ebpf::Observed {
        node: agent.config.node_name.clone(),
        cluster: agent.local.cluster.clone(),
        replicas: Arc::clone(&agent.local.replicas),
        served: agent.replica_connections.clone(),
    }));
    let http_addr = http.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let api = tokio::spawn(crate::api::serve(http, Arc::clone(&agent)));
    tracing::info!(
        node = %agent.config.node_name,
        http = %http_addr,
        replica = %agent.local.me.replica_address,
        nbd = %agent.local.me.nbd_address,
        nbd_socket = %nbd_socket.display(),
        data_dir = %agent.config.data_dir.display(),
        store = %agent.local.cluster.store_location(),
        "agent ready"
    );
    println!(
        "vigil agent {} ready: http://{http_addr}",
        agent.config.node_name
    );

    wait_for_signal().await;
    tracing::info!("shutting down: flushing replicas");
    controllers.abort();
    lease_fence.abort();
    metrics_upkeep.abort();
    kernel_tracing.abort();
    liveness.abort();
    agent.shutdown().await;
    vigil_control::controller::registration::go_offline(&local).await;
    replica_server.abort();
    nbd_tcp.abort();
    nbd_unix.abort();
    api.abort();
    let _ = std::fs::remove_file(&nbd_socket);
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
