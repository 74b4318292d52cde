//! Command-line syntax.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "vigil",
    version,
    about = "Replicated block storage that watches itself"
)]
pub struct Cli {
    /// The agent's HTTP API.
    #[arg(
        long,
        global = true,
        env = "VIGIL_ENDPOINT",
        default_value = "http://127.0.0.1:9500"
    )]
    pub endpoint: String,
    /// Output format.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node agent (volume engine, replica server, controllers).
    Agent(AgentArgs),
    /// Replicas on the agent.
    #[command(subcommand)]
    Replica(ReplicaCmd),
    /// Engines (one per served volume) on the agent.
    #[command(subcommand)]
    Engine(EngineCmd),
    /// Snapshots of a volume, through its engine.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// This node's name (default: the host name).
    #[arg(long, env = "VIGIL_NODE_NAME")]
    pub node_name: Option<String>,
    /// Where replicas, the cluster token and local state live.
    #[arg(long, env = "VIGIL_DATA_DIR", default_value = "/var/lib/vigil")]
    pub data_dir: PathBuf,
    /// HTTP API listener.
    #[arg(long, default_value = "127.0.0.1:9500")]
    pub listen: SocketAddr,
    /// Replica protocol listener (default: the API host, a port chosen once and remembered).
    #[arg(long)]
    pub replica_listen: Option<SocketAddr>,
    /// NBD TCP listener (default: the API host, a port chosen once and remembered).
    #[arg(long)]
    pub nbd_listen: Option<SocketAddr>,
    /// NBD unix socket (default: <data-dir>/nbd.sock).
    #[arg(long)]
    pub nbd_socket: Option<PathBuf>,
    /// Address other agents and clients use to reach this one (default: the --listen host).
    #[arg(long)]
    pub advertise: Option<IpAddr>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "VIGIL_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Seconds before an unanswered replica request marks the replica ERR.
    #[arg(long, default_value_t = 8)]
    pub io_timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum ReplicaCmd {
    /// Create an empty replica; prints its tcp:// address.
    Create {
        name: String,
        /// Size: 4096, 64MiB, 10GiB...
        #[arg(long)]
        size: String,
    },
    /// List replicas.
    List,
    /// Show a replica and its chain.
    Show { name: String },
    /// Verify a replica's chain: files present, sized, checksums matching.
    Verify { name: String },
    /// Delete a replica and its data.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum EngineCmd {
    /// Start an engine over replicas; prints the nbd:// URI.
    Create {
        name: String,
        #[arg(long)]
        size: String,
        /// Replica address (repeat): tcp://host:port/name.
        #[arg(long = "replica", required = true)]
        replicas: Vec<String>,
    },
    /// List engines.
    List,
    /// Show an engine: each replica's mode (RW/WO/ERR) and reason.
    Show { name: String },
    /// Add a replica; it is rebuilt (WO) and then serves (RW).
    AddReplica { name: String, url: String },
    /// Stop an engine (replicas are kept).
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// Take a snapshot (name generated if omitted).
    Create {
        volume: String,
        snapshot: Option<String>,
    },
    /// List the chain.
    List { volume: String },
    /// Delete a snapshot, merging its data into its child.
    Delete { volume: String, snapshot: String },
    /// Revert the volume to a snapshot (discards newer data).
    Revert { volume: String, snapshot: String },
}
