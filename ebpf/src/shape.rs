//! What the loader relies on in an object file: its programs and its maps
//! (type, key and value sizes, capacity). clang's output is not byte-for-byte
//! reproducible across checkouts (the debug info names the build
//! directory), so the committed object and a fresh build from
//! `bpf/vigil.bpf.c` are compared by shape, not by bytes.

use std::collections::BTreeMap;
use std::mem::size_of;

use crate::layout::*;

/// One map as the loader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapShape {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

/// Programs (name → section kind) and maps (name → shape) of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub programs: BTreeMap<String, String>,
    pub maps: BTreeMap<String, MapShape>,
}

/// Why an object could not be read.
#[derive(Debug, thiserror::Error)]
#[error("parse eBPF object: {0}")]
pub struct ShapeError(#[from] aya_obj::ParseError);

/// The shape of an ELF eBPF object.
pub fn shape(object: &[u8]) -> Result<Shape, ShapeError> {
    let obj = aya_obj::Object::parse(object)?;
    let programs = obj
        .programs
        .iter()
        .map(|(name, p)| (name.clone(), format!("{:?}", p.section)))
        .collect();
    let maps = obj
        .maps
        .iter()
        .filter(|(name, _)| !name.starts_with('.'))
        .map(|(name, m)| {
            (
                name.clone(),
                MapShape {
                    map_type: m.map_type(),
                    key_size: m.key_size(),
                    value_size: m.value_size(),
                    max_entries: m.max_entries(),
                },
            )
        })
        .collect();
    Ok(Shape { programs, maps })
}

/// Key and value sizes the reader's Rust structs give each map.
pub fn expected_sizes() -> BTreeMap<&'static str, (usize, usize)> {
    BTreeMap::from([
        ("fd_disk", (size_of::<u32>(), size_of::<u32>())),
        ("blk_devs", (size_of::<u32>(), size_of::<DevStats>())),
        ("tcp_peers", (size_of::<PeerKey>(), size_of::<PeerStats>())),
        ("sys_hist", (size_of::<SysKey>(), size_of::<RawHist>())),
        ("sys_inflight", (size_of::<i32>(), size_of::<SysStart>())),
        ("blk_hist", (size_of::<BlkKey>(), size_of::<RawHist>())),
        ("blk_inflight", (size_of::<u64>(), size_of::<RqStart>())),
        ("uring_inflight", (size_of::<u64>(), size_of::<SysStart>())),
        ("runq_seen", (size_of::<i32>(), size_of::<RunqSeen>())),
        ("runq_hist", (size_of::<u32>(), size_of::<RawHist>())),
    ])
}
