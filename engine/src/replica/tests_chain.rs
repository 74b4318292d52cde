//! Chain tests: snapshot, revert, remove, verify.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;

use super::tests::{BS, new_replica, pattern, read_all, read_blocks, snap, work_tmp};
use super::*;

#[test]
fn snapshot_overwrite_revert_restores() {
    let tmp = work_tmp();
    let r = new_replica(&tmp, 32);
    r.write(0, &pattern(1, 8)).unwrap();
    let s = snap(&r, "s1");
    assert!(s.read_only);
    assert_eq!(s.allocated_bytes, 8 * BLOCK_SIZE);
    assert_eq!(s.checksum.as_ref().unwrap().method, "crc64nvme-extents-v1");
    let old = read_all(&r);
    r.write(2 * BLOCK_SIZE, &pattern(100, 10)).unwrap();
    r.trim(0, BLOCK_SIZE).unwrap();
    snap(&r, "s2");
    r.write(20 * BLOCK_SIZE, &pattern(200, 2)).unwrap();
    assert!(read_all(&r) != old);
    r.revert("s1").unwrap();
    assert!(read_all(&r) == old);
    let info = r.info();
    let names: Vec<&str> = info.chain.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["s1", "volume-head-004"]);
    assert_eq!(info.chain[1].allocated_bytes, 0);
    // Old layers are gone from disk.
    assert!(!r.dir().join("volume-snap-s2.img").exists());
    assert!(!r.dir().join("volume-head-003.img").exists());
    assert!(!r.dir().join("volume-head-001.img").exists());
    assert!(r.dir().join("volume-snap-s1.img").exists());
    // And the result survives a reopen.
    let dir = r.dir().to_path_buf();
    drop(r);
    let r = Replica::open(&dir, &ReplicaOptions::default()).unwrap();
    assert!(read_all(&r) == old);
    assert!(r.verify().unwrap().problems.is_empty());
}

/// Builds s1 <- s2 <- s3 <- head with overlapping data, returns the content.
fn layered(r: &Replica) -> Vec<u8> {
    r.write(0, &pattern(1, 16)).unwrap();
    snap(r, "s1");
    r.write(4 * BLOCK_SIZE, &pattern(40, 4)).unwrap();
    r.trim(12 * BLOCK_SIZE, 2 * BLOCK_SIZE).unwrap();
    r.write(20 * BLOCK_SIZE, &pattern(80, 4)).unwrap();
    snap(r, "s2");
    r.write(6 * BLOCK_SIZE, &pattern(120, 4)).unwrap();
    snap(r, "s3");
    r.write(22 * BLOCK_SIZE, &pattern(160, 4)).unwrap();
    read_all(r)
}

#[test]
fn remove_snapshot_with_snapshot_child_keeps_data() {
    let tmp = work_tmp();
    let r = new_replica(&tmp, 32);
    let content = layered(&r);
    let s2_before = read_layer_all(&r, "s2");
    r.remove_snapshot("s1").unwrap();
    assert!(read_all(&r) == content);
    let info = r.info();
    assert_eq!(info.chain[0].name, "s2");
    assert_eq!(info.chain[0].parent, None);
    // s2 now holds s1's data where it had none.
    assert!(read_layer_all(&r, "s2") != s2_before);
    assert!(!r.dir().join("volume-snap-s1.img").exists());
    // The merged checksum was recomputed and matches.
    assert!(r.verify().unwrap().problems.is_empty());
    r.remove_snapshot("s2").unwrap();
    assert!(read_all(&r) == content);
    assert_eq!(r.info().chain.len(), 2);
    let dir = r.dir().to_path_buf();
    drop(r);
    let r = Replica::open(&dir, &ReplicaOptions::default()).unwrap();
    assert!(read_all(&r) == content);
    assert!(r.verify().unwrap().problems.is_empty());
}

#[test]
fn remove_snapshot_with_head_child_keeps_data() {
    let tmp = work_tmp();
    let r = new_replica(&tmp, 32);
    let content = layered(&r);
    r.remove_snapshot("s3").unwrap();
    assert!(read_all(&r) == content);
    r.remove_snapshot("s2").unwrap();
    r.remove_snapshot("s1").unwrap();
    assert!(read_all(&r) == content);
    let info = r.info();
    assert_eq!(info.chain.len(), 1);
    assert_eq!(info.chain[0].parent, None);
    // Writes still work and the merged head survives a reopen.
    r.write(30 * BLOCK_SIZE, &pattern(9, 1)).unwrap();
    let content = read_all(&r);
    let dir = r.dir().to_path_buf();
    drop(r);
    let r = Replica::open(&dir, &ReplicaOptions::default()).unwrap();
    assert!(read_all(&r) == content);
}

fn read_layer_all(r: &Replica, layer: &str) -> Vec<u8> {
    let mut buf = vec![0u8; r.size() as usize];
    r.read_layer(layer, 0, &mut buf).unwrap();
    buf
}

