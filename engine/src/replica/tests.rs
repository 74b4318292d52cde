//! Basic I/O tests, and helpers shared by the other test modules.

use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use tempfile::TempDir;

pub(super) const BS: usize = BLOCK_SIZE as usize;

/// A temporary directory on the ext4 filesystem under /work (where
/// SEEK_DATA, punch hole and O_DIRECT behave like production), falling back
/// to the system temp dir if /work is not writable.
pub(super) fn work_tmp() -> TempDir {
    let root = Path::new("/work/tmp-replica-tests");
    if fs::create_dir_all(root).is_ok()
        && let Ok(d) = tempfile::Builder::new().prefix("rep").tempdir_in(root)
    {
        return d;
    }
    tempfile::tempdir().unwrap()
}

/// A temporary directory in the system temp dir (may be tmpfs).
pub(super) fn sys_tmp() -> TempDir {
    tempfile::tempdir().unwrap()
}

pub(super) fn opts() -> ReplicaOptions {
    ReplicaOptions::default()
}

/// Creates a replica of `blocks` blocks in `<tmp>/r`.
pub(super) fn new_replica(tmp: &TempDir, blocks: u64) -> Replica {
    Replica::create(&tmp.path().join("r"), blocks * BLOCK_SIZE, &opts()).unwrap()
}

/// `n` blocks, block `i` filled with `fill + i`.
pub(super) fn pattern(fill: u8, n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| std::iter::repeat_n(fill.wrapping_add(i as u8), BS))
        .collect()
}

pub(super) fn read_all(r: &Replica) -> Vec<u8> {
    let mut buf = vec![0u8; r.size() as usize];
    r.read(0, &mut buf).unwrap();
    buf
}

pub(super) fn read_blocks(r: &Replica, block: u64, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n * BS];
    r.read(block * BLOCK_SIZE, &mut buf).unwrap();
    buf
}

pub(super) fn snap(r: &Replica, name: &str) -> LayerInfo {
    r.snapshot(name, true, BTreeMap::new()).unwrap()
}

fn round_trip_in(tmp: TempDir, direct: bool) {
    let r = Replica::create(
        &tmp.path().join("r"),
        64 * BLOCK_SIZE,
        &ReplicaOptions { direct_io: direct },
    )
    .unwrap();
    if !direct {
        assert!(!r.info().direct_io);
    }
    let data = pattern(1, 3);
    r.write(5 * BLOCK_SIZE, &data).unwrap();
    assert_eq!(read_blocks(&r, 5, 3), data);
    // Neighbours and never-written blocks are zeros.
    assert_eq!(read_blocks(&r, 4, 1), vec![0; BS]);
    assert_eq!(read_blocks(&r, 8, 1), vec![0; BS]);
    assert_eq!(read_blocks(&r, 60, 4), vec![0; 4 * BS]);
    // A read spanning written and unwritten blocks.
    let mut expect = vec![0u8; 6 * BS];
    expect[BS..4 * BS].copy_from_slice(&data);
    assert_eq!(read_blocks(&r, 4, 6), expect);
    // Overwrite part of it.
    r.write(6 * BLOCK_SIZE, &pattern(100, 1)).unwrap();
    expect[2 * BS..3 * BS].copy_from_slice(&pattern(100, 1));
    assert_eq!(read_blocks(&r, 4, 6), expect);
    let head = &r.info().chain[0];
    assert_eq!(head.allocated_bytes, 3 * BLOCK_SIZE);
    assert!(!head.read_only);
    assert_eq!(head.name, "volume-head-001");
}

#[test]
fn round_trip_on_work_fs() {
    round_trip_in(work_tmp(), true);
}

#[test]
fn round_trip_on_system_tmp() {
    round_trip_in(sys_tmp(), true);
}

#[test]
fn round_trip_buffered() {
    round_trip_in(work_tmp(), false);
}

#[test]
fn unaligned_memory_buffers() {
    let tmp = work_tmp();
    let r = new_replica(&tmp, 1024);
    let data = pattern(7, 300); // > 1 MiB: the bounce buffer works in chunks
    let mut storage = vec![0u8; data.len() + 1];
    storage[1..].copy_from_slice(&data);
    let unaligned = &storage[1..];
    assert_ne!(unaligned.as_ptr() as usize % 4096, 0);
    r.write(3 * BLOCK_SIZE, unaligned).unwrap();
    let mut out = vec![0u8; data.len() + 3];
    r.read(3 * BLOCK_SIZE, &mut out[3..]).unwrap();
    assert!(out[3..] == data[..]);
    let mut raw = vec![0u8; data.len() + 5];
    r.read_layer("volume-head-001", 3 * BLOCK_SIZE, &mut raw[5..])
        .unwrap();
    assert!(raw[5..] == data[..]);
}

