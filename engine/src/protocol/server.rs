//! The replica server: accept loop, handshake, and per connection a reader
//! that runs requests concurrently (reads, writes and flushes as tasks on
//! the replica's io_uring path, the rest on the blocking pool) and sends
//! their responses, tagged with the request id, as they complete, through
//! the connection's [`super::outbox`].

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::replica::{
    Admission, Checksum, ErrorKind, Extent, LayerInfo, Replica, ReplicaError, ReplicaInfo,
    VerifyReport,
};

use super::frame::{
    FLAG_ERROR, FLAG_RESPONSE, FLAG_TRACE, FrameError, MAX_DATA_LEN, MAX_FRAME_PAYLOAD, OutFrame,
    read_header, read_payload, read_payload_aligned,
};
use super::handshake::{self, ServerHandshakeError};
use super::message::{Opcode, Request, Response, WRITE_FIXED_LEN};
use super::outbox::Outbox;
use super::served::ServedConnections;
use super::{ClusterToken, ReplicaSource, trace_context};

/// How long a peer has to complete the handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Memory one connection's requests in flight may hold (request payloads
/// and read buffers, each request counted at least [`MIN_REQUEST_COST`]);
/// past it the server stops reading from that connection (backpressure).
pub(crate) const IN_FLIGHT_BUDGET: usize = 64 << 20;
/// Budget unit.
const BUDGET_UNIT: usize = 4096;
/// Pings one connection may have answered-but-unsent. Pings bypass the
/// memory budget (see [`read_requests`]); this bounds a peer that sends
/// pings and never reads the answers.
const PINGS_IN_FLIGHT: usize = 16;
/// The least a request costs, so many tiny requests are bounded too
/// (at most 1024 in flight per connection).
const MIN_REQUEST_COST: usize = 64 * 1024;

fn budget_units(bytes: usize) -> u32 {
    // At most (MAX_FRAME_PAYLOAD + MIN_REQUEST_COST) / BUDGET_UNIT: fits.
    bytes.div_ceil(BUDGET_UNIT) as u32
}

type OpResult<T> = Result<T, ReplicaError>;

/// What the server needs from a replica; implemented by [`Replica`] and, in
/// tests, by an in-memory fake. Every method is blocking.
pub(crate) trait ReplicaOps: Send + Sync + 'static {
    /// Claims the replica for the engine of `epoch` ([`Replica::claim`]).
    fn claim(&self, epoch: u64) -> OpResult<()>;
    /// Admits one request of `epoch` ([`Replica::admit`]).
    fn admit(&self, epoch: u64) -> OpResult<Admission<'_>>;
    /// The highest epoch that claimed the replica.
    fn epoch(&self) -> u64;
    fn read(&self, offset: u64, buf: &mut [u8]) -> OpResult<()>;
    fn write(&self, offset: u64, data: &[u8]) -> OpResult<()>;
    fn trim(&self, offset: u64, len: u64) -> OpResult<()>;
    fn write_zeroes(&self, offset: u64, len: u64) -> OpResult<()>;
    fn flush(&self) -> OpResult<()>;
    fn bump_generation(&self) -> OpResult<u64>;
    fn snapshot(
        &self,
        name: &str,
        user_created: bool,
        labels: BTreeMap<String, String>,
    ) -> OpResult<LayerInfo>;
    fn remove_snapshot(&self, name: &str) -> OpResult<()>;
    fn revert(&self, name: &str) -> OpResult<()>;
    fn info(&self) -> ReplicaInfo;
    fn verify(&self) -> OpResult<VerifyReport>;
    fn layer_extents(&self, layer: &str) -> OpResult<Vec<Extent>>;
    fn read_layer(&self, layer: &str, offset: u64, buf: &mut [u8]) -> OpResult<()>;
    fn layer_checksum(&self, layer: &str) -> OpResult<Checksum>;
    fn stage_layer(&self, info: &LayerInfo) -> OpResult<()>;
    fn write_staged(&self, layer: &str, offset: u64, data: &[u8]) -> OpResult<()>;
    fn install_chain(&self, layers: &[LayerInfo]) -> OpResult<()>;
    fn set_revision(&self, revision: u64) -> OpResult<()>;
    /// Persists the in-sync generation ([`Replica::join_generation`]).
    fn join_generation(&self, generation: u64) -> OpResult<()>;
    /// The replica itself, when reads and writes can go through its
    /// asynchronous path ([`Replica::read_async`]); `None` runs them on the
    /// blocking pool like every other request.
    fn as_replica(self: Arc<Self>) -> Option<Arc<Replica>> {
        None
    }
}

