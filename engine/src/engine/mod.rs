//! The engine: the per-volume replication controller.
