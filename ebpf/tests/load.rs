//! The programs in a real kernel: as root they load, attach and count this
//! process's syscalls on a registered file, and only on that file; without
//! privileges loading fails as `not_permitted`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use vigil_ebpf::{Reason, SysOp, Tracer};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Calls counted for `disk` and `op` in a snapshot.
fn count_of(snap: &vigil_ebpf::Snapshot, disk: u32, op: SysOp) -> u64 {
    snap.syscalls
        .iter()
        .filter(|s| s.disk == disk && s.op == op)
        .map(|s| s.hist.count)
        .sum()
}

#[test]
fn counts_syscalls_on_registered_files_only() {
    let tgid = std::process::id();
    let tracer = match Tracer::load(tgid, &BTreeSet::from(vigil_ebpf::Probe::ALL)) {
        Ok(t) => t,
        Err(e) => {
            assert!(!is_root(), "root must be able to load the programs: {e}");
            assert_eq!(e.reason, Reason::NotPermitted, "{e}");
            return;
        }
    };
    let dir = std::env::temp_dir().join(format!("vigil-ebpf-load-{tgid}"));
    std::fs::create_dir_all(&dir).unwrap();
    let open = |name: &str| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join(name))
            .unwrap()
    };
    let traced = open("traced");
    let other = open("other");
    tracer
        .set_files(&BTreeMap::from([(traced.as_raw_fd() as u32, 7)]))
        .unwrap();
    tracer.set_devices(&BTreeSet::new()).unwrap();
    let buf = vec![1u8; 4096];
    for i in 0..50u64 {
        traced.write_at(&buf, i * 4096).unwrap();
        other.write_at(&buf, i * 4096).unwrap();
    }
    traced.sync_data().unwrap();
    other.sync_data().unwrap();
    let mut back = vec![0u8; 4096];
    traced.read_at(&mut back, 0).unwrap();
    let snap = tracer.read().unwrap();
    let count = |op| count_of(&snap, 7, op);
    assert_eq!(count(SysOp::Write), 50, "{snap:?}");
    assert_eq!(count(SysOp::Fsync), 1, "{snap:?}");
    assert_eq!(count(SysOp::Read), 1, "{snap:?}");
    assert!(snap.syscalls.iter().all(|s| s.disk == 7), "{snap:?}");

    // Detached, the syscall programs count nothing; attached again, they do.
    assert!(tracer.syscalls_attached());
    tracer.attach_syscalls(false).unwrap();
    assert!(!tracer.syscalls_attached());
    for i in 0..10u64 {
        traced.write_at(&buf, i * 4096).unwrap();
    }
    let writes = |t: &Tracer| {
        t.read()
            .unwrap()
            .syscalls
            .iter()
            .filter(|s| s.disk == 7 && s.op == SysOp::Write)
            .map(|s| s.hist.count)
            .sum::<u64>()
    };
    assert_eq!(writes(&tracer), 50, "nothing counted while detached");
    tracer.attach_syscalls(true).unwrap();
    tracer.attach_syscalls(true).unwrap(); // idempotent
    for i in 0..10u64 {
        traced.write_at(&buf, i * 4096).unwrap();
    }
    assert_eq!(writes(&tracer), 60, "counted again once attached");

    // io_uring requests (the agent's data path) on the registered file
    // count as its writes, reads and syncs, from submission to completion;
    // on another file nothing. Their programs are not switched with the
    // syscall ones: detached syscalls still see them.
    tracer.attach_syscalls(false).unwrap();
    let mut ring = io_uring::IoUring::new(8).unwrap();
    let mut submit = |entry: io_uring::squeue::Entry| {
        // SAFETY: the entry points at `buf`/`back` and at open files, all
        // alive until the completion is reaped right below.
        unsafe { ring.submission().push(&entry).unwrap() };
        ring.submit_and_wait(1).unwrap();
        let cqe = ring.completion().next().expect("a completion");
        assert!(
            cqe.result() >= 0,
            "io_uring request failed: {}",
            cqe.result()
        );
    };
    use io_uring::{opcode, types};
    for file in [&traced, &other] {
        let fd = types::Fd(file.as_raw_fd());
        for i in 0..5u64 {
            submit(
                opcode::Write::new(fd, buf.as_ptr(), 4096)
                    .offset(i * 4096)
                    .build(),
            );
        }
        submit(opcode::Read::new(fd, back.as_mut_ptr(), 4096).build());
        submit(
            opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
        );
    }
    let snap = tracer.read().unwrap();
    let count = |op| count_of(&snap, 7, op);
    assert_eq!(count(SysOp::Write), 65, "{snap:?}");
    assert_eq!(count(SysOp::Read), 2, "{snap:?}");
    assert_eq!(count(SysOp::Fsync), 2, "{snap:?}");
    assert!(snap.syscalls.iter().all(|s| s.disk == 7), "{snap:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