impl ReplicaOps for Replica {
    fn as_replica(self: Arc<Self>) -> Option<Arc<Replica>> {
        Some(self)
    }
    fn claim(&self, epoch: u64) -> OpResult<()> {
        Replica::claim(self, epoch)
    }
    fn admit(&self, epoch: u64) -> OpResult<Admission<'_>> {
        Replica::admit(self, epoch)
    }
    fn epoch(&self) -> u64 {
        Replica::epoch(self)
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> OpResult<()> {
        Replica::read(self, offset, buf)
    }
    fn write(&self, offset: u64, data: &[u8]) -> OpResult<()> {
        Replica::write(self, offset, data)
    }
    fn trim(&self, offset: u64, len: u64) -> OpResult<()> {
        Replica::trim(self, offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> OpResult<()> {
        Replica::write_zeroes(self, offset, len)
    }
    fn flush(&self) -> OpResult<()> {
        Replica::flush(self)
    }
    fn bump_generation(&self) -> OpResult<u64> {
        Replica::bump_generation(self)
    }
    fn snapshot(
        &self,
        name: &str,
        user_created: bool,
        labels: BTreeMap<String, String>,
    ) -> OpResult<LayerInfo> {
        Replica::snapshot(self, name, user_created, labels)
    }
    fn remove_snapshot(&self, name: &str) -> OpResult<()> {
        Replica::remove_snapshot(self, name)
    }
    fn revert(&self, name: &str) -> OpResult<()> {
        Replica::revert(self, name)
    }
    fn info(&self) -> ReplicaInfo {
        Replica::info(self)
    }
    fn verify(&self) -> OpResult<VerifyReport> {
        Replica::verify(self)
    }
    fn layer_extents(&self, layer: &str) -> OpResult<Vec<Extent>> {
        Replica::layer_extents(self, layer)
    }
    fn read_layer(&self, layer: &str, offset: u64, buf: &mut [u8]) -> OpResult<()> {
        Replica::read_layer(self, layer, offset, buf)
    }
    fn layer_checksum(&self, layer: &str) -> OpResult<Checksum> {
        Replica::layer_checksum(self, layer)
    }
    fn stage_layer(&self, info: &LayerInfo) -> OpResult<()> {
        Replica::stage_layer(self, info)
    }
    fn write_staged(&self, layer: &str, offset: u64, data: &[u8]) -> OpResult<()> {
        Replica::write_staged(self, layer, offset, data)
    }
    fn install_chain(&self, layers: &[LayerInfo]) -> OpResult<()> {
        Replica::install_chain(self, layers)
    }
    fn set_revision(&self, revision: u64) -> OpResult<()> {
        Replica::set_revision(self, revision)
    }
    fn join_generation(&self, generation: u64) -> OpResult<()> {
        Replica::join_generation(self, generation)
    }
}

/// Where the server finds replicas, as [`ReplicaOps`].
pub(crate) trait OpsSource: Send + Sync + 'static {
    fn lookup(&self, name: &str) -> Option<Arc<dyn ReplicaOps>>;
}

/// Adapts the public [`ReplicaSource`] to [`OpsSource`].
pub(crate) struct SourceAdapter(pub Arc<dyn ReplicaSource>);

impl OpsSource for SourceAdapter {
    fn lookup(&self, name: &str) -> Option<Arc<dyn ReplicaOps>> {
        self.0.replica(name).map(|r| r as Arc<dyn ReplicaOps>)
    }
}

/// True for accept errors that mean the listener itself is unusable.
fn accept_error_is_fatal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EOPNOTSUPP)
    )
}

