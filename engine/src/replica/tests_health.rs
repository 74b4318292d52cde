//! The cheap health signals the control plane polls: `check_files` (the
//! file checks of verify, no data read) and `io_errors`.

use std::fs::{self, OpenOptions};
use std::io;

use super::tests::{BS, new_replica, pattern, snap, work_tmp};
use super::*;

/// A replica with snapshots s1 and s2 under the head, each holding data.
fn two_snapshots(tmp: &tempfile::TempDir) -> Replica {
    let r = new_replica(tmp, 16);
    r.write(0, &pattern(1, 2)).expect("write");
    snap(&r, "s1");
    r.write(4 * BLOCK_SIZE, &pattern(2, 2)).expect("write");
    snap(&r, "s2");
    r.write(8 * BLOCK_SIZE, &pattern(3, 1)).expect("write");
    r
}

#[test]
fn check_files_finds_nothing_on_a_sound_chain_and_changes_nothing() {
    let tmp = work_tmp();
    let r = two_snapshots(&tmp);
    let before = r.info();
    let rep = r.check_files().expect("check files");
    assert_eq!(rep.layers_checked, 3);
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    // Nothing computed or written: the chain reads exactly as before.
    assert_eq!(r.info(), before);
}

#[test]
fn check_files_names_a_missing_snapshot_file() {
    let tmp = work_tmp();
    let r = two_snapshots(&tmp);
    let s1 = r.dir().join("volume-snap-s1.img");
    fs::remove_file(&s1).expect("remove s1");
    let rep = r.check_files().expect("check files");
    assert_eq!(rep.problems.len(), 1, "{:?}", rep.problems);
    let p = &rep.problems[0];
    assert_eq!((p.layer.as_str(), p.kind.as_str()), ("s1", "missing"));
    assert_eq!(p.file, s1);
}

#[test]
fn check_files_notices_a_truncated_snapshot_file() {
    let tmp = work_tmp();
    let r = two_snapshots(&tmp);
    let s2 = r.dir().join("volume-snap-s2.img");
    OpenOptions::new()
        .write(true)
        .open(&s2)
        .expect("open s2")
        .set_len(3 * BLOCK_SIZE)
        .expect("truncate s2");
    let rep = r.check_files().expect("check files");
    assert_eq!(rep.problems.len(), 1, "{:?}", rep.problems);
    let p = &rep.problems[0];
    assert_eq!((p.layer.as_str(), p.kind.as_str()), ("s2", "size"));
    assert_eq!(p.file, s2);
}

#[test]
fn check_files_reports_unreadable_metadata() {
    let tmp = work_tmp();
    let r = two_snapshots(&tmp);
    let m = r.dir().join("volume-snap-s1.img.meta");
    fs::write(&m, b"{ not json").expect("garble s1 metadata");
    let rep = r.check_files().expect("check files");
    assert_eq!(rep.problems.len(), 1, "{:?}", rep.problems);
    let p = &rep.problems[0];
    assert_eq!((p.layer.as_str(), p.kind.as_str()), ("s1", "metadata"));
    assert_eq!(p.file, m);
}

#[test]
fn io_errors_counts_disk_failures_only() {
    let tmp = work_tmp();
    let r = new_replica(&tmp, 16);
    assert_eq!(r.io_errors(), 0);
    // An injected failure of the snapshot's first durable step is an I/O
    // error from the filesystem as far as the replica can tell.
    fault::arm(0);
    let res = r.snapshot("s1", true, BTreeMap::new());
    fault::disarm();
    let err = res.expect_err("injected failure");
    assert_eq!(err.kind(), ErrorKind::Io);
    assert_eq!(r.io_errors(), 1);
    // Bad requests and missing names are the caller's fault, not the disk's.
    assert!(r.write(1, &pattern(1, 1)).is_err());
    assert!(r.remove_snapshot("nope").is_err());
    let mut buf = vec![0u8; BS];
    assert!(r.read(BLOCK_SIZE * 16, &mut buf).is_err());
    assert_eq!(r.io_errors(), 1);
    // Normal operation does not count either.
    r.write(0, &pattern(1, 1)).expect("write");
    r.flush().expect("flush");
    assert_eq!(r.io_errors(), 1);
}

#[test]
fn no_space_counts_as_a_disk_error() {
    // ENOSPC cannot be provoked in a unit test without a tiny filesystem;
    // check the classification `counted` relies on instead.
    let enospc = ReplicaError::Io {
        op: "write layer",
        path: "/x".into(),
        source: io::Error::from_raw_os_error(libc::ENOSPC),
    };
    assert_eq!(enospc.kind(), ErrorKind::NoSpace);
    assert!(is_disk_error(&enospc));
    let corrupt = ReplicaError::Corrupt {
        path: "/x".into(),
        detail: "bad".into(),
    };
    assert!(!is_disk_error(&corrupt));
    assert!(!is_disk_error(&ReplicaError::NotFound("s".into())));
}
