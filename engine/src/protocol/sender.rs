//! Sending frames on one connection: straight from the task that made the
//! frame when the socket takes it, through the connection's drain task
//! only when it does not.
//!
//! A frame handed to a writer task costs a task wake-up (and often a
//! thread hand-off) before it reaches the socket. Here [`FrameSender::send`]
//! writes it at once with a non-blocking vectored write when nothing is
//! queued before it; whatever the socket refuses (full send buffer) is
//! queued, in order, and [`FrameSender::drain`] — run by the connection's
//! task — writes the queue out when the socket is writable again. Frames
//! never interleave: while anything is queued or being drained, every new
//! frame queues behind it.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

use super::frame::OutFrame;

/// Queued frames drained in one vectored write, at most.
const BATCH: usize = 64;

/// See the module documentation.
pub(crate) struct FrameSender {
    half: OwnedWriteHalf,
    state: Mutex<State>,
    /// Wakes the drain task when frames were queued.
    queued: Notify,
}

#[derive(Default)]
struct State {
    /// Frames not yet fully written, oldest first, each with the bytes of
    /// it already written.
    queue: VecDeque<(OutFrame, usize)>,
    /// The queue is not empty or the drain task is writing a batch taken
    /// from it: new frames queue.
    draining: bool,
    /// A write failed: nothing more is sent.
    failed: Option<String>,
}

/// Why a frame was not sent: the connection's writes failed.
#[derive(Debug)]
pub(crate) struct SendFailed(pub String);

impl FrameSender {
    pub(crate) fn new(half: OwnedWriteHalf) -> FrameSender {
        FrameSender {
            half,
            state: Mutex::new(State::default()),
            queued: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Plain fields, consistent at every unlock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `frame`: written now if the socket takes it and nothing is
    /// queued, else queued for [`FrameSender::drain`] (in order).
    pub(crate) fn send(&self, frame: OutFrame) -> Result<(), SendFailed> {
        let mut st = self.state();
        if let Some(why) = &st.failed {
            return Err(SendFailed(why.clone()));
        }
        if st.draining {
            st.queue.push_back((frame, 0));
            return Ok(());
        }
        let done = match write_from(&self.half, std::slice::from_ref(&(&frame, 0))) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => {
                let why = format!("write failed: {e}");
                st.failed = Some(why.clone());
                drop(st);
                self.queued.notify_one();
                return Err(SendFailed(why));
            }
        };
        if done < frame.len() {
            st.queue.push_back((frame, done));
            st.draining = true;
            drop(st);
            self.queued.notify_one();
        }
        Ok(())
    }

    /// Ends the connection now for the peer (a FIN), whoever still holds
    /// this sender (request tasks still running keep it alive): every
    /// later send fails, and queued frames are dropped.
    pub(crate) fn close(&self, why: &str) {
        let dropped = {
            let mut st = self.state();
            st.failed.get_or_insert_with(|| why.to_string());
            std::mem::take(&mut st.queue)
        };
        drop(dropped);
        let fd = self.half.as_ref().as_raw_fd();
        // SAFETY: `fd` is the socket `self.half` keeps open; shutdown only
        // changes the connection's state and touches no memory. Its error
        // (already shut down, peer gone) leaves nothing to do.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        self.queued.notify_one();
    }

    /// Writes queued frames out whenever there are some; returns only when
    /// a write fails (the connection is then unusable).
    pub(crate) async fn drain(&self) -> io::Result<()> {
        loop {
            self.queued.notified().await;
            loop {
                // Take a batch; the queue may refill meanwhile, behind it.
                let mut batch: Vec<(OutFrame, usize)> = {
                    let mut st = self.state();
                    if let Some(why) = &st.failed {
                        return Err(io::Error::other(why.clone()));
                    }
                    if st.queue.is_empty() {
                        st.draining = false;
                        break;
                    }
                    let n = st.queue.len().min(BATCH);
                    st.queue.drain(..n).collect()
                };
                while !batch.is_empty() {
                    self.half.writable().await?;
                    let parts: Vec<(&OutFrame, usize)> =
                        batch.iter().map(|(f, done)| (f, *done)).collect();
                    let n = match write_from(&self.half, &parts) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => {
                            self.state().failed = Some(format!("write failed: {e}"));
                            return Err(e);
                        }
                    };
                    advance(&mut batch, n);
                }
            }
        }
    }
}

