//! The structs of `bpf/vigil.h`, byte for byte (`#[repr(C)]`). The maps in
//! the object are declared with these sizes; `shape::expected_sizes` and
//! the tests check that the two agree.

/// Slots of a latency histogram (see `HIST_SLOTS` in vigil.h): slot `s <
/// HIST_SLOTS - 1` counts events shorter than 2^s µs; the last one counts
/// the rest.
pub const HIST_SLOTS: usize = 27;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawHist {
    pub slots: [u64; HIST_SLOTS],
    pub count: u64,
    pub sum_ns: u64,
    pub errors: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SysKey {
    pub disk: u32,
    pub op: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SysStart {
    pub ts: u64,
    pub disk: u32,
    pub op: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BlkKey {
    pub dev: u32,
    pub op: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RqStart {
    pub ts: u64,
    pub op: u32,
    pub dev: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct RunqSeen {
    pub run_delay: u64,
    pub slices: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct DevStats {
    pub issued: u64,
    pub completed: u64,
    pub errors: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PeerKey {
    /// IPv4 address as its bytes in network order.
    pub addr: [u8; 4],
    /// Port in host order (the tcp tracepoints give it so).
    pub port: u16,
    pub pad: u16,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PeerStats {
    pub rtt: RawHist,
    pub retransmits: u64,
}

// aya reads and writes these as raw bytes: every type above is
// `#[repr(C)]`, `Copy`, made of integers and integer arrays only, with
// explicit padding fields, so every byte pattern is a valid value and no
// byte is uninitialised padding.
mod pod {
    use super::*;
    // SAFETY: `RawHist` is repr(C) integers only, with no implicit padding.
    unsafe impl aya::Pod for RawHist {}
    // SAFETY: `SysKey` is repr(C) integers only, with no implicit padding.
    unsafe impl aya::Pod for SysKey {}
    // SAFETY: `SysStart` is repr(C) integers only, with no implicit padding.
    unsafe impl aya::Pod for SysStart {}
    // SAFETY: `BlkKey` is repr(C) integers only, with no implicit padding.
    unsafe impl aya::Pod for BlkKey {}
    // SAFETY: `RqStart` is repr(C) integers only, with no implicit padding.
    unsafe impl aya::Pod for RqStart {}
    // SAFETY: `RunqSeen` is repr(C) integers only, with no implicit padding.
    unsafe impl aya::Pod for RunqSeen {}
    // SAFETY: `DevStats` is repr(C) integers only, with no implicit padding.
    unsafe impl aya::Pod for DevStats {}
    // SAFETY: `PeerKey` is repr(C) integers only, with no implicit padding.
    unsafe impl aya::Pod for PeerKey {}
    // SAFETY: `PeerStats` is repr(C) integers only, with no implicit padding.
    unsafe impl aya::Pod for PeerStats {}
}
