//! Shared parts of the nemesis suites (`tests/tests/nemesis.rs`, and
//! `tests/tests/filesystem_nemesis.rs` with its file and SQLite writers in
//! `fswriter`): the
//! history and its checker, the writer, and the two ways the suite reads a
//! volume back — through its NBD endpoint, and each replica's files with
//! the engine's own replica reader.

pub mod fswriter;
pub mod history;
pub mod writer;

use std::path::Path;

pub use history::{History, Target};
pub use writer::{Plan, Writer};

/// The whole volume behind `uri`, read with nbdcopy into `scratch`.
pub fn read_through(uri: &str, scratch: &Path) -> Vec<u8> {
    let _ = std::fs::remove_file(scratch);
    crate::tools::run("nbdcopy", &[uri, scratch.to_str().unwrap()]);
    std::fs::read(scratch).unwrap()
}

/// The contents one replica presents (its chain of layers read through, as
/// its replica server would serve them), from its directory. Only while no
/// agent has the replica open.
pub fn read_replica(dir: &Path) -> Vec<u8> {
    use vigil_engine::replica::{Replica, ReplicaOptions};
    let r = Replica::open(dir, &ReplicaOptions { direct_io: false })
        .unwrap_or_else(|e| panic!("open replica {}: {e}", dir.display()));
    let mut image = vec![0u8; r.size() as usize];
    for (i, chunk) in image.chunks_mut(1 << 20).enumerate() {
        r.read((i as u64) << 20, chunk)
            .unwrap_or_else(|e| panic!("read replica {}: {e}", dir.display()));
    }
    image
}
