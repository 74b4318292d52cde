//! The transmission phase: one reader (this task) parses requests and
//! spawns one task per request; one writer task owns the socket's write half
//! and sends replies in completion order, so replies go out of order.
//!
//! Back-pressure: at most [`MAX_IN_FLIGHT`] requests and [`MAX_BYTES_IN_FLIGHT`]
//! payload bytes (write payloads being read or written, read data waiting to
//! be sent) per connection. Permits travel with the reply and are released
//! once the reply has been handed to the socket buffer.

use std::future::Future;
use std::io::IoSlice;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::Instrument;

use super::NbdError;
use super::wire::*;
use crate::device::{DeviceError, ExportDevice};
use crate::protocol::trace_context;
use crate::replica::AlignedBuf;

/// Requests in flight per connection.
pub const MAX_IN_FLIGHT: usize = 64;
/// Payload bytes in flight per connection (must be ≥ [`MAX_BLOCK_SIZE`]).
pub const MAX_BYTES_IN_FLIGHT: usize = 64 * 1024 * 1024;
/// Read payloads up to this size are copied into the write buffer (batched
/// with other replies); larger ones are written directly with the header in
/// one vectored write.
const INLINE_DATA_MAX: usize = 16 * 1024;

/// How the transmission phase ended without a protocol violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The client sent NBD_CMD_DISC; in-flight requests were answered.
    Disconnect,
    /// The client closed its side; in-flight requests were answered if possible.
    Eof,
    /// Replies could not be written any more (client gone).
    WriterClosed,
}

struct Reply {
    cookie: u64,
    error: u32,
    data: Option<Bytes>,
    _slot: OwnedSemaphorePermit,
    _bytes: Option<OwnedSemaphorePermit>,
}

type ReplyTx = mpsc::UnboundedSender<Reply>;

fn device_error(op: &'static str, e: &DeviceError) -> u32 {
    tracing::debug!(op, error = %e, "device request failed");
    nbd_error_from_errno(e.errno())
}

/// The span of a request picked by I/O sampling (`nbd.<op>` with volume,
/// op, offset and length); `None` for the others, which then cost one
/// branch (a sampling rate of 0).
fn io_span(op: &'static str, export: &str, req: &Request) -> Option<tracing::Span> {
    if !trace_context::sample_io() {
        return None;
    }
    Some(tracing::info_span!(
        "nbd.request",
        otel.name = op,
        volume = %export,
        op,
        offset = req.offset,
        len = req.len,
    ))
}

/// Spawns a request's task, in its span if it was sampled.
fn spawn_io(span: Option<tracing::Span>, task: impl Future<Output = ()> + Send + 'static) {
    match span {
        Some(span) => drop(tokio::spawn(task.instrument(span))),
        None => drop(tokio::spawn(task)),
    }
}

/// Checks a request's flags and range. Returns the NBD error to reply with.
fn validate(req: &Request, size: u64) -> Result<(), u32> {
    // FUA is valid on every command once SEND_FUA is advertised (ignored
    // where nothing is written); NO_HOLE only on WRITE_ZEROES. Anything else
    // (DF, REQ_ONE, FAST_ZERO were never advertised) is EINVAL.
    let allowed = match req.kind {
        NBD_CMD_READ | NBD_CMD_WRITE | NBD_CMD_FLUSH | NBD_CMD_TRIM => NBD_CMD_FLAG_FUA,
        NBD_CMD_WRITE_ZEROES => NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE,
        _ => return Err(NBD_EINVAL), // unknown command (CACHE, BLOCK_STATUS, ...)
    };
    if req.flags & !allowed != 0 {
        return Err(NBD_EINVAL);
    }
    if req.kind == NBD_CMD_FLUSH {
        return Ok(()); // offset and length are reserved; not checked
    }
    if matches!(req.kind, NBD_CMD_READ | NBD_CMD_WRITE) && req.len > MAX_BLOCK_SIZE {
        return Err(NBD_EINVAL);
    }
    let in_range = req
        .offset
        .checked_add(u64::from(req.len))
        .is_some_and(|end| end <= size);
    if !in_range {
        // The spec: ENOSPC for writes past the end, EINVAL for reads and trims.
        return Err(match req.kind {
            NBD_CMD_WRITE | NBD_CMD_WRITE_ZEROES => NBD_ENOSPC,
            _ => NBD_EINVAL,
        });
    }
    Ok(())
}

