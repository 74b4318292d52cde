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
//! Frames never interleave: the queue and the socket's write side are used
//! under one lock, and a frame partly written stays at the queue's head
//! until the flusher finishes it.

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
    /// Wakes the flusher: frames were queued.
    kick: Notify,
}

#[derive(Default)]
struct State {
    queue: VecDeque<OutFrame>,
    /// Bytes of the queue's first frame already written.
    head_written: usize,
    /// Why the connection cannot be written to any more, once it cannot.
    failed: Option<String>,
}

/// Why a frame could not be sent.
#[derive(Debug, thiserror::Error)]
#[error("connection failed: {0}")]
pub(crate) struct Closed(pub String);

impl Outbox {
    /// An outbox on `wr`, and its flusher: run the flusher for as long as
    /// the connection lives (it returns only when a write fails). Dropping
    /// the flusher ends the connection: the socket is shut down at once,
    /// even while requests still being answered hold the outbox, and their
    /// sends fail.
    pub(crate) fn new(wr: OwnedWriteHalf) -> (Outbox, impl Future<Output = io::Error> + Send) {
        let shared = Arc::new(Shared {
            wr,
            state: Mutex::new(State::default()),
            kick: Notify::new(),
        });
        let closer = ShutDownOnDrop(Arc::clone(&shared));
        let flusher = async move {
            let closer = closer;
            flush_when_kicked(&closer.0).await
        };
        (Outbox { shared }, flusher)
    }

    /// Sends `frame`: written now if `alone` (the caller knows no other
    /// frame is about to follow, so there is nothing to batch it with) and
    /// nothing is queued, else queued for the flusher. Whatever part of it
    /// the socket does not take at once is finished by the flusher.
    pub(crate) fn send(&self, frame: OutFrame, alone: bool) -> Result<(), Closed> {
        let sh = &self.shared;
        let mut st = sh.state();
        if let Some(why) = &st.failed {
            return Err(Closed(why.clone()));
        }
        let direct = alone && st.queue.is_empty();
        st.queue.push_back(frame);
        if direct {
            match sh.drain(&mut st) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    let why = e.to_string();
                    st.fail(why.clone());
                    drop(st);
                    // The flusher learns it too and ends the connection.
                    sh.kick.notify_one();
                    return Err(Closed(why));
                }
            }
        }
        drop(st);
        sh.kick.notify_one();
        Ok(())
    }
}

impl State {
    fn fail(&mut self, why: String) {
        self.failed.get_or_insert(why);
        // Their permits and buffers go now: nothing will send them.
        self.queue.clear();
        self.head_written = 0;
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the queue consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes queued frames until the queue is empty (`Ok`), the socket is
    /// full (`WouldBlock`) or the write fails. Never blocks.
    fn drain(&self, st: &mut State) -> io::Result<()> {
        while !st.queue.is_empty() {
            let mut slices: Vec<IoSlice<'_>> =
                Vec::with_capacity(MAX_SLICES.min(3 * st.queue.len()));
            let mut skip = st.head_written;
            'frames: for frame in &st.queue {
                for part in frame.parts() {
                    if skip >= part.len() {
                        skip -= part.len();
                        continue;
                    }
                    slices.push(IoSlice::new(&part[skip..]));
                    skip = 0;
                    if slices.len() == MAX_SLICES {
                        break 'frames;
                    }
                }
            }
            let mut n = loop {
                match self.wr.try_write_vectored(&slices) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                    r => break r?,
                }
            };
            drop(slices);
            // Retire every frame written whole; remember how far into the
            // next one the write got.
            while n > 0 {
                let Some(head) = st.queue.front() else {
                    break;
                };
                let rest = head.wire_len() - st.head_written;
                if n < rest {
                    st.head_written += n;
                    break;
                }
                n -= rest;
                st.head_written = 0;
                st.queue.pop_front();
            }
        }
        Ok(())
    }
}

/// The flusher: whenever frames are queued, writes them as the socket takes
/// them. Returns the error that ended the connection.
async fn flush_when_kicked(sh: &Shared) -> io::Error {
    loop {
        sh.kick.notified().await;
        loop {
            let drained = {
                let mut st = sh.state();
                if let Some(why) = &st.failed {
                    return io::Error::other(why.clone());
                }
                match sh.drain(&mut st) {
                    Ok(()) => true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                    Err(e) => {
                        st.fail(e.to_string());
                        return e;
                    }
                }
            };
            if drained {
                break;
            }
            if let Err(e) = sh.wr.writable().await {
                sh.state().fail(e.to_string());
                return e;
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
