//! A connection's outgoing frames: written by the task that has one, at
//! once, when nothing else is waiting to go; otherwise queued for the
//! connection's flusher, which sends everything queued in one `writev`.
//!
//! Before this, every frame went through a channel to a writer task: one
//! more task to schedule per request on each side of a remote leg, and with
//! two legs in flight the second wake-up pulled an idle worker thread in
//! (on a 2-core machine, a context switch per request). A caller that knows
//! it is alone on the connection (the engine's only request in flight, the
//! server's only request being answered) writes directly; under load the
//! flusher still batches a burst into one system call, and payloads are
//! never copied into a buffer to be framed.
//!
//! Frames never interleave and the lock is never held across a system
//! call: one writer at a time (the sending task, or the flusher) takes a
//! batch off the queue's head, writes it unlocked, and puts back what the
//! socket did not take; senders that find a writer at work only queue.
//! The writer goes on until the queue is empty, so nothing queued waits for
//! a wake-up. A full socket hands the writing to the flusher, which waits
//! until the socket takes more.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

use super::frame::OutFrame;

/// Most slices handed to one `writev` (well under `IOV_MAX`).
const MAX_SLICES: usize = 64;

/// The sending side of a connection; cheap to clone.
#[derive(Clone)]
pub(crate) struct Outbox {
    shared: Arc<Shared>,
}

struct Shared {
    wr: OwnedWriteHalf,
    state: Mutex<State>,
    /// Wakes the flusher: frames were queued, or the socket was full.
    kick: Notify,
}

/// Who writes the queue out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// Nobody: the next sender alone writes, else the flusher is kicked.
    Idle,
    /// A task is writing and goes on until the queue is empty.
    Busy,
    /// The socket was full: the flusher writes once it takes more.
    Blocked,
}

struct State {
    queue: VecDeque<OutFrame>,
    /// Bytes of the queue's first frame already written.
    head_written: usize,
    writer: Writer,
    /// Why the connection cannot be written to any more, once it cannot.
    failed: Option<String>,
}

/// Why a frame could not be sent.
#[derive(Debug, thiserror::Error)]
#[error("connection failed: {0}")]
pub(crate) struct Closed(pub String);

/// How a turn at writing ended.
enum Turn {
    /// The queue is empty; the writer is idle again.
    Empty,
    /// The socket is full; the flusher takes over.
    Full,
}

impl Outbox {
    /// An outbox on `wr`, and its flusher: run the flusher for as long as
    /// the connection lives (it returns only when a write fails). Dropping
    /// the flusher ends the connection: the socket is shut down at once,
    /// even while requests still being answered hold the outbox, and their
    /// sends fail.
    pub(crate) fn new(wr: OwnedWriteHalf) -> (Outbox, impl Future<Output = io::Error> + Send) {
        let shared = Arc::new(Shared {
            wr,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                head_written: 0,
                writer: Writer::Idle,
                failed: None,
            }),
            kick: Notify::new(),
        });
        let closer = ShutDownOnDrop(Arc::clone(&shared));
        let flusher = async move {
            let closer = closer;
            flush_when_kicked(&closer.0).await
        };
        (Outbox { shared }, flusher)
    }

    /// Sends `frame`: written by this call if `alone` (the caller knows no
    /// other frame is about to follow, so there is nothing to batch it
    /// with) and nobody is writing, else queued — behind a writer at work,
    /// or for the flusher.
    pub(crate) fn send(&self, frame: OutFrame, alone: bool) -> Result<(), Closed> {
        let sh = &self.shared;
        {
            let mut st = sh.state();
            if let Some(why) = &st.failed {
                return Err(Closed(why.clone()));
            }
            st.queue.push_back(frame);
            match st.writer {
                Writer::Busy | Writer::Blocked => return Ok(()),
                Writer::Idle if !alone => {
                    drop(st);
                    sh.kick.notify_one();
                    return Ok(());
                }
                Writer::Idle => st.writer = Writer::Busy,
            }
        }
        match sh.write_out() {
            Ok(Turn::Empty) => Ok(()),
            Ok(Turn::Full) => {
                sh.kick.notify_one();
                Ok(())
            }
            Err(e) => {
                // The flusher learns it too and ends the connection.
                sh.kick.notify_one();
                Err(Closed(e.to_string()))
            }
        }
    }
}

