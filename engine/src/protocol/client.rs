//! The client side of one connection: requests written by their callers
//! (or batched by the connection's flusher, see [`super::outbox`]), and a
//! task reading responses and dispatching them by request id to waiting
//! callers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncRead, BufReader};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use tracing::Instrument;

use crate::address::ReplicaAddress;

use super::frame::{
    FLAG_TRACE, Frame, FrameError, MAX_FRAME_PAYLOAD, MIN_PROTOCOL_VERSION, OutFrame,
    PROTOCOL_VERSION, read_frame,
};
use super::handshake::{self, ClientHandshakeError, EPOCH_VERSION};
use super::message::{Request, Response, with_trace_context};
use super::outbox::Outbox;
use super::trace_context;
use super::{ClientError, ClusterToken};

type Reply = oneshot::Sender<Result<Frame, ClientError>>;

struct State {
    /// Requests sent and not yet answered, by id.
    pending: HashMap<u64, Reply>,
    /// Why the connection failed, once it has.
    reason: Option<String>,
}

/// State shared by the caller-facing handle and the connection task.
struct Shared {
    state: Mutex<State>,
    closed: AtomicBool,
    next_id: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; tolerate poisoning anyway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lost(&self) -> ClientError {
        let reason = self.lock().reason.clone();
        ClientError::ConnectionLost(reason.unwrap_or_else(|| "connection closed".into()))
    }

    /// Registers a request, unless the connection has failed already;
    /// says whether it is the only one in flight.
    fn register(&self, id: u64, reply: Reply) -> Result<bool, ClientError> {
        let mut st = self.lock();
        if let Some(r) = &st.reason {
            return Err(ClientError::ConnectionLost(r.clone()));
        }
        st.pending.insert(id, reply);
        Ok(st.pending.len() == 1)
    }

    fn take(&self, id: u64) -> Option<Reply> {
        self.lock().pending.remove(&id)
    }

    /// Marks the connection failed and fails every pending request.
    fn fail(&self, reason: String) {
        let (reason, drained) = {
            let mut st = self.lock();
            let reason = st.reason.get_or_insert(reason).clone();
            self.closed.store(true, Ordering::Release);
            (reason, std::mem::take(&mut st.pending))
        };
        for (_, reply) in drained {
            let _ = reply.send(Err(ClientError::ConnectionLost(reason.clone())));
        }
    }
}

/// Removes a request's entry if its caller gives up (drops the future).
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.take(self.id);
    }
}

/// One authenticated connection; dropping it closes the connection.
pub(crate) struct ClientInner {
    addr: String,
    /// The protocol version agreed in the handshake.
    version: u8,
    /// The epoch of the engine this connection serves (claimed in the
    /// handshake from version 3).
    epoch: u64,
    outbox: Outbox,
    shared: std::sync::Arc<Shared>,
    task: AbortHandle,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn handshake_error(addr: &str, e: ClientHandshakeError) -> ClientError {
    match e {
        ClientHandshakeError::Refused(message)
        | ClientHandshakeError::UnsupportedVersion(message) => ClientError::Refused {
            addr: addr.to_string(),
            message,
        },
        ClientHandshakeError::StaleEpoch(message) => ClientError::Remote {
            kind: crate::replica::ErrorKind::StaleEpoch,
            message,
        },
        ClientHandshakeError::Protocol(m) => ClientError::Protocol(m),
        ClientHandshakeError::Io(message) => ClientError::Connect {
            addr: addr.to_string(),
            message,
        },
    }
}

/// Connects with the newest protocol version the server speaks: this
/// build's, else (an older server refused it) [`EPOCH_VERSION`], else
/// [`MIN_PROTOCOL_VERSION`].
///
/// A version 3 server keeps no in-sync generation (joining one is skipped,
/// and it reports 0). A server older than that cannot be told the engine's
/// `epoch` and so cannot fence an older engine: that is logged as a
/// warning (a cluster mid-upgrade).
pub(crate) async fn connect_negotiated(
    addr: &ReplicaAddress,
    token: &ClusterToken,
    timeout: Duration,
    epoch: u64,
) -> Result<ClientInner, ClientError> {
    let newest = match connect_version(addr, token, timeout, PROTOCOL_VERSION, epoch).await {
        Err((_, true)) if PROTOCOL_VERSION > EPOCH_VERSION => {
            tracing::info!(%addr, epoch, "replica server speaks an older protocol; reconnecting with version {EPOCH_VERSION} (it keeps no in-sync generation)");
            connect_version(addr, token, timeout, EPOCH_VERSION, epoch).await
        }
        r => r,
    };
    match newest {
        Err((_, true)) if EPOCH_VERSION > MIN_PROTOCOL_VERSION => {
            tracing::warn!(%addr, epoch, "replica server speaks an older protocol without engine epochs; reconnecting with version {MIN_PROTOCOL_VERSION} (it cannot refuse an older engine)");
            connect(addr, token, timeout, MIN_PROTOCOL_VERSION, 0).await
        }
        r => r.map_err(|(e, _)| e),
    }
}

/// Connects, announcing protocol `version`, and authenticates, all within
/// `timeout`.
pub(crate) async fn connect(
    addr: &ReplicaAddress,
    token: &ClusterToken,
    timeout: Duration,
    version: u8,
    epoch: u64,
) -> Result<ClientInner, ClientError> {
    connect_version(addr, token, timeout, version, epoch)
        .await
        .map_err(|(e, _)| e)
}

/// [`connect`]; the error says whether the server refused the version.
async fn connect_version(
    addr: &ReplicaAddress,
    token: &ClusterToken,
    timeout: Duration,
    version: u8,
    epoch: u64,
) -> Result<ClientInner, (ClientError, bool)> {
    let shown = addr.to_string();
    let connect_err = |message: String| {
        (
            ClientError::Connect {
                addr: shown.clone(),
                message,
            },
            false,
        )
    };
    let attempt = async {
        let stream = TcpStream::connect(&addr.server)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        stream
            .set_nodelay(true)
            .map_err(|e| connect_err(format!("set TCP_NODELAY: {e}")))?;
        let (rd, wr) = stream.into_split();
        let mut rd = BufReader::with_capacity(64 * 1024, rd);
        let mut wr = wr;
        handshake::client(&mut rd, &mut wr, token, &addr.name, version, epoch)
            .await
            .map_err(|e| {
                let old = matches!(e, ClientHandshakeError::UnsupportedVersion(_));
                (handshake_error(&shown, e), old)
            })?;
        Ok::<_, (ClientError, bool)>((rd, wr))
    };
    let (mut rd, wr) = tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| connect_err(format!("timed out after {timeout:?}")))??;