/// One non-blocking vectored write of the unwritten rest of `frames`
/// (each with the bytes of it already written); returns the bytes written.
fn write_from(half: &OwnedWriteHalf, frames: &[(&OutFrame, usize)]) -> io::Result<usize> {
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(frames.len() * 3);
    for (frame, done) in frames {
        let mut skip = *done;
        for part in frame.parts() {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            slices.push(IoSlice::new(&part[skip..]));
            skip = 0;
        }
    }
    if slices.is_empty() {
        return Ok(0);
    }
    let n = half.try_write_vectored(&slices)?;
    if n == 0 {
        return Err(io::Error::from(io::ErrorKind::WriteZero));
    }
    Ok(n)
}

/// Marks `n` more bytes of `batch` written, dropping frames written whole
/// (which releases their memory permits).
fn advance(batch: &mut Vec<(OutFrame, usize)>, mut n: usize) {
    let mut whole = 0;
    for (frame, done) in batch.iter_mut() {
        let rest = frame.len() - *done;
        if n >= rest {
            n -= rest;
            *done = frame.len();
            whole += 1;
        } else {
            *done += n;
            break;
        }
    }
    batch.drain(..whole);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A connected pair: the sender's write half and the peer's stream.
    async fn pair() -> (FrameSender, TcpStream, tokio::net::tcp::OwnedReadHalf) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        let (rd, wr) = c.unwrap().into_split();
        (FrameSender::new(wr), s.unwrap().0, rd)
    }

    fn frame(id: u64, len: usize) -> OutFrame {
        let body = Bytes::from(vec![(id % 251) as u8; len]);
        OutFrame::new(1, 0, id, Bytes::new(), body).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_arrive_whole_and_in_order_when_the_socket_fills_up() {
        let (sender, mut peer, _rd) = pair().await;
        let sender = std::sync::Arc::new(sender);
        let drain = tokio::spawn({
            let s = std::sync::Arc::clone(&sender);
            async move { s.drain().await }
        });
        // Far more than the socket buffers hold while nobody reads: most of
        // these queue, in order, behind a partly written one.
        let frames: Vec<OutFrame> = (0..64).map(|i| frame(i, 256 << 10)).collect();
        let expected: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
        for f in frames {
            sender.send(f).unwrap();
        }
        assert!(sender.state().draining, "the socket took 16 MiB unread?");
        let mut got = vec![0u8; expected.len()];
        peer.read_exact(&mut got).await.unwrap();
        assert!(
            got == expected,
            "bytes on the wire differ from the frames sent"
        );
        // Drained: the next frame goes out directly again.
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while sender.state().draining {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        let small = frame(99, 100);
        let want = small.to_vec();
        sender.send(small).unwrap();
        assert!(!sender.state().draining);
        let mut got = vec![0u8; want.len()];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(got, want);
        drain.abort();
    }

    #[tokio::test]
    async fn a_failed_write_fails_every_later_send_and_the_drain() {
        let (sender, peer, _rd) = pair().await;
        drop(peer);
        // Writes to a closed peer fail (EPIPE or ECONNRESET) within a few.
        let mut failed = None;
        for i in 0..100 {
            if let Err(e) = sender.send(frame(i, 64 << 10)) {
                failed = Some(e);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        assert!(failed.is_some(), "sends to a closed peer kept succeeding");
        assert!(sender.send(frame(1, 10)).is_err());
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), sender.drain()).await;
        assert!(matches!(r, Ok(Err(_))), "the drain ends with the error");
    }
}