impl State {
    fn fail(&mut self, why: String) {
        self.failed.get_or_insert(why);
        // Their permits and buffers go now: nothing will send them.
        self.queue.clear();
        self.head_written = 0;
        self.writer = Writer::Idle;
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the queue consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the queue out, as the one writer (`Writer::Busy`, set by the
    /// caller), until it is empty or the socket is full; the lock is taken
    /// only to move frames off and back onto the queue's head.
    fn write_out(&self) -> io::Result<Turn> {
        loop {
            let (batch, skip) = {
                let mut st = self.state();
                if let Some(why) = &st.failed {
                    return Err(io::Error::other(why.clone()));
                }
                if st.queue.is_empty() {
                    st.writer = Writer::Idle;
                    return Ok(Turn::Empty);
                }
                // Whole frames of at most three slices each.
                let take = st.queue.len().min(MAX_SLICES / 3);
                let batch: Vec<OutFrame> = st.queue.drain(..take).collect();
                (batch, std::mem::take(&mut st.head_written))
            };
            let written = self.write_batch(&batch, skip);
            let mut st = self.state();
            if st.failed.is_some() {
                // Failed meanwhile (the connection ended): drop the batch.
                continue;
            }
            match written {
                Ok(n) => {
                    // Drop the frames written whole; put the rest back at
                    // the head, in order, the first maybe partly written.
                    let mut done = skip + n;
                    let mut whole = 0;
                    while whole < batch.len() && done >= batch[whole].wire_len() {
                        done -= batch[whole].wire_len();
                        whole += 1;
                    }
                    for frame in batch.into_iter().skip(whole).rev() {
                        st.queue.push_front(frame);
                    }
                    st.head_written = done;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    for frame in batch.into_iter().rev() {
                        st.queue.push_front(frame);
                    }
                    st.head_written = skip;
                    st.writer = Writer::Blocked;
                    return Ok(Turn::Full);
                }
                Err(e) => {
                    st.fail(e.to_string());
                    return Err(e);
                }
            }
        }
    }

    /// One `writev` of `batch`, its first `skip` bytes already sent.
    fn write_batch(&self, batch: &[OutFrame], skip: usize) -> io::Result<usize> {
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(3 * batch.len());
        let mut skip = skip;
        for part in batch.iter().flat_map(|f| f.parts()) {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            slices.push(IoSlice::new(&part[skip..]));
            skip = 0;
        }
        loop {
            match self.wr.try_write_vectored(&slices) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                r => return r,
            }
        }
    }
}

/// The flusher: writes what senders queued for it, and takes over when the
/// socket was full. Returns the error that ended the connection.
async fn flush_when_kicked(sh: &Shared) -> io::Error {
    loop {
        sh.kick.notified().await;
        loop {
            let blocked = {
                let mut st = sh.state();
                if let Some(why) = &st.failed {
                    return io::Error::other(why.clone());
                }
                match st.writer {
                    // Whoever writes goes on until the queue is empty.
                    Writer::Busy => break,
                    Writer::Idle if st.queue.is_empty() => break,
                    Writer::Idle => {
                        st.writer = Writer::Busy;
                        false
                    }
                    Writer::Blocked => true,
                }
            };
            if blocked {
                if let Err(e) = sh.wr.writable().await {
                    sh.state().fail(e.to_string());
                    return e;
                }
                sh.state().writer = Writer::Busy;
            }
            match sh.write_out() {
                Ok(Turn::Empty) => break,
                // Full again: wait until it takes more.
                Ok(Turn::Full) => continue,
                Err(e) => return e,
            }
        }
    }
}

/// Ends the connection when the flusher goes (its task ended or was
/// aborted): the socket is shut down both ways, so the peer sees the end
/// now rather than when the last request still running lets go of the
/// outbox (the descriptor itself closes then).
struct ShutDownOnDrop(Arc<Shared>);

impl Drop for ShutDownOnDrop {
    fn drop(&mut self) {
        self.0.state().fail("connection closed".to_string());
        let fd = self.0.wr.as_ref().as_raw_fd();
        // SAFETY: `fd` is the socket `wr` owns, open while `self.0` lives;
        // shutdown(2) does not close it. An error (already disconnected)
        // leaves nothing to do.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    fn frame(id: u64, body: usize) -> OutFrame {
        let body = Bytes::from((0..body).map(|i| (i as u64 ^ id) as u8).collect::<Vec<_>>());
        OutFrame::new(3, 0, id, Bytes::from_static(b"pre"), body).unwrap()
    }