/// Accepts connections until dropped; dropping it closes every connection.
pub(crate) async fn serve_ops(
    listener: TcpListener,
    source: Arc<dyn OpsSource>,
    token: ClusterToken,
    handshake_timeout: Duration,
    served: ServedConnections,
) -> io::Result<()> {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    conns.spawn(connection(
                        stream,
                        peer,
                        source.clone(),
                        token.clone(),
                        handshake_timeout,
                        served.clone(),
                    ));
                }
                Err(e) if accept_error_is_fatal(&e) => {
                    tracing::error!(error = %e, "replica server: accept failed; stopping");
                    return Err(e);
                }
                Err(e) => {
                    // Out of descriptors, aborted connection...: back off.
                    tracing::warn!(error = %e, "replica server: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    source: Arc<dyn OpsSource>,
    token: ClusterToken,
    handshake_timeout: Duration,
    served: ServedConnections,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "replica server: set TCP_NODELAY failed");
    }
    let (rd, wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let mut wr = wr;

    let lookup = |name: &str| source.lookup(name);
    let hs = tokio::time::timeout(
        handshake_timeout,
        handshake::server(&mut rd, &mut wr, &token, lookup),
    )
    .await;
    let handshake::Authenticated {
        name,
        found: ops,
        version,
        epoch,
    } = match hs {
        Ok(Ok(authenticated)) => authenticated,
        Ok(Err(ServerHandshakeError::Frame(FrameError::Eof))) => {
            tracing::debug!(%peer, "replica server: peer closed before the handshake");
            return;
        }
        Ok(Err(e @ ServerHandshakeError::Refused { .. })) => {
            tracing::warn!(%peer, reason = %e, "replica server: refused peer");
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!(%peer, reason = %e, "replica server: handshake failed; closing connection");
            return;
        }
        Err(_) => {
            tracing::warn!(
                %peer,
                reason = "handshake timed out",
                timeout_ms = handshake_timeout.as_millis() as u64,
                "replica server: refused peer"
            );
            return;
        }
    };
    // The engine's claim: persisted before the connection is accepted, and
    // once it returns no request of an older engine is in flight here.
    let claimed = {
        let ops = ops.clone();
        tokio::task::spawn_blocking(move || ops.claim(epoch)).await
    };
    let refused = match claimed {
        Ok(Ok(())) => None,
        Ok(Err(e)) if e.kind() == ErrorKind::StaleEpoch => {
            Some((handshake::Status::StaleEpoch, e.to_string()))
        }
        Ok(Err(e)) => Some((handshake::Status::ClaimFailed, e.to_string())),
        Err(e) => Some((
            handshake::Status::ClaimFailed,
            format!("claim task failed: {e}"),
        )),
    };
    if let Some((status, message)) = refused {
        let e = handshake::refuse_claim(&mut wr, version, status, &message).await;
        tracing::warn!(%peer, replica = %name, epoch, reason = %e, "replica server: refused an engine's claim");
        return;
    }
    if let Err(e) = handshake::accept(&mut wr, version).await {
        tracing::debug!(%peer, replica = %name, error = %e, "replica server: peer gone before the handshake ended");
        return;
    }
    tracing::debug!(%peer, replica = %name, version, epoch, "replica server: connection open");
    let _listed = served.open(peer, &name);

    let (outbox, flusher) = Outbox::new(wr);
    let conn = Conn {
        peer,
        name: &name,
        version,
        epoch,
    };
    let reader = read_requests(&mut rd, conn, ops, source.as_ref(), outbox);
    let reason = tokio::select! {
        r = reader => r,
        e = flusher => format!("write failed: {e}"),
    };
    tracing::debug!(%peer, replica = %name, %reason, "replica server: connection closed");
}

/// One accepted connection: who, for which replica, in which version, for
/// the engine of which epoch.
#[derive(Clone, Copy)]
struct Conn<'a> {
    peer: SocketAddr,
    name: &'a str,
    version: u8,
    epoch: u64,
}

/// The span a request runs in: one for every request that carries a trace
/// context (its remote parent) and for every control operation; none for
/// untraced data operations, which stay span-free.
fn request_span(op: Opcode, replica: &str, ctx: Option<&str>) -> Option<tracing::Span> {
    if ctx.is_none() && !op.is_control() {
        return None;
    }
    let span = tracing::info_span!(
        "replica.request",
        otel.name = op.span_name(),
        otel.kind = "server",
        replica = %replica,
    );
    if let Some(ctx) = ctx {
        trace_context::attach(&span, ctx);
    }
    Some(span)
}

