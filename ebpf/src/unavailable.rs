//! Why the programs are not running: the `reason` label of
//! `vigil_ebpf_unavailable`, with the detail for the log and doctor.

use std::fmt;

/// The reason label (a closed set: dashboards and alerts key on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// `--ebpf off`.
    Disabled,
    /// No root and no CAP_BPF + CAP_PERFMON.
    NotPermitted,
    /// The kernel has no BTF description of its types (/sys/kernel/btf/vmlinux).
    NoBtf,
    /// The kernel refused the object (verifier, BTF, maps).
    LoadFailed,
    /// A tracepoint could not be attached.
    AttachFailed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Disabled => "disabled",
            Reason::NotPermitted => "not_permitted",
            Reason::NoBtf => "no_btf",
            Reason::LoadFailed => "load_failed",
            Reason::AttachFailed => "attach_failed",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The programs are not running: why, and what the kernel said.
#[derive(Debug, Clone, thiserror::Error)]
#[error("eBPF tracing unavailable ({reason}): {detail}")]
pub struct Unavailable {
    pub reason: Reason,
    pub detail: String,
}

impl Unavailable {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Unavailable {
        Unavailable {
            reason,
            detail: detail.into(),
        }
    }
}
