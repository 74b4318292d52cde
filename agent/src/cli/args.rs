//! Command-line syntax.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::telemetry::LogFormat;

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
    /// File holding the cluster token, sent with mutating calls (needed when the agent listens beyond loopback; VIGIL_CLUSTER_TOKEN also works).
    #[arg(long, global = true, env = "VIGIL_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
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
    Agent(Box<AgentArgs>),
    /// Replicas on the agent.
    #[command(subcommand)]
    Replica(ReplicaCmd),
    /// Engines (one per served volume) on the agent.
    #[command(subcommand)]
    Engine(EngineCmd),
    /// Snapshots of an engine (low level; see `vigil volume snapshot`).
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Volumes of the cluster: create, attach, detach, delete, expand, snapshots.
    #[command(subcommand)]
    Volume(VolumeCmd),
    /// Nodes of the cluster.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Disks of the cluster.
    #[command(subcommand)]
    Disk(DiskCmd),
    /// Cluster settings.
    #[command(subcommand)]
    Settings(SettingsCmd),
    /// Diagnose the cluster: root causes first, each with cause, fix and consequences (exit 0 healthy, 1 warnings, 2 errors).
    Doctor {
        /// Diagnose from a support bundle instead of the live cluster (no agent needed).
        #[arg(long, value_name = "FILE")]
        bundle: Option<PathBuf>,
    },
    /// Health checks: list them, mute or unmute a code.
    #[command(subcommand)]
    Health(HealthCmd),
    /// Remove every volume, replica, engine and the cluster state (only when the setting deleting-confirmation-flag is true). Exit 0 when uninstalled (or already in progress / done by another run), 1 when refused or failed.
    Uninstall(UninstallArgs),
    /// Collect a support bundle from every node into one archive (`-o FILE`).
    SupportBundle(crate::bundle::cli::SupportBundleArgs),
    /// Read a support bundle offline.
    #[command(subcommand)]
    Bundle(crate::bundle::cli::BundleCmd),
    /// Recent events (newest last).
    Events {
        /// Only events about this volume.
        #[arg(long)]
        volume: Option<String>,
        /// Only events about this node.
        #[arg(long)]
        node: Option<String>,
        /// Only events about this object: `KIND/NAME` (e.g. `replica/v1-r-0a1b2c3d`) or a name.
        #[arg(long)]
        object: Option<String>,
        /// Only events newer than this (e.g. `90s`, `10m`, `1h30m`, `1d`; a bare
        /// number is seconds).
        #[arg(long, value_parser = crate::cli::duration::parse)]
        since: Option<std::time::Duration>,
        /// Keep printing new events as they are recorded (Ctrl-C to stop).
        #[arg(short = 'f', long)]
        follow: bool,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct UninstallArgs {
    #[command(subcommand)]
    pub command: Option<UninstallCmd>,
    /// Return once the uninstall is claimed instead of waiting until it is done.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for it to finish (e.g. 90s, 10m, 1h30m).
    #[arg(long, default_value = "10m", value_parser = crate::cli::duration::parse)]
    pub timeout: std::time::Duration,
}

#[derive(Debug, Subcommand)]
pub enum UninstallCmd {
    /// Where the uninstall is (phase, what is left, history).
    Status,
}

#[derive(Debug, Subcommand)]
pub enum HealthCmd {
    /// The failing checks, one line each.
    List,
    /// Mute a check code for a while (it is still shown, marked muted, and does not count).
    Mute {
        /// The code, e.g. NODE_DOWN.
        code: String,
        /// How long: 30s, 10m, 1h30m, 2d (at least 1s, at most 30d).
        #[arg(long = "for", value_parser = super::doctor::parse_duration)]
        duration: u64,
        /// Why (shown with the muted check).
        #[arg(long)]
        reason: String,
    },
    /// Remove a code's mute.
    Unmute { code: String },
}

#[derive(Debug, Subcommand)]
pub enum VolumeCmd {
    /// Create a volume; its replicas are scheduled across the cluster.
    Create {
        name: String,
        /// Size: 4096, 64MiB, 10GiB...
        #[arg(long)]
        size: String,
        /// Number of replicas (default: the default-replica-count setting).
        #[arg(long)]
        replicas: Option<u32>,
        /// disabled, best-effort or strict-local (default: the default-data-locality setting).
        #[arg(long)]
        data_locality: Option<String>,
        /// A node tag the replicas' nodes must carry (repeat).
        #[arg(long = "node-tag")]
        node_tags: Vec<String>,
        /// A disk tag the replicas' disks must carry (repeat).
        #[arg(long = "disk-tag")]
        disk_tags: Vec<String>,
        /// Return at once instead of waiting until the replicas exist.
        #[arg(long)]
        no_wait: bool,
    },
    /// Show a volume: state, robustness, attached node, each replica.
    Get { name: String },
    /// List volumes.
    List,
    /// Attach a volume to a node (default: the agent you talk to); prints its nbd:// URI.
    Attach {
        name: String,
        #[arg(long)]
        node: Option<String>,
    },
    /// Detach a volume (its engine is flushed and stopped).
    Detach { name: String },
    /// Live-migrate an attached volume: `--to N2` starts a second export on
    /// N2 (forwarding to the current engine) and returns once it serves;
    /// `--confirm` makes N2 the only engine; `--rollback` keeps the current
    /// one. A failed step rolls back by itself.
    #[command(group = clap::ArgGroup::new("step").required(true).args(["to", "confirm", "rollback"]))]
    Migrate {
        name: String,
        /// Node to move to.
        #[arg(long)]
        to: Option<String>,
        /// Finish the migration: the target becomes the only engine.
        #[arg(long)]
        confirm: bool,
        /// Undo the migration: the source stays the only engine.
        #[arg(long)]
        rollback: bool,
    },
    /// Delete a detached volume and its replicas.
    Delete {
        name: String,
        /// Return at once instead of waiting until it is gone.
        #[arg(long)]
        no_wait: bool,
    },
    /// Start a volume that cannot start from a replica outside its in-sync
    /// set (every member is gone for good), giving up what only the
    /// members held.
    Salvage {
        name: String,
        /// The replica to start from (see `vigil volume get`).
        #[arg(long)]
        replica: String,
        /// Required: say that writes only the members held are given up.
        #[arg(long)]
        accept_data_loss: bool,
    },
    /// Grow a detached volume.
    Expand {
        name: String,
        #[arg(long)]
        size: String,
    },
    /// Snapshots of an attached volume.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
}

#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// List nodes with readiness and disks.
    List,
    /// Show a node (with its eviction's progress while one runs).
    #[command(alias = "show")]
    Get { name: String },
    /// Evict a node: every replica on it is rebuilt elsewhere, then retired;
    /// nothing new is scheduled there. `--cancel` stops placing more (see
    /// `vigil node get N` for progress and blockers).
    Evict {
        name: String,
        #[arg(long)]
        cancel: bool,
    },
    /// Can the node go down now without making a volume unavailable or
    /// losing its last healthy replica? Lists each blocker (policy:
    /// `node-drain-policy`). Exit 0: it can; 1: blocked; 2: error.
    DrainCheck { name: String },
    /// Drain a node: forbid scheduling on it (like cordon), request its
    /// eviction, and wait until the drain check passes. Exit 0 when it
    /// does, 1 on timeout (saying what still blocks), 2 on error. The
    /// eviction stays requested afterwards (`vigil node evict N --cancel`
    /// and `vigil node update N --allow-scheduling true` to bring it back).
    Drain {
        name: String,
        /// How long to wait for the check to pass (e.g. 90s, 10m, 1h30m).
        #[arg(long, default_value = "10m", value_parser = crate::cli::duration::parse)]
        timeout: std::time::Duration,
    },
    /// Change a node's scheduling switch or tags.
    Update {
        name: String,
        /// Allow (true) or forbid (false) new replicas on the node.
        #[arg(long)]
        allow_scheduling: Option<bool>,
        /// Replace the node's tags (repeat).
        #[arg(long = "tag")]
        tags: Option<Vec<String>>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DiskCmd {
    /// List every disk of the cluster.
    List,
}

#[derive(Debug, Subcommand)]
pub enum SettingsCmd {
    /// Every setting with its value, default and what is allowed.
    List,
    /// One setting.
    Get { name: String },
    /// Change a setting (validated; a bad value lists what is allowed).
    Set { name: String, value: String },
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
    /// Also write the log, as JSON lines, to this file, rotated by size
    /// (PATH.1 … PATH.N); support bundles collect it.
    #[arg(long, env = "VIGIL_LOG_FILE")]
    pub log_file: Option<PathBuf>,
    /// Size at which the log file is rotated (e.g. 16MiB; a multiple of 4 KiB).
    #[arg(long, default_value = "16MiB", value_parser = parse_log_size)]
    pub log_file_max_size: u64,
    /// Rotated log files kept besides the current one.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub log_file_keep: u16,
    /// How replica files are read and written: `auto` through io_uring on
    /// the runtime's own threads where the kernel allows it (else the
    /// blocking pool, with a warning); `blocking` always on the blocking pool.
    #[arg(long, value_enum, default_value_t = IoEngineArg::Auto, env = "VIGIL_IO_ENGINE")]
    pub io_engine: IoEngineArg,
    /// Seconds before an unanswered replica request marks the replica ERR.
    #[arg(long, default_value_t = 8)]
    pub io_timeout_secs: u64,
    /// Milliseconds between two pings of each remote replica by an engine.
    #[arg(long, default_value_t = 500)]
    pub ping_interval_ms: u64,
    /// Milliseconds a ping may go unanswered before the replica is marked ERR.
    #[arg(long, default_value_t = 1000)]
    pub ping_timeout_ms: u64,
    /// A directory given to vigil for replicas (repeat for several; default <data-dir>/disks/default).
    #[arg(long = "disk")]
    pub disks: Vec<PathBuf>,
    /// A node label, key=value (repeat); `zone=a` is used by the scheduler.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Cluster store: `embedded` (a database in the data dir) or etcd://host:port[,host:port...].
    #[arg(long, env = "VIGIL_STORE", default_value = "embedded")]
    pub store: vigil_store::StoreUrl,
    /// Export traces over OTLP/HTTP (protobuf) to this collector, e.g.
    /// http://collector:4318 (`/v1/traces` is appended unless present).
    /// Without it, the standard OTEL_EXPORTER_OTLP_ENDPOINT is used; with
    /// neither, no traces are exported.
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
    /// Fraction (0 to 1) of NBD requests traced, when traces are exported.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub trace_io_sample_rate: f64,
    /// eBPF I/O tracing (docs/ebpf.md): `auto` loads it when privileges and
    /// the kernel allow, `required` refuses to start without it.
    #[arg(long, value_enum, default_value_t = crate::ebpf::Mode::Auto, env = "VIGIL_EBPF")]
    pub ebpf: crate::ebpf::Mode,
    /// Which eBPF probes to attach, comma-separated (docs/ebpf.md has what
    /// each costs): syscalls, block, tcp, runqueue.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "syscalls,block,tcp,runqueue",
        env = "VIGIL_EBPF_PROBES"
    )]
    pub ebpf_probes: Vec<crate::ebpf::ProbeArg>,
    /// Percent of the time (in 10 s cycles) the syscall probe is attached;
    /// 100 keeps it attached. Syscall tracepoints slow every syscall on the
    /// machine, so it is sampled; it also stays attached for 60 s after
    /// the engine sees a replica write path slow or failing (docs/ebpf.md).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u8).range(1..=100), env = "VIGIL_EBPF_SYSCALL_DUTY")]
    pub ebpf_syscall_duty: u8,
}

fn parse_log_size(s: &str) -> Result<u64, String> {
    vigil_engine::size::parse_volume_size(s).map_err(|e| e.to_string())
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a number from 0 to 1")),
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("label {s:?} is not key=value"))?;
    let ok = |t: &str| {
        !t.is_empty()
            && t.len() <= 63
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if !ok(k) || !ok(v) {
        return Err(format!(
            "label {s:?}: key and value must be 1-63 characters of letters, digits, '-', '_' or '.'"
        ));
    }
    Ok((k.to_string(), v.to_string()))
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

/// `--io-engine`: see [`vigil_engine::ring::IoEngine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IoEngineArg {
    /// io_uring where available, else the blocking pool.
    Auto,
    /// Always the blocking pool.
    Blocking,
}

impl From<IoEngineArg> for vigil_engine::ring::IoEngine {
    fn from(a: IoEngineArg) -> Self {
        match a {
            IoEngineArg::Auto => vigil_engine::ring::IoEngine::Auto,
            IoEngineArg::Blocking => vigil_engine::ring::IoEngine::Blocking,
        }
    }
}