/// Reads requests until the connection ends or the peer violates the
/// protocol; returns why it stopped.
async fn read_requests<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut R,
    conn: Conn<'_>,
    ops: Arc<dyn ReplicaOps>,
    source: &dyn OpsSource,
    outbox: Outbox,
) -> String {
    let Conn {
        peer,
        name,
        version,
        epoch,
    } = conn;
    let budget = Arc::new(Semaphore::new(IN_FLIGHT_BUDGET / BUDGET_UNIT));
    // Requests dispatched and not answered yet.
    let answering = Arc::new(AtomicUsize::new(0));
    let pings = Arc::new(Semaphore::new(PINGS_IN_FLIGHT));
    let violation = |why: String| {
        tracing::warn!(%peer, replica = %name, reason = %why, "replica server: protocol violation; closing connection");
        format!("protocol violation: {why}")
    };
    loop {
        let h = match read_header(rd, MAX_FRAME_PAYLOAD).await {
            Ok(h) => h,
            Err(FrameError::Eof) => return "closed by peer".into(),
            Err(e) if e.is_violation() => return violation(e.to_string()),
            Err(e) => return format!("read failed: {e}"),
        };
        if h.version != version {
            return violation(format!(
                "frame version {} on a version {version} connection",
                h.version
            ));
        }
        // Requests carry no flag but, from version 2, the trace flag.
        let allowed = if version >= 2 { FLAG_TRACE } else { 0 };
        if h.flags & !allowed != 0 {
            return violation(format!("request with flags {:#06x}", h.flags));
        }
        // A ping is answered at once, never behind queued disk I/O: it
        // carries no payload and needs no budget, so a busy but healthy
        // replica whose budget is taken by writes still answers it within
        // the engine's ping deadline (a frozen one does not).
        if h.opcode == Opcode::Ping as u8 && h.len == 0 {
            if !still_served(source, name, &ops) {
                tracing::info!(%peer, replica = %name, "replica server: replica no longer served; closing connection");
                return "replica no longer served".into();
            }
            let Ok(permit) = pings.clone().acquire_owned().await else {
                return "semaphore closed".into();
            };
            // A fenced engine's pings are refused too, so it learns it lost
            // the volume while idle (a lock read, no disk involved).
            let claimed = ops.epoch();
            let resp = if claimed > epoch {
                let e = ReplicaError::StaleEpoch { epoch, claimed };
                Response::Error {
                    kind: e.kind(),
                    message: e.to_string(),
                }
            } else {
                Response::Done
            };
            if let Some(f) = response_frame(version, Opcode::Ping, h.id, &resp) {
                let alone = answering.load(Ordering::Relaxed) == 0;
                // Fails only if the connection is gone (the flusher ends it).
                let _ = outbox.send(f.with_permit(permit), alone);
            }
            continue;
        }
        // Reserve memory for the payload before reading it.
        let cost = MIN_REQUEST_COST + h.len as usize;
        let Ok(mut permit) = budget.clone().acquire_many_owned(budget_units(cost)).await else {
            return "semaphore closed".into();
        };
        // A write's data lands block-aligned (after its 8-byte offset), so
        // the replica writes it with O_DIRECT as it is. (A traced write's
        // context has a variable length: it takes the general path.)
        let read = if h.opcode == Opcode::Write as u8 && h.flags & FLAG_TRACE == 0 {
            read_payload_aligned(rd, h.len as usize, WRITE_FIXED_LEN).await
        } else {
            read_payload(rd, h.len as usize).await
        };
        let payload = match read {
            Ok(p) => p,
            Err(e) => return format!("read failed: {e}"),
        };
        let (req, ctx) = match Request::decode_traced(h.opcode, h.flags & FLAG_TRACE != 0, payload)
        {
            Ok(r) => r,
            Err(e) => return violation(e.to_string()),
        };
        // The connection is bound to the replica it authenticated for; if
        // the agent removed or replaced it, stop serving this connection.
        if !still_served(source, name, &ops) {
            tracing::info!(%peer, replica = %name, "replica server: replica no longer served; closing connection");
            return "replica no longer served".into();
        }
        // ... and for the data a read will return.
        if let Request::Read { len, .. } | Request::ReadLayer { len, .. } = req
            && len as usize <= MAX_DATA_LEN
        {
            match budget
                .clone()
                .acquire_many_owned(budget_units(len as usize))
                .await
            {
                Ok(more) => permit.merge(more),
                Err(_) => return "semaphore closed".into(),
            }
        }
        let op = req.opcode();
        let id = h.id;
        if req == Request::Ping {
            if let Some(f) = response_frame(version, op, id, &Response::Done) {
                let alone = answering.load(Ordering::Relaxed) == 0;
                let _ = outbox.send(f.with_permit(permit), alone);
            }
            continue;
        }
        let answer = Answer {
            outbox: outbox.clone(),
            answering: Arc::clone(&answering),
            version,
            op,
            id,
            permit,
        };
        answering.fetch_add(1, Ordering::Relaxed);
        let span = request_span(op, name, ctx.as_deref());
        if matches!(
            req,
            Request::Read { .. } | Request::Write { .. } | Request::Flush
        ) && let Some(replica) = ops.clone().as_replica()
        {
            let run = AssertUnwindSafe(execute_async(replica, epoch, req)).catch_unwind();
            let task = async move {
                let resp = run.await.unwrap_or_else(|_| Response::Error {
                    kind: ErrorKind::Io,
                    message: format!("internal error: replica panicked handling {op:?}"),
                });
                answer.send(&resp);
            };
            tokio::spawn(task.instrument(span.unwrap_or_else(tracing::Span::none)));
            continue;
        }
        let ops = ops.clone();
        tokio::task::spawn_blocking(move || {
            let _entered = span.as_ref().map(|s| s.enter());
            let resp = catch_unwind(AssertUnwindSafe(|| execute(ops.as_ref(), epoch, req)))
                .unwrap_or_else(|_| Response::Error {
                    kind: ErrorKind::Io,
                    message: format!("internal error: replica panicked handling {op:?}"),
                });
            answer.send(&resp);
        });
    }
}