/// Serves requests until the client disconnects. `export` and `peer` are for logs.
pub(crate) async fn serve<R, W, D>(
    reader: BufReader<R>,
    writer: BufWriter<W>,
    device: Arc<D>,
    export: &str,
    peer: &str,
) -> Result<End, NbdError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
    D: ExportDevice,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let writer_task = tokio::spawn(write_replies(writer, rx));
    let result = read_requests(reader, tx, device, export, peer).await;
    // `read_requests` dropped its sender; the writer ends once every
    // in-flight request task has sent its reply (each holds a sender clone).
    match result {
        Ok(end) => {
            match writer_task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(export, peer, "writing replies failed: {e}"),
                Err(e) => tracing::warn!(export, peer, "reply writer task failed: {e}"),
            }
            Ok(end)
        }
        Err(e) => {
            // Hard disconnect: replies still queued are dropped.
            writer_task.abort();
            Err(e)
        }
    }
}

async fn read_requests<R, D>(
    mut reader: BufReader<R>,
    tx: ReplyTx,
    device: Arc<D>,
    export: &str,
    peer: &str,
) -> Result<End, NbdError>
where
    R: AsyncRead + Unpin,
    D: ExportDevice,
{
    let size = device.size();
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let budget = Arc::new(Semaphore::new(MAX_BYTES_IN_FLIGHT));
    let closed = || NbdError::Protocol("internal: semaphore closed".into());

    loop {
        let mut hdr = [0u8; REQUEST_LEN];
        tokio::select! {
            biased;
            r = reader.read_exact(&mut hdr) => match r {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(End::Eof),
                Err(e) => return Err(e.into()),
            },
            _ = tx.closed() => return Ok(End::WriterClosed),
        }
        let req = parse_request(&hdr).map_err(|e| NbdError::Protocol(format!("request: {e}")))?;

        if req.kind == NBD_CMD_DISC {
            tracing::debug!(export, peer, "NBD_CMD_DISC");
            return Ok(End::Disconnect);
        }
        if req.kind == NBD_CMD_WRITE && req.len > MAX_BLOCK_SIZE {
            // The payload would have to be swallowed to stay in sync; the
            // spec lets us hard-disconnect instead.
            return Err(NbdError::Protocol(format!(
                "NBD_CMD_WRITE of {} bytes exceeds the {MAX_BLOCK_SIZE}-byte maximum",
                req.len
            )));
        }

        let slot = slots.clone().acquire_owned().await.map_err(|_| closed())?;
        let reply = |error: u32, data: Option<Bytes>, slot, bytes| Reply {
            cookie: req.cookie,
            error,
            data,
            _slot: slot,
            _bytes: bytes,
        };

        if let Err(error) = validate(&req, size) {
            if req.kind == NBD_CMD_WRITE {
                // Swallow the payload so the stream stays in sync.
                let mut payload = (&mut reader).take(u64::from(req.len));
                let n = tokio::io::copy(&mut payload, &mut tokio::io::sink()).await?;
                if n != u64::from(req.len) {
                    return Ok(End::Eof);
                }
            }
            if !matches!(
                req.kind,
                NBD_CMD_READ | NBD_CMD_WRITE | NBD_CMD_FLUSH | NBD_CMD_TRIM | NBD_CMD_WRITE_ZEROES
            ) {
                tracing::warn!(export, peer, kind = req.kind, "unknown NBD command");
            } else {
                tracing::debug!(export, peer, ?req, error, "invalid NBD request");
            }
            let _ = tx.send(reply(error, None, slot, None));
            continue;
        }

        let fua = req.flags & NBD_CMD_FLAG_FUA != 0;
        match req.kind {
            NBD_CMD_READ => {
                if req.len == 0 {
                    let _ = tx.send(reply(0, Some(Bytes::new()), slot, None));
                    continue;
                }
                let bytes = budget
                    .clone()
                    .acquire_many_owned(req.len)
                    .await
                    .map_err(|_| closed())?;
                let (tx, dev) = (tx.clone(), device.clone());
                spawn_io(io_span("nbd.read", export, &req), async move {
                    let (error, data) = match dev.read(req.offset, req.len).await {
                        Ok(d) if d.len() == req.len as usize => (0, Some(d)),
                        Ok(d) => {
                            tracing::warn!(
                                got = d.len(),
                                want = req.len,
                                "device returned a short read"
                            );
                            (NBD_EIO, None)
                        }
                        Err(e) => (device_error("read", &e), None),
                    };
                    let _ = tx.send(Reply {
                        cookie: req.cookie,
                        error,
                        data,
                        _slot: slot,
                        _bytes: Some(bytes),
                    });
                });
            }
            NBD_CMD_WRITE => {
                let len = req.len as usize;
                let bytes = budget
                    .clone()
                    .acquire_many_owned(req.len)
                    .await
                    .map_err(|_| closed())?;
                if len == 0 {
                    let _ = tx.send(reply(0, None, slot, None));
                    continue;
                }
                // Block-aligned, so the local replica writes it with
                // O_DIRECT as it is (no bounce copy).
                let mut buf = AlignedBuf::zeroed(len);
                match reader.read_exact(buf.as_mut_slice()).await {
                    Ok(_) => {}
                    // The client hung up mid-payload.
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(End::Eof),
                    Err(e) => return Err(e.into()),
                }
                let data = Bytes::from_owner(buf);
                let (tx, dev) = (tx.clone(), device.clone());
                spawn_io(io_span("nbd.write", export, &req), async move {
                    let error = match dev.write(req.offset, data, fua).await {
                        Ok(()) => 0,
                        Err(e) => device_error("write", &e),
                    };
                    let _ = tx.send(Reply {
                        cookie: req.cookie,
                        error,
                        data: None,
                        _slot: slot,
                        _bytes: Some(bytes),
                    });
                });
            }
            NBD_CMD_FLUSH => {
                let (tx, dev) = (tx.clone(), device.clone());
                spawn_io(io_span("nbd.flush", export, &req), async move {
                    let error = match dev.flush().await {
                        Ok(()) => 0,
                        Err(e) => device_error("flush", &e),
                    };
                    let _ = tx.send(Reply {
                        cookie: req.cookie,
                        error,
                        data: None,
                        _slot: slot,
                        _bytes: None,
                    });
                });
            }
            NBD_CMD_TRIM | NBD_CMD_WRITE_ZEROES => {
                if req.len == 0 {
                    let _ = tx.send(reply(0, None, slot, None));
                    continue;
                }
                let (tx, dev) = (tx.clone(), device.clone());
                let trim = req.kind == NBD_CMD_TRIM;
                let op = if trim { "nbd.trim" } else { "nbd.write_zeroes" };
                spawn_io(io_span(op, export, &req), async move {
                    let result = if trim {
                        // The device's trim has no FUA; a flush after it gives the guarantee.
                        match dev.trim(req.offset, req.len).await {
                            Ok(()) if fua => dev.flush().await,
                            r => r,
                        }
                    } else {
                        // NO_HOLE is accepted and left to the device (which may ignore it).
                        dev.write_zeroes(req.offset, req.len, fua).await
                    };
                    let error = match result {
                        Ok(()) => 0,
                        Err(e) => device_error(if trim { "trim" } else { "write_zeroes" }, &e),
                    };
                    let _ = tx.send(Reply {
                        cookie: req.cookie,
                        error,
                        data: None,
                        _slot: slot,
                        _bytes: None,
                    });
                });
            }
            _ => {
                // Unreachable: validate() rejects unknown commands.
                let _ = tx.send(reply(NBD_EINVAL, None, slot, None));
            }
        }
    }
}

