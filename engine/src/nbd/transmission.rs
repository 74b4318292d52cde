//! The transmission phase, in one task per connection: this task reads
//! requests, runs each as a future in a `FuturesUnordered` it polls itself,
//! and writes the replies in completion order (so out of order) with
//! vectored writes — no task, channel or writer task per request, so a
//! request crosses no thread hand-off in this layer.
//!
//! Back-pressure: at most [`MAX_IN_FLIGHT`] requests (running, or answered
//! but not yet written) and [`MAX_BYTES_IN_FLIGHT`] payload bytes (write
//! payloads being written, read data waiting to be sent) per connection;
//! past either, no further request is read until replies go out.
//!
//! A request the device has started is always driven to completion, also
//! when the connection ends (a client gone, a protocol violation): a device
//! write dropped half-way could leave replicas that disagree.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tracing::Instrument;

use super::NbdError;
use super::wire::*;
use crate::device::{DeviceError, ExportDevice};
use crate::protocol::trace_context;

/// Requests in flight per connection.
pub const MAX_IN_FLIGHT: usize = 64;
/// Payload bytes in flight per connection (must be ≥ [`MAX_BLOCK_SIZE`]).
pub const MAX_BYTES_IN_FLIGHT: usize = 64 * 1024 * 1024;
/// Read payloads up to this size are copied next to their header (batched
/// with other replies); larger ones go out as their own slice.
const INLINE_DATA_MAX: usize = 16 * 1024;
/// Slices per vectored write.
const MAX_SLICES: usize = 64;
/// How much the input buffer asks of one read when no payload is due.
const READ_CHUNK: usize = 256 * 1024;

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

/// A finished request: what its reply says, and the payload budget it
/// held while running.
struct Done {
    cookie: u64,
    error: u32,
    data: Option<Bytes>,
    budget: usize,
}

/// A request ready to run on the device.
struct Work {
    req: Request,
    payload: Bytes,
    span: Option<tracing::Span>,
}

/// What reading the input gave next.
enum Step {
    /// Run it on the device.
    Run(Work),
    /// Answer at once (an invalid request).
    Answer(Done),
    /// The client asked to disconnect.
    Disconnect,
}

fn device_error(op: &'static str, e: &DeviceError) -> u32 {
    tracing::debug!(op, error = %e, "device request failed");
    nbd_error_from_errno(e.errno())
}

/// The span of a request picked by I/O sampling (`nbd.<op>` with volume,
/// op, offset and length); `None` for the others, which then cost one
/// branch (a sampling rate of 0).
fn io_span(export: &str, req: &Request) -> Option<tracing::Span> {
    if !trace_context::sample_io() {
        return None;
    }
    let op = match req.kind {
        NBD_CMD_READ => "nbd.read",
        NBD_CMD_WRITE => "nbd.write",
        NBD_CMD_FLUSH => "nbd.flush",
        NBD_CMD_TRIM => "nbd.trim",
        _ => "nbd.write_zeroes",
    };
    Some(tracing::info_span!(
        "nbd.request",
        otel.name = op,
        volume = %export,
        op,
        offset = req.offset,
        len = req.len,
    ))
}