/// What answering one request needs: where the response goes, and the
/// connection's count of requests being answered (a response that is the
/// last one due is written at once, see [`super::outbox`]).
struct Answer {
    outbox: Outbox,
    answering: Arc<AtomicUsize>,
    version: u8,
    op: Opcode,
    id: u64,
    /// The request's share of the connection's in-flight budget, returned
    /// once the response is written.
    permit: OwnedSemaphorePermit,
}

impl Answer {
    fn send(self, resp: &Response) {
        let alone = self.answering.fetch_sub(1, Ordering::Relaxed) == 1;
        if let Some(f) = response_frame(self.version, self.op, self.id, resp) {
            // Fails only if the connection is gone (the flusher ends it).
            let _ = self.outbox.send(f.with_permit(self.permit), alone);
        }
    }
}

/// Whether `name` is still served by the replica `ops` this connection
/// authenticated for (the agent may have removed or replaced it).
fn still_served(source: &dyn OpsSource, name: &str, ops: &Arc<dyn ReplicaOps>) -> bool {
    source
        .lookup(name)
        .is_some_and(|current| Arc::ptr_eq(&current, ops))
}

/// Encodes a response, replacing one that cannot be sent by an error.
fn response_frame(version: u8, op: Opcode, id: u64, resp: &Response) -> Option<OutFrame> {
    let encoded = resp
        .encode(op)
        .map_err(|e| e.to_string())
        .and_then(|(flags, payload)| {
            OutFrame::with_version(version, op as u8, flags, id, payload, Bytes::new())
                .map_err(|e| e.to_string())
        });
    match encoded {
        Ok(f) => Some(f),
        Err(why) => {
            tracing::warn!(?op, id, reason = %why, "replica server: cannot encode response");
            let err = Response::Error {
                kind: ErrorKind::Io,
                message: format!("cannot send response: {why}"),
            };
            let (flags, payload) = err.encode(op).ok()?;
            debug_assert_eq!(flags, FLAG_RESPONSE | FLAG_ERROR);
            OutFrame::with_version(version, op as u8, flags, id, payload, Bytes::new()).ok()
        }
    }
}