/// Writes replies as they complete. Flushes whenever the queue is empty, so
/// a burst of completions goes out in few syscalls.
async fn write_replies<W: AsyncWrite + Unpin>(
    mut w: BufWriter<W>,
    mut rx: mpsc::UnboundedReceiver<Reply>,
) -> std::io::Result<()> {
    while let Some(reply) = rx.recv().await {
        write_reply(&mut w, reply).await?;
        while let Ok(reply) = rx.try_recv() {
            write_reply(&mut w, reply).await?;
        }
        w.flush().await?;
    }
    w.flush().await?;
    w.shutdown().await
}

async fn write_reply<W: AsyncWrite + Unpin>(
    w: &mut BufWriter<W>,
    reply: Reply,
) -> std::io::Result<()> {
    let hdr = encode_simple_reply(reply.error, reply.cookie);
    match &reply.data {
        Some(data) if reply.error == 0 && !data.is_empty() => {
            if data.len() <= INLINE_DATA_MAX {
                w.write_all(&hdr).await?;
                w.write_all(data).await
            } else {
                // Send what is buffered, then header and data in one vectored write.
                w.flush().await?;
                write_all_vectored(w.get_mut(), &hdr, data).await
            }
        }
        _ => w.write_all(&hdr).await,
    }
}

async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    a: &[u8],
    b: &[u8],
) -> std::io::Result<()> {
    let (mut i, mut j) = (0usize, 0usize);
    while i < a.len() || j < b.len() {
        let n = if i < a.len() {
            w.write_vectored(&[IoSlice::new(&a[i..]), IoSlice::new(&b[j..])])
                .await?
        } else {
            w.write(&b[j..]).await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let from_a = n.min(a.len() - i);
        i += from_a;
        j += n - from_a;
    }
    Ok(())
}