#[test]
fn invalid_requests() {
    let tmp = work_tmp();
    let r = new_replica(&tmp, 16);
    let mut buf = vec![0u8; BS];
    let kind = |e: ReplicaError| e.kind();
    assert_eq!(
        kind(r.read(1, &mut buf).unwrap_err()),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        kind(r.read(16 * BLOCK_SIZE, &mut buf).unwrap_err()),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        kind(r.write(0, &buf[..100]).unwrap_err()),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        kind(r.trim(u64::MAX - 4095, 8192).unwrap_err()),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        kind(r.write_zeroes(0, 17 * BLOCK_SIZE).unwrap_err()),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        kind(r.remove_snapshot("nope").unwrap_err()),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(r.remove_snapshot("volume-head-001").unwrap_err()),
        ErrorKind::InvalidArgument
    );
    assert_eq!(kind(r.revert("nope").unwrap_err()), ErrorKind::NotFound);
    assert_eq!(
        kind(r.snapshot("Bad/Name", true, BTreeMap::new()).unwrap_err()),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        kind(
            r.snapshot("volume-head-7", true, BTreeMap::new())
                .unwrap_err()
        ),
        ErrorKind::InvalidArgument
    );
    snap(&r, "s1");
    assert_eq!(
        kind(r.snapshot("s1", true, BTreeMap::new()).unwrap_err()),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        kind(r.layer_checksum("volume-head-002").unwrap_err()),
        ErrorKind::InvalidArgument
    );
    // Creating over an existing replica or a non-empty directory.
    let e = Replica::create(r.dir(), 16 * BLOCK_SIZE, &opts())
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    let e = Replica::create(tmp.path(), 16 * BLOCK_SIZE, &opts())
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let e = Replica::create(&tmp.path().join("x"), 4095, &opts())
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let e = Replica::open(&tmp.path().join("nothing"), &opts())
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[test]
fn trim_and_write_zeroes_read_zeros() {
    let tmp = work_tmp();
    let r = new_replica(&tmp, 32);
    r.write(0, &pattern(1, 16)).unwrap();
    snap(&r, "base");
    r.write(4 * BLOCK_SIZE, &pattern(50, 4)).unwrap();
    r.write(20 * BLOCK_SIZE, &pattern(60, 4)).unwrap();
    // Over snapshot data (blocks 2..6) and over head-only data (20..22).
    r.trim(2 * BLOCK_SIZE, 4 * BLOCK_SIZE).unwrap();
    r.write_zeroes(20 * BLOCK_SIZE, 2 * BLOCK_SIZE).unwrap();
    // Over never-written blocks.
    r.trim(28 * BLOCK_SIZE, 4 * BLOCK_SIZE).unwrap();
    let mut expect = vec![0u8; 32 * BS];
    expect[..16 * BS].copy_from_slice(&pattern(1, 16));
    expect[4 * BS..8 * BS].copy_from_slice(&pattern(50, 4));
    expect[20 * BS..24 * BS].copy_from_slice(&pattern(60, 4));
    expect[2 * BS..6 * BS].fill(0);
    expect[20 * BS..22 * BS].fill(0);
    assert!(read_all(&r) == expect);
    // Head-only data was deallocated; zeros over snapshot data are real.
    let head = r.info().chain[1].clone();
    let ext = r.layer_extents(&head.name).unwrap();
    let blocks: Vec<(u64, u64)> = ext
        .iter()
        .map(|e| (e.offset / BLOCK_SIZE, (e.offset + e.len) / BLOCK_SIZE))
        .collect();
    assert_eq!(blocks, [(2, 8), (22, 24)]);
    // The same after reopening (index rebuilt from SEEK_DATA).
    let dir = r.dir().to_path_buf();
    drop(r);
    let r = Replica::open(&dir, &opts()).unwrap();
    assert!(read_all(&r) == expect);
    assert_eq!(r.layer_extents(&head.name).unwrap(), ext);
}

#[test]
fn reopen_preserves_data_chain_and_revision() {
    let tmp = work_tmp();
    let r = new_replica(&tmp, 64);
    r.write(0, &pattern(1, 8)).unwrap();
    let mut labels = BTreeMap::new();
    labels.insert("k".to_string(), "v".to_string());
    r.snapshot("first", true, labels).unwrap();
    r.write(4 * BLOCK_SIZE, &pattern(9, 8)).unwrap();
    r.trim(10 * BLOCK_SIZE, BLOCK_SIZE).unwrap();
    r.flush().unwrap();
    assert_eq!(r.info().revision, 3);
    assert_eq!(r.bump_generation().unwrap(), 1);
    assert_eq!(r.bump_generation().unwrap(), 2);
    // An unflushed write counts only in memory.
    r.write(40 * BLOCK_SIZE, &pattern(3, 1)).unwrap();
    assert_eq!(r.info().revision, 3);
    let before = read_all(&r);
    let info = r.info();
    let dir = r.dir().to_path_buf();
    drop(r);
    let r = Replica::open(&dir, &opts()).unwrap();
    assert!(read_all(&r) == before);
    let after = r.info();
    assert_eq!(after.revision, 3);
    assert_eq!(after.generation, 2);
    assert_eq!(after.chain, info.chain);
    assert_eq!(
        after.chain[0].labels.get("k").map(String::as_str),
        Some("v")
    );
    assert!(after.chain[0].checksum.is_some());
    assert_eq!(after.chain[1].parent.as_deref(), Some("first"));
    assert_eq!(after.chain[1].name, "volume-head-002");
    r.write(0, &pattern(1, 1)).unwrap();
    r.flush().unwrap();
    assert_eq!(r.info().revision, 4);
}

#[test]
fn corrupt_metadata_is_reported_not_panicked() {
    let tmp = work_tmp();
    let r = new_replica(&tmp, 16);
    r.write(0, &pattern(1, 1)).unwrap();
    snap(&r, "s1");
    let dir = r.dir().to_path_buf();
    drop(r);
    let expect_corrupt = |file: &str| {
        let e = Replica::open(&dir, &opts()).err().unwrap();
        match &e {
            ReplicaError::Corrupt { path, .. } => {
                assert!(path.ends_with(file), "{e} should name {file}")
            }
            other => panic!("expected Corrupt, got {other}"),
        }
    };
    let snap_meta = dir.join("volume-snap-s1.img.meta");
    let good = fs::read(&snap_meta).unwrap();
    fs::write(&snap_meta, b"{ not json").unwrap();
    expect_corrupt("volume-snap-s1.img.meta");
    fs::write(&snap_meta, &good[..good.len() / 2]).unwrap();
    expect_corrupt("volume-snap-s1.img.meta");
    fs::write(&snap_meta, &good).unwrap();

    // A missing layer file.
    let img = dir.join("volume-snap-s1.img");
    fs::rename(&img, dir.join("aside")).unwrap();
    expect_corrupt("volume-snap-s1.img");
    fs::rename(dir.join("aside"), &img).unwrap();

    // A parent that does not exist.
    let head_meta = dir.join("volume-head-002.img.meta");
    let good_head = fs::read_to_string(&head_meta).unwrap();
    fs::write(&head_meta, good_head.replace("\"s1\"", "\"ghost\"")).unwrap();
    expect_corrupt("volume-head-002.img.meta");
    // A parent loop.
    fs::write(
        &head_meta,
        good_head.replace("\"s1\"", "\"volume-head-002\""),
    )
    .unwrap();
    expect_corrupt("volume-head-002.img.meta");
    // A parent name that would escape the directory.
    fs::write(&head_meta, good_head.replace("\"s1\"", "\"../x\"")).unwrap();
    expect_corrupt("volume-head-002.img.meta");
    fs::write(&head_meta, &good_head).unwrap();

    let rj = dir.join("replica.json");
    let good_rj = fs::read(&rj).unwrap();
    fs::write(&rj, b"[]").unwrap();
    expect_corrupt("replica.json");
    fs::write(&rj, &good_rj).unwrap();
    fs::write(dir.join("revision"), b"garbage garbage garbage garbage").unwrap();
    expect_corrupt("revision");
}

#[test]
fn open_cleans_leftovers() {
    let tmp = work_tmp();
    let r = new_replica(&tmp, 16);
    r.write(0, &pattern(1, 2)).unwrap();
    let before = read_all(&r);
    let dir = r.dir().to_path_buf();
    drop(r);
    for f in [
        "replica.json.tmp",
        "volume-snap-x.img.partial",
        "volume-snap-old.img",
        "volume-snap-old.img.meta",
        "volume-head-009.img",
        "volume-head-001.img.meta.tmp",
    ] {
        fs::write(dir.join(f), b"junk").unwrap();
    }
    fs::write(dir.join("notes.txt"), b"not ours").unwrap();
    let r = Replica::open(&dir, &opts()).unwrap();
    assert!(read_all(&r) == before);
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "notes.txt",
            "replica.json",
            "revision",
            "volume-head-001.img",
            "volume-head-001.img.meta"
        ]
    );
}