/// Payload bytes a request holds while it runs.
fn budget_of(req: &Request) -> usize {
    match req.kind {
        NBD_CMD_READ | NBD_CMD_WRITE => req.len as usize,
        _ => 0,
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
    mut reader: BufReader<R>,
    mut writer: BufWriter<W>,
    device: Arc<D>,
    export: &str,
    peer: &str,
) -> Result<End, NbdError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
    D: ExportDevice,
{
    // The handshake's last reply, then the socket itself: replies go out
    // as vectored writes of their own.
    writer.flush().await?;
    let mut socket = writer.into_inner();
    let mut input = Input::new(device.size(), export, peer);
    let mut out = Output::default();
    let mut running = FuturesUnordered::new();
    // the client may still send (no EOF yet)
    let mut open = true;
    let mut end = None;
    let result = loop {
        // Take every complete request the input holds, as far as the
        // limits allow.
        let mut starved = false;
        while end.is_none() && out.outstanding < MAX_IN_FLIGHT {
            match input.next(out.budget_used())? {
                None => {
                    starved = true;
                    break;
                }
                Some(Step::Run(w)) => {
                    out.outstanding += 1;
                    out.running_budget += budget_of(&w.req);
                    let span = w.span.clone().unwrap_or_else(tracing::Span::none);
                    running.push(execute(Arc::clone(&device), w).instrument(span));
                }
                Some(Step::Answer(done)) => {
                    out.outstanding += 1;
                    out.queue(done);
                }
                Some(Step::Disconnect) => {
                    tracing::debug!(export, peer, "NBD_CMD_DISC");
                    end = Some(End::Disconnect);
                }
            }
        }
        if end.is_none() && !open && starved {
            // EOF, and nothing complete is left in the input
            end = Some(End::Eof);
        }
        if let Some(e) = end
            && running.is_empty()
            && out.is_empty()
        {
            break Ok(e);
        }
        let want_input = open
            && end.is_none()
            && out.outstanding < MAX_IN_FLIGHT
            && input.wants_more(out.budget_used());
        tokio::select! {
            biased;
            written = out.write_some(&mut socket), if !out.is_empty() => {
                if let Err(e) = written {
                    tracing::debug!(export, peer, "writing replies failed: {e}");
                    break Ok(End::WriterClosed);
                }
            }
            Some(done) = running.next(), if !running.is_empty() => {
                out.running_budget -= done.budget;
                out.queue(done);
            }
            read = input.fill(&mut reader), if want_input => match read {
                Ok(0) => open = false,
                Ok(_) => {}
                Err(e) => break Err(e.into()),
            },
        }
    };
    // Whatever ended the connection, requests the device started finish
    // (their replies go nowhere).
    while running.next().await.is_some() {}
    if matches!(result, Ok(End::Disconnect | End::Eof)) {
        let _ = socket.flush().await;
        let _ = socket.shutdown().await;
    }
    result
}

/// Runs one request on the device.
async fn execute<D: ExportDevice>(dev: Arc<D>, w: Work) -> Done {
    let req = w.req;
    let fua = req.flags & NBD_CMD_FLAG_FUA != 0;
    let budget = budget_of(&req);
    let (error, data) = match req.kind {
        NBD_CMD_READ => match dev.read(req.offset, req.len).await {
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
        },
        NBD_CMD_WRITE => match dev.write(req.offset, w.payload, fua).await {
            Ok(()) => (0, None),
            Err(e) => (device_error("write", &e), None),
        },
        NBD_CMD_FLUSH => match dev.flush().await {
            Ok(()) => (0, None),
            Err(e) => (device_error("flush", &e), None),
        },
        NBD_CMD_TRIM => {
            // The device's trim has no FUA; a flush after it gives the guarantee.
            let r = match dev.trim(req.offset, req.len).await {
                Ok(()) if fua => dev.flush().await,
                r => r,
            };
            match r {
                Ok(()) => (0, None),
                Err(e) => (device_error("trim", &e), None),
            }
        }
        // NO_HOLE is accepted and left to the device (which may ignore it).
        _ => match dev.write_zeroes(req.offset, req.len, fua).await {
            Ok(()) => (0, None),
            Err(e) => (device_error("write_zeroes", &e), None),
        },
    };
    Done {
        cookie: req.cookie,
        error,
        data,
        budget,
    }
}

/// The request stream: bytes read from the client, parsed into requests.
struct Input<'a> {
    buf: BytesMut,
    /// A request whose header was read, waiting for its payload or for
    /// room under the limits.
    pending: Option<Request>,
    size: u64,
    export: &'a str,
    peer: &'a str,
}

impl<'a> Input<'a> {
    fn new(size: u64, export: &'a str, peer: &'a str) -> Self {
        Input {
            buf: BytesMut::with_capacity(READ_CHUNK),
            pending: None,
            size,
            export,
            peer,
        }
    }

    /// Whether a read now could let a request through: not while a pending
    /// request waits for payload budget (reading more would only pile up
    /// bytes), yes while it waits for its payload.
    fn wants_more(&self, used: usize) -> bool {
        match &self.pending {
            None => true,
            Some(req) if req.kind == NBD_CMD_WRITE => {
                let valid = validate(req, self.size).is_ok();
                self.buf.len() < req.len as usize && (!valid || fits(used, req.len as usize))
            }
            Some(_) => false,
        }
    }

    /// Reads what the socket has (cancel-safe: `read_buf` loses nothing).
    async fn fill<R: AsyncRead + Unpin>(&mut self, r: &mut BufReader<R>) -> std::io::Result<usize> {
        // a payload due is read whole into one buffer (it goes to the
        // device as a slice of it); otherwise a chunk of requests at a time
        let want = match &self.pending {
            Some(req) if req.kind == NBD_CMD_WRITE => {
                (req.len as usize).saturating_sub(self.buf.len())
            }
            _ => READ_CHUNK,
        };
        self.buf.reserve(want);
        r.read_buf(&mut self.buf).await
    }