fn too_long(len: u32) -> ReplicaError {
    ReplicaError::InvalidArgument(format!(
        "read of {len} bytes exceeds the protocol maximum of {MAX_DATA_LEN}"
    ))
}

/// Runs a read, a write or a flush of the engine of `epoch` through the replica's
/// asynchronous path (io_uring on this worker, or its own blocking
/// fallback); the epoch is checked there.
async fn execute_async(replica: Arc<Replica>, epoch: u64, req: Request) -> Response {
    let result = match req {
        Request::Read { len, .. } if len as usize > MAX_DATA_LEN => Err(too_long(len)),
        Request::Read { offset, len } => replica
            .read_async(epoch, offset, len as usize)
            .await
            .map(Response::Data),
        Request::Write { offset, data } => replica
            .write_async(epoch, offset, data)
            .await
            .map(|()| Response::Done),
        Request::Flush => replica.flush_async(epoch).await.map(|()| Response::Done),
        other => Err(ReplicaError::InvalidArgument(format!(
            "{:?} is not a read or a write",
            other.opcode()
        ))),
    };
    result.unwrap_or_else(|e| Response::Error {
        kind: e.kind(),
        message: e.to_string(),
    })
}

/// Runs one request of the engine of `epoch` against a replica (blocking):
/// refused when a newer engine claimed the replica, and a claim waits for
/// it while it runs.
pub(crate) fn execute(ops: &dyn ReplicaOps, epoch: u64, req: Request) -> Response {
    let _admitted = match ops.admit(epoch) {
        Ok(a) => a,
        Err(e) => {
            return Response::Error {
                kind: e.kind(),
                message: e.to_string(),
            };
        }
    };
    let done = |r: OpResult<()>| r.map(|()| Response::Done);
    let result = match req {
        Request::Ping => Ok(Response::Done),
        Request::Read { offset, len } => {
            if len as usize > MAX_DATA_LEN {
                Err(too_long(len))
            } else {
                let mut buf = vec![0u8; len as usize];
                ops.read(offset, &mut buf)
                    .map(|()| Response::Data(Bytes::from(buf)))
            }
        }
        Request::Write { offset, data } => done(ops.write(offset, &data)),
        Request::Trim { offset, len } => done(ops.trim(offset, len)),
        Request::WriteZeroes { offset, len } => done(ops.write_zeroes(offset, len)),
        Request::Flush => done(ops.flush()),
        Request::Info => Ok(Response::Info(ops.info())),
        Request::BumpGeneration => ops.bump_generation().map(Response::Generation),
        Request::Snapshot {
            name,
            user_created,
            labels,
        } => ops
            .snapshot(&name, user_created, labels)
            .map(Response::Layer),
        Request::RemoveSnapshot { name } => done(ops.remove_snapshot(&name)),
        Request::Revert { name } => done(ops.revert(&name)),
        Request::Verify => ops.verify().map(Response::Verify),
        Request::LayerExtents { layer } => ops.layer_extents(&layer).map(Response::Extents),
        Request::ReadLayer { layer, offset, len } => {
            if len as usize > MAX_DATA_LEN {
                Err(too_long(len))
            } else {
                let mut buf = vec![0u8; len as usize];
                ops.read_layer(&layer, offset, &mut buf)
                    .map(|()| Response::Data(Bytes::from(buf)))
            }
        }
        Request::LayerChecksum { layer } => ops.layer_checksum(&layer).map(Response::Checksum),
        Request::StageLayer { info } => done(ops.stage_layer(&info)),
        Request::WriteStaged {
            layer,
            offset,
            data,
        } => done(ops.write_staged(&layer, offset, &data)),
        Request::InstallChain { layers } => done(ops.install_chain(&layers)),
        Request::SetRevision { revision } => done(ops.set_revision(revision)),
        Request::JoinGeneration { generation } => done(ops.join_generation(generation)),
    };
    result.unwrap_or_else(|e| Response::Error {
        kind: e.kind(),
        message: e.to_string(),
    })
}