#[test]
fn verify_finds_a_flipped_byte_and_names_the_file() {
    let tmp = work_tmp();
    let r = new_replica(&tmp, 32);
    layered(&r);
    let rep = r.verify().unwrap();
    assert_eq!(rep.layers_checked, 4);
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    let victim = r.dir().join("volume-snap-s2.img");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&victim)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 5 * BLOCK_SIZE + 17).unwrap();
    b[0] ^= 0x20;
    f.write_all_at(&b, 5 * BLOCK_SIZE + 17).unwrap();
    f.sync_all().unwrap();
    let rep = r.verify().unwrap();
    assert_eq!(rep.problems.len(), 1, "{:?}", rep.problems);
    let p = &rep.problems[0];
    assert_eq!(p.layer, "s2");
    assert_eq!(p.kind, "checksum");
    assert_eq!(p.file, victim);
    assert!(p.file.is_absolute());
}

#[test]
fn verify_reports_size_and_missing_files() {
    let tmp = work_tmp();
    let r = new_replica(&tmp, 32);
    layered(&r);
    let s1 = r.dir().join("volume-snap-s1.img");
    OpenOptions::new()
        .write(true)
        .open(&s1)
        .unwrap()
        .set_len(40 * BLOCK_SIZE)
        .unwrap();
    let s3 = r.dir().join("volume-snap-s3.img");
    fs::remove_file(&s3).unwrap();
    let rep = r.verify().unwrap();
    let kinds: Vec<(&str, &str)> = rep
        .problems
        .iter()
        .map(|p| (p.layer.as_str(), p.kind.as_str()))
        .collect();
    assert!(kinds.contains(&("s1", "size")), "{kinds:?}");
    assert!(kinds.contains(&("s3", "missing")), "{kinds:?}");
    assert!(rep.problems.iter().any(|p| p.file == s3));
}

#[test]
fn layer_checksum_is_computed_when_missing() {
    let tmp = work_tmp();
    let r = new_replica(&tmp, 16);
    r.write(0, &pattern(3, 4)).unwrap();
    let s = snap(&r, "s1");
    let want = s.checksum.unwrap();
    assert_eq!(r.layer_checksum("s1").unwrap(), want);
    // Drop the stored checksum from the meta and reopen.
    let dir = r.dir().to_path_buf();
    drop(r);
    let mp = dir.join("volume-snap-s1.img.meta");
    let mut m: serde_json::Value = serde_json::from_slice(&fs::read(&mp).unwrap()).unwrap();
    m["checksum"] = serde_json::Value::Null;
    fs::write(&mp, serde_json::to_vec(&m).unwrap()).unwrap();
    let r = Replica::open(&dir, &ReplicaOptions::default()).unwrap();
    assert_eq!(r.info().chain[0].checksum, None);
    assert_eq!(r.layer_checksum("s1").unwrap(), want);
    assert_eq!(r.info().chain[0].checksum, Some(want.clone()));
    // The checksum is over extents: known value for a tiny layer.
    assert_eq!(want.value.len(), 16);
    assert!(read_blocks(&r, 0, 4) == pattern(3, 4));
    let stored: serde_json::Value = serde_json::from_slice(&fs::read(&mp).unwrap()).unwrap();
    assert_eq!(stored["checksum"]["value"], want.value);
    let _ = BS;
}

#[test]
fn checksum_matches_the_documented_method() {
    let tmp = work_tmp();
    let r = new_replica(&tmp, 16);
    r.write(2 * BLOCK_SIZE, &pattern(5, 2)).unwrap();
    r.write(8 * BLOCK_SIZE, &pattern(9, 1)).unwrap();
    let s = snap(&r, "s1");
    let mut d = crc64fast_nvme::Digest::new();
    for (off, data) in [
        (2 * BLOCK_SIZE, pattern(5, 2)),
        (8 * BLOCK_SIZE, pattern(9, 1)),
    ] {
        d.write(&off.to_le_bytes());
        d.write(&(data.len() as u64).to_le_bytes());
        d.write(&data);
    }
    assert_eq!(s.checksum.unwrap().value, format!("{:016x}", d.sum64()));
}

#[test]
fn short_layer_files_read_zeros_past_their_end() {
    let tmp = work_tmp();
    let r = new_replica(&tmp, 32);
    r.write(0, &pattern(1, 12)).unwrap();
    snap(&r, "s1");
    // Someone truncates the snapshot file in the middle of its data.
    let path = r.dir().join("volume-snap-s1.img");
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(6 * BLOCK_SIZE)
        .unwrap();
    // The open replica's index still points past the end: zeros, no error.
    let mut expect = pattern(1, 12);
    expect[6 * BS..].fill(0);
    assert!(read_blocks(&r, 0, 12) == expect);
    let mut raw = vec![1u8; 12 * BS];
    r.read_layer("s1", 0, &mut raw).unwrap();
    assert!(raw == expect);
    let rep = r.verify().unwrap();
    assert!(
        rep.problems
            .iter()
            .any(|p| p.kind == "size" && p.file == path)
    );
    // Reopening works too (the file is shorter than the volume).
    let dir = r.dir().to_path_buf();
    drop(r);
    let r = Replica::open(&dir, &ReplicaOptions::default()).unwrap();
    assert!(read_blocks(&r, 0, 12) == expect);
}