    let shared = std::sync::Arc::new(Shared {
        state: Mutex::new(State {
            pending: HashMap::new(),
            reason: None,
        }),
        closed: AtomicBool::new(false),
        next_id: AtomicU64::new(1),
    });
    let (outbox, flusher) = Outbox::new(wr);
    let task_shared = shared.clone();
    let task_addr = shown.clone();
    let task = tokio::spawn(async move {
        let reason = tokio::select! {
            r = read_responses(&mut rd, &task_shared, &task_addr, version) => r,
            e = flusher => format!("write failed: {e}"),
        };
        tracing::debug!(addr = %task_addr, %reason, "replica client: connection closed");
        task_shared.fail(reason);
    });
    tracing::debug!(addr = %shown, "replica client: connection open");
    Ok(ClientInner {
        addr: shown,
        version,
        epoch,
        outbox,
        shared,
        task: task.abort_handle(),
    })
}

async fn read_responses<R: AsyncRead + Unpin>(
    rd: &mut R,
    shared: &Shared,
    addr: &str,
    version: u8,
) -> String {
    let violation = |why: String| {
        tracing::warn!(%addr, reason = %why, "replica client: protocol violation; closing connection");
        format!("protocol violation: {why}")
    };
    loop {
        let frame = match read_frame(rd, MAX_FRAME_PAYLOAD).await {
            Ok(f) => f,
            Err(FrameError::Eof) => return "closed by server".into(),
            Err(e) if e.is_violation() => return violation(e.to_string()),
            Err(e) => return format!("read failed: {e}"),
        };
        let h = frame.header;
        if h.version != version || !h.is_response() || h.flags & FLAG_TRACE != 0 {
            return violation(format!(
                "unexpected frame (version {}, opcode {:#04x}, flags {:#06x})",
                h.version, h.opcode, h.flags
            ));
        }
        match shared.take(h.id) {
            Some(reply) => {
                let _ = reply.send(Ok(frame));
            }
            None => {
                // The caller gave up on it (e.g. timed out): drop it.
                tracing::debug!(%addr, id = h.id, "replica client: response to an abandoned request");
            }
        }
    }
}

impl ClientInner {
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    #[cfg(test)]
    pub(crate) fn pending_count(&self) -> usize {
        self.shared.lock().pending.len()
    }

    /// The epoch of the engine this connection serves.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The protocol version this connection speaks.
    pub(crate) fn version(&self) -> u8 {
        self.version
    }

    /// Sends a request and waits for its response; an error response
    /// becomes [`ClientError::Remote`]. Called within a traced span (and
    /// with traces exported), the call gets a client span of its own whose
    /// context travels with the request.
    pub(crate) async fn call(&self, req: Request) -> Result<Response, ClientError> {
        if self.version >= 2 && trace_context::enabled() && !tracing::Span::current().is_none() {
            let op = req.opcode();
            let span = tracing::info_span!(
                "replica.client",
                otel.name = op.span_name(),
                otel.kind = "client",
                replica = %self.addr,
            );
            let ctx = span.in_scope(trace_context::inject);
            return self.send(req, ctx).instrument(span).await;
        }
        self.send(req, None).await
    }

    async fn send(&self, req: Request, ctx: Option<String>) -> Result<Response, ClientError> {
        let op = req.opcode();
        let (mut prefix, body) = req
            .encode()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut flags = 0;
        if let Some(ctx) = ctx {
            prefix = with_trace_context(&ctx, &prefix)
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            flags = FLAG_TRACE;
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = OutFrame::with_version(self.version, op as u8, flags, id, prefix, body)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let (reply_tx, reply_rx) = oneshot::channel();
        // Alone in flight: written now, there is nothing to batch it with.
        let alone = self.shared.register(id, reply_tx)?;
        let _guard = PendingGuard {
            shared: &self.shared,
            id,
        };
        if let Err(e) = self.outbox.send(frame, alone) {
            self.shared.fail(format!("write failed: {}", e.0));
            return Err(self.shared.lost());
        }
        let frame = match reply_rx.await {
            Ok(r) => r?,
            Err(_) => return Err(self.shared.lost()),
        };
        if frame.header.opcode != op as u8 {
            return Err(ClientError::Protocol(format!(
                "response to {op:?} request {id} has opcode {:#04x}",
                frame.header.opcode
            )));
        }
        match Response::decode(op, frame.header.flags, frame.payload) {
            Ok(Response::Error { kind, message }) => Err(ClientError::Remote { kind, message }),
            Ok(r) => Ok(r),
            Err(e) => {
                tracing::warn!(addr = %self.addr, reason = %e, "replica client: malformed response");
                Err(ClientError::Protocol(e.to_string()))
            }
        }
    }
}
