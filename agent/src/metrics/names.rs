//! Names of the metrics the agent itself records (the engine's data-path
//! metrics are named in `vigil_engine::engine::metrics`). Every name here
//! is in [`super::catalogue::FAMILIES`] and in docs/metrics.md.

pub const BUILD_INFO: &str = "vigil_build_info";
pub const PROCESS_RESIDENT_MEMORY: &str = "vigil_process_resident_memory_bytes";
pub const PROCESS_THREADS: &str = "vigil_process_threads";
pub const PROCESS_OPEN_FDS: &str = "vigil_process_open_fds";
pub const PROCESS_START_TIME: &str = "vigil_process_start_time_seconds";

pub use vigil_store::instrumented::names::{STORE_REQUEST_DURATION, STORE_REQUEST_ERRORS};
pub const STORE_UP: &str = "vigil_store_up";

pub const CLUSTER_NODES_EXPECTED: &str = "vigil_cluster_nodes_expected";
pub const CLUSTER_NODES_READY: &str = "vigil_cluster_nodes_ready";
pub const NODE_READY: &str = "vigil_node_ready";
pub const NODE_EVICTION_REPLICAS_LEFT: &str = "vigil_node_eviction_replicas_left";

pub const DISK_STATE: &str = "vigil_disk_state";
pub const DISK_CAPACITY: &str = "vigil_disk_capacity_bytes";
pub const DISK_AVAILABLE: &str = "vigil_disk_available_bytes";
pub const DISK_USED: &str = "vigil_disk_used_bytes";
pub const DISK_SCHEDULED: &str = "vigil_disk_scheduled_bytes";
pub const DISK_RESERVED: &str = "vigil_disk_reserved_bytes";
pub const DISK_IO_ERRORS: &str = "vigil_disk_io_errors_total";

pub const VOLUME_STATE: &str = "vigil_volume_state";
pub const VOLUME_MIGRATION_PHASE_SECONDS: &str = "vigil_volume_migration_phase_seconds";
pub const VOLUME_ROBUSTNESS: &str = "vigil_volume_robustness";
pub const VOLUME_SIZE: &str = "vigil_volume_size_bytes";
pub const VOLUME_ACTUAL_SIZE: &str = "vigil_volume_actual_size_bytes";
pub const VOLUME_REPLICAS_DESIRED: &str = "vigil_volume_replicas_desired";
pub const VOLUME_REPLICAS_HEALTHY: &str = "vigil_volume_replicas_healthy";

pub const ENGINE_SUSPENDED: &str = "vigil_engine_suspended";
pub use vigil_control::controller::lease_fence::ENGINE_SUSPENSIONS;

pub const REPLICA_STATE: &str = "vigil_replica_state";
pub const REPLICA_MODE: &str = "vigil_replica_mode";
pub const REPLICA_ACTUAL_SIZE: &str = "vigil_replica_actual_size_bytes";
pub const REPLICA_REBUILD_COPIED: &str = "vigil_replica_rebuild_copied_bytes";
pub const REPLICA_REBUILD_SIZE: &str = "vigil_replica_rebuild_size_bytes";

pub const HEALTH_CHECK: &str = "vigil_health_check";
pub const HEALTH_CHECK_OBJECTS: &str = "vigil_health_check_objects";
pub const HEALTH_CHECK_MUTED: &str = "vigil_health_check_muted";

pub use vigil_control::cluster::events::EVENTS_RECORDED;
pub use vigil_control::controller::REMEDIATIONS;
pub const SCRAPE_DURATION: &str = "vigil_scrape_duration_seconds";

pub const EBPF_LOADED: &str = "vigil_ebpf_loaded";
pub const EBPF_UNAVAILABLE: &str = "vigil_ebpf_unavailable";
pub const EBPF_SYSCALL_LATENCY: &str = "vigil_ebpf_syscall_latency_seconds";
pub const EBPF_SYSCALL_ERRORS: &str = "vigil_ebpf_syscall_errors_total";
pub const EBPF_BLOCK_LATENCY: &str = "vigil_ebpf_block_latency_seconds";
pub const EBPF_BLOCK_ERRORS: &str = "vigil_ebpf_block_errors_total";
pub const EBPF_BLOCK_INFLIGHT: &str = "vigil_ebpf_block_inflight";
pub const EBPF_TCP_RETRANSMITS: &str = "vigil_ebpf_tcp_retransmits_total";
pub const EBPF_TCP_RTT: &str = "vigil_ebpf_tcp_rtt_seconds";
pub const EBPF_RUNQUEUE_DELAY: &str = "vigil_ebpf_runqueue_delay_seconds";
