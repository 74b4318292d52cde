use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use io_uring::{opcode, types};

use super::*;

/// A test operation: a heap buffer and the file, and a counter of
/// abandoned completions.
struct TestOp {
    buf: Vec<u8>,
    _file: Arc<File>,
    abandoned: Arc<Mutex<Vec<i32>>>,
}

impl InFlight for TestOp {
    fn abandoned(self, result: i32) {
        self.abandoned.lock().unwrap().push(result);
    }
}

fn scratch() -> (tempfile::TempDir, Arc<File>) {
    let dir = tempfile::tempdir().unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.path().join("f"))
        .unwrap();
    (dir, Arc::new(f))
}

fn write_op(ring: &Ring, file: &Arc<File>, data: Vec<u8>, offset: u64) -> Op<TestOp> {
    let op = TestOp {
        buf: data,
        _file: Arc::clone(file),
        abandoned: Arc::default(),
    };
    let e = opcode::Write::new(
        types::Fd(file.as_raw_fd()),
        op.buf.as_ptr(),
        op.buf.len() as u32,
    )
    .offset(offset)
    .build();
    // SAFETY: the entry points at the op's own heap buffer and file.
    unsafe { ring.submit(e, op) }
}

fn read_op(
    ring: &Ring,
    file: &Arc<File>,
    len: usize,
    offset: u64,
    abandoned: &Arc<Mutex<Vec<i32>>>,
) -> Op<TestOp> {
    let mut op = TestOp {
        buf: vec![0; len],
        _file: Arc::clone(file),
        abandoned: Arc::clone(abandoned),
    };
    let e = opcode::Read::new(types::Fd(file.as_raw_fd()), op.buf.as_mut_ptr(), len as u32)
        .offset(offset)
        .build();
    // SAFETY: as above.
    unsafe { ring.submit(e, op) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_reads_complete_with_their_buffers() {
    let ring = current().expect("io_uring works on the test machine");
    let (_d, file) = scratch();
    let (_, res) = write_op(&ring, &file, vec![7u8; 8192], 4096).await;
    assert_eq!(res, 8192);
    let none = Arc::default();
    let (op, res) = read_op(&ring, &file, 4096, 8192, &none).await;
    assert_eq!(res, 4096);
    assert!(op.buf.iter().all(|&b| b == 7));
    // Past the end: zero bytes read.
    let (_, res) = read_op(&ring, &file, 4096, 1 << 20, &none).await;
    assert_eq!(res, 0);
    // An error comes back as -errno.
    let (_, res) = read_op(
        &ring,
        &Arc::new(File::open("/proc/self/cmdline").unwrap()),
        16,
        u64::MAX - 4,
        &none,
    )
    .await;
    assert!(res < 0, "a read at an impossible offset fails: {res}");
    assert!(probe().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_operations_each_get_their_own_result() {
    let (_d, file) = scratch();
    let n = 600; // more than the submission queue holds
    let mut tasks = Vec::new();
    for i in 0..n {
        let file = Arc::clone(&file);
        tasks.push(tokio::spawn(async move {
            let ring = current().unwrap();
            let (_, res) = write_op(&ring, &file, vec![(i % 251) as u8; 512], i * 512).await;
            assert_eq!(res, 512);
        }));
    }
    // More operations in flight than the completion queue holds: the
    // overflow must still reach them (a lost one hangs here).
    for t in tasks {
        tokio::time::timeout(std::time::Duration::from_secs(20), t)
            .await
            .expect("every completion arrives")
            .unwrap();
    }
    for i in 0..n {
        let mut b = [0u8; 512];
        file.read_exact_at(&mut b, i * 512).unwrap();
        assert!(b.iter().all(|&x| x == (i % 251) as u8), "block {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_operation_keeps_its_buffer_until_the_kernel_is_done() {
    // A read from a pipe that no one writes yet stays in flight: drop its
    // future, then let it complete; the buffer it writes into must still be
    // alive (the slot kept it) and the completion must reach `abandoned`.
    let ring = current().unwrap();
    let (rd, mut wr) = std::io::pipe().unwrap();
    let rd = Arc::new(File::from(std::os::fd::OwnedFd::from(rd)));
    let abandoned = Arc::new(Mutex::new(Vec::new()));
    let mut op = read_op(&ring, &rd, 64, 0, &abandoned);
    // Polled once, then given up on.
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(std::future::Future::poll(std::pin::Pin::new(&mut op), &mut cx).is_pending());
    drop(op);
    assert!(abandoned.lock().unwrap().is_empty());
    std::io::Write::write_all(&mut wr, b"hello").unwrap();
    for _ in 0..200 {
        if !abandoned.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(*abandoned.lock().unwrap(), vec![5]);
}

#[test]
fn each_runtime_on_a_thread_gets_a_ring_of_its_own() {
    static DONE: AtomicUsize = AtomicUsize::new(0);
    for _ in 0..3 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (_d, file) = scratch();
            let ring = current().unwrap();
            let (_, res) = write_op(&ring, &file, vec![1; 4096], 0).await;
            assert_eq!(res, 4096);
            DONE.fetch_add(1, Ordering::SeqCst);
        });
    }
    assert_eq!(DONE.load(Ordering::SeqCst), 3);
}

#[test]
fn outside_a_runtime_there_is_no_ring() {
    assert!(current().is_none());
}

#[tokio::test(flavor = "current_thread")]
async fn entries_queued_while_the_ring_is_busy_are_sent_in_one_flush() {
    // A pipe read nobody answers keeps the ring busy, so every write after
    // it is queued for the flusher instead of submitted at once; they must
    // all complete (the flusher runs once this task yields) while the read
    // is still pending, and the read must complete when the pipe is written.
    let ring = current().unwrap();
    let (rd, mut wr) = std::io::pipe().unwrap();
    let rd = Arc::new(File::from(std::os::fd::OwnedFd::from(rd)));
    let none = Arc::default();
    let pending = read_op(&ring, &rd, 8, 0, &none);
    let (_d, file) = scratch();
    let writes = (0..40u64).map(|i| write_op(&ring, &file, vec![i as u8 + 1; 4096], i * 4096));
    let results = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        futures_util::future::join_all(writes),
    )
    .await
    .expect("queued writes are flushed");
    assert!(
        results.iter().all(|(_, res)| *res == 4096),
        "{:?}",
        results.iter().map(|r| r.1).collect::<Vec<_>>()
    );
    for i in 0..40u64 {
        let mut b = [0u8; 4096];
        file.read_exact_at(&mut b, i * 4096).unwrap();
        assert!(b.iter().all(|&x| x == i as u8 + 1), "block {i}");
    }
    std::io::Write::write_all(&mut wr, b"done").unwrap();
    let (op, res) = tokio::time::timeout(std::time::Duration::from_secs(10), pending)
        .await
        .unwrap();
    assert_eq!(res, 4);
    assert_eq!(&op.buf[..4], b"done");
}