    /// The next request the buffered bytes hold, if it fits under the
    /// payload budget (`used` bytes are held now).
    fn next(&mut self, used: usize) -> Result<Option<Step>, NbdError> {
        let req = match self.pending.take() {
            Some(req) => req,
            None => {
                if self.buf.len() < REQUEST_LEN {
                    return Ok(None);
                }
                let mut hdr = [0u8; REQUEST_LEN];
                hdr.copy_from_slice(&self.buf[..REQUEST_LEN]);
                self.buf.advance(REQUEST_LEN);
                let req =
                    parse_request(&hdr).map_err(|e| NbdError::Protocol(format!("request: {e}")))?;
                if req.kind == NBD_CMD_DISC {
                    return Ok(Some(Step::Disconnect));
                }
                if req.kind == NBD_CMD_WRITE && req.len > MAX_BLOCK_SIZE {
                    // The payload would have to be swallowed to stay in
                    // sync; the spec lets us hard-disconnect instead.
                    return Err(NbdError::Protocol(format!(
                        "NBD_CMD_WRITE of {} bytes exceeds the {MAX_BLOCK_SIZE}-byte maximum",
                        req.len
                    )));
                }
                req
            }
        };
        let valid = validate(&req, self.size);
        let payload = if req.kind == NBD_CMD_WRITE {
            let len = req.len as usize;
            if valid.is_ok() && !fits(used, len) {
                self.pending = Some(req);
                return Ok(None);
            }
            if self.buf.len() < len {
                self.pending = Some(req);
                return Ok(None);
            }
            self.buf.split_to(len).freeze()
        } else {
            if req.kind == NBD_CMD_READ && valid.is_ok() && !fits(used, req.len as usize) {
                self.pending = Some(req);
                return Ok(None);
            }
            Bytes::new()
        };
        let answer = |error: u32, data: Option<Bytes>| {
            Ok(Some(Step::Answer(Done {
                cookie: req.cookie,
                error,
                data,
                budget: 0,
            })))
        };
        if let Err(error) = valid {
            if !matches!(
                req.kind,
                NBD_CMD_READ | NBD_CMD_WRITE | NBD_CMD_FLUSH | NBD_CMD_TRIM | NBD_CMD_WRITE_ZEROES
            ) {
                tracing::warn!(
                    export = self.export,
                    peer = self.peer,
                    kind = req.kind,
                    "unknown NBD command"
                );
            } else {
                tracing::debug!(
                    export = self.export,
                    peer = self.peer,
                    ?req,
                    error,
                    "invalid NBD request"
                );
            }
            return answer(error, None);
        }
        // Zero-length requests touch nothing.
        if req.len == 0 && req.kind != NBD_CMD_FLUSH {
            let data = (req.kind == NBD_CMD_READ).then(Bytes::new);
            return answer(0, data);
        }
        let span = io_span(self.export, &req);
        Ok(Some(Step::Run(Work { req, payload, span })))
    }
}

/// Whether `len` more payload bytes fit when `used` are held (one request
/// always fits when nothing is held: `len` ≤ [`MAX_BLOCK_SIZE`]).
fn fits(used: usize, len: usize) -> bool {
    used == 0 || used + len <= MAX_BYTES_IN_FLIGHT
}

/// Replies waiting to be written, as slices: headers and small payloads
/// are copied together into `staging`, large payloads stay the `Bytes`
/// the device returned.
#[derive(Default)]
struct Output {
    chunks: VecDeque<Chunk>,
    staging: BytesMut,
    /// Replies and budget that `staging` ends.
    staging_replies: usize,
    staging_budget: usize,
    /// Bytes of the front chunk already written.
    written: usize,
    /// Requests accepted and not yet answered on the wire.
    outstanding: usize,
    /// Payload bytes held by running requests.
    running_budget: usize,
    /// Payload bytes held by replies waiting to be written.
    queued_budget: usize,
}

struct Chunk {
    bytes: Bytes,
    /// Replies complete once this chunk is written.
    replies: usize,
    /// Budget released once this chunk is written.
    budget: usize,
}

impl Output {
    fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.staging.is_empty()
    }

    fn budget_used(&self) -> usize {
        self.running_budget + self.queued_budget
    }

    fn queue(&mut self, done: Done) {
        let hdr = encode_simple_reply(done.error, done.cookie);
        self.staging.extend_from_slice(&hdr);
        self.staging_replies += 1;
        let data = match done.data {
            Some(d) if done.error == 0 && !d.is_empty() => d,
            _ => return,
        };
        self.queued_budget += data.len();
        if data.len() <= INLINE_DATA_MAX {
            self.staging.extend_from_slice(&data);
            self.staging_budget += data.len();
        } else {
            // The header goes out with what is staged, the data as the
            // device returned it; the reply is complete with its data.
            self.staging_replies -= 1;
            self.seal();
            let budget = data.len();
            self.chunks.push_back(Chunk {
                bytes: data,
                replies: 1,
                budget,
            });
        }
    }

    /// Turns what is staged into a chunk.
    fn seal(&mut self) {
        if self.staging.is_empty() {
            return;
        }
        self.chunks.push_back(Chunk {
            bytes: self.staging.split().freeze(),
            replies: self.staging_replies,
            budget: self.staging_budget,
        });
        self.staging_replies = 0;
        self.staging_budget = 0;
    }

    /// One vectored write of what is queued (cancel-safe: progress is
    /// recorded only after the write returns).
    async fn write_some<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.seal();
        let n = {
            let mut slices = Vec::with_capacity(self.chunks.len().min(MAX_SLICES));
            for (i, c) in self.chunks.iter().take(MAX_SLICES).enumerate() {
                let from = if i == 0 { self.written } else { 0 };
                slices.push(IoSlice::new(&c.bytes[from..]));
            }
            w.write_vectored(&slices).await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let mut left = n;
        while left > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let rest = front.bytes.len() - self.written;
            if left < rest {
                self.written += left;
                break;
            }
            left -= rest;
            self.written = 0;
            if let Some(done) = self.chunks.pop_front() {
                self.outstanding -= done.replies;
                self.queued_budget -= done.budget;
            }
        }
        if self.is_empty() {
            w.flush().await?;
        }
        Ok(())
    }
}