    /// Frames sent directly and queued, large enough to fill the socket
    /// many times over, arrive whole, in order, none interleaved.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_arrive_whole_and_in_order_past_a_full_socket() {
        let (a, mut b) = pair().await;
        let (_rd, wr) = a.into_split();
        let (outbox, flusher) = Outbox::new(wr);
        let flusher = tokio::spawn(flusher);
        let frames: Vec<OutFrame> = (0..200u64)
            .map(|i| frame(i, [0, 10, 4096, 300_000][i as usize % 4]))
            .collect();
        let expected: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; expected.len()];
            b.read_exact(&mut got).await.unwrap();
            assert!(
                got == expected,
                "the byte stream differs from the frames sent"
            );
        });
        for (i, f) in frames.into_iter().enumerate() {
            outbox.send(f, i % 3 == 0).unwrap();
        }
        tokio::time::timeout(std::time::Duration::from_secs(30), reader)
            .await
            .expect("every frame arrives")
            .unwrap();
        flusher.abort();
    }

    /// Tasks on two workers sending at once, directly and queued, past a
    /// full socket: every frame arrives whole (none interleaved), each once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_senders_never_interleave_frames() {
        use crate::protocol::frame::{MAX_FRAME_PAYLOAD, read_frame};
        let (a, b) = pair().await;
        let (_rd, wr) = a.into_split();
        let (outbox, flusher) = Outbox::new(wr);
        let flusher = tokio::spawn(flusher);
        const TASKS: u64 = 4;
        const EACH: u64 = 100;
        let reader = tokio::spawn(async move {
            let mut b = tokio::io::BufReader::new(b);
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..TASKS * EACH {
                let f = read_frame(&mut b, MAX_FRAME_PAYLOAD).await.unwrap();
                let id = f.header.id;
                let want = frame(id, body_len(id)).to_vec();
                assert_eq!(&f.payload[..], &want[24..], "frame {id} arrived damaged");
                assert!(seen.insert(id), "frame {id} arrived twice");
            }
            seen.len() as u64
        });
        fn body_len(id: u64) -> usize {
            [0, 100, 4096, 200_000][(id % 4) as usize]
        }
        let senders: Vec<_> = (0..TASKS)
            .map(|t| {
                let outbox = outbox.clone();
                tokio::spawn(async move {
                    for i in 0..EACH {
                        let id = t * EACH + i;
                        outbox
                            .send(frame(id, body_len(id)), id.is_multiple_of(2))
                            .unwrap();
                        if i % 7 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        for s in senders {
            s.await.unwrap();
        }
        let got = tokio::time::timeout(std::time::Duration::from_secs(30), reader)
            .await
            .expect("every frame arrives")
            .unwrap();
        assert_eq!(got, TASKS * EACH);
        flusher.abort();
    }

    /// A peer that went away fails the sends that follow with the reason.
    #[tokio::test]
    async fn a_closed_peer_fails_later_sends() {
        let (a, b) = pair().await;
        drop(b);
        let (_rd, wr) = a.into_split();
        let (outbox, flusher) = Outbox::new(wr);
        let flusher = tokio::spawn(flusher);
        let mut failed = None;
        for i in 0..1000 {
            if let Err(e) = outbox.send(frame(i, 65536), true) {
                failed = Some(e);
                break;
            }
            tokio::task::yield_now().await;
        }
        let e = failed.expect("a send to a closed peer fails");
        assert!(e.to_string().starts_with("connection failed"), "{e}");
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), flusher)
            .await
            .expect("the flusher ends")
            .unwrap();
        assert_ne!(ended.kind(), io::ErrorKind::WouldBlock);
    }
}
