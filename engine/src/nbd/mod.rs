//! The NBD frontend: fixed newstyle handshake, export name = volume name,
//! over TCP and unix sockets, many connections per export.
//!
//! * [`wire`]         — constants, option/request parsing, reply encoding.
//! * `handshake`      — option haggling (EXPORT_NAME, INFO, GO, LIST, ABORT).
//! * `transmission`   — the command loop: concurrent requests, one reply writer.
//! * [`client`]       — a pipelined NBD client (a remote export as a device;
//!   a migration target forwards through it).
//! * [`memory`]       — an in-memory [`ExportDevice`](crate::device::ExportDevice)
//!   for tests, examples and benchmarks.
//!
//! Only simple replies are offered (structured replies, block status and
//! extended headers are refused with `NBD_REP_ERR_UNSUP`); no TLS.

pub mod client;
mod handshake;
pub mod memory;
mod transmission;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, BufReader, BufWriter};
use tokio::net::{TcpListener, UnixListener};

use crate::device::ExportCatalog;

/// Read buffer per connection (request headers and write payloads).
const READ_BUFFER: usize = 128 * 1024;
/// Write buffer per connection (reply headers and small read payloads).
const WRITE_BUFFER: usize = 128 * 1024;
/// A client must reach transmission (or end the handshake) within this time;
/// otherwise idle sockets could pile up unchecked.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a connection ended abnormally.
#[derive(Debug, Error)]
pub(crate) enum NbdError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The client broke the protocol; its connection is dropped.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// NBD_OPT_EXPORT_NAME named an export we do not have.
    #[error("unknown export {0:?}")]
    UnknownExport(String),
}

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// Sorts an accept result: a connection, `None` for a transient error
/// (EMFILE, ECONNABORTED...: logged, retried after 50 ms), or the error
/// that ends the accept loop.
async fn accepted<T>(result: std::io::Result<T>) -> std::io::Result<Option<T>> {
    match result {
        Ok(conn) => Ok(Some(conn)),
        Err(e) if is_transient_accept_error(&e) => {
            tracing::warn!("nbd accept failed (retrying): {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Serves every export of `catalog` on a TCP listener until dropped.
pub async fn serve_tcp<C: ExportCatalog>(
    listener: TcpListener,
    catalog: Arc<C>,
) -> std::io::Result<()> {
    loop {
        let Some((stream, addr)) = accepted(listener.accept().await).await? else {
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(peer = %addr, "TCP_NODELAY failed: {e}");
        }
        let peer = format!(
            "tcp:{addr}#{}",
            NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed)
        );
        let (r, w) = stream.into_split();
        tokio::spawn(run_connection(
            r,
            w,
            peer,
            catalog.clone(),
            HANDSHAKE_TIMEOUT,
        ));
    }
}

/// Serves every export of `catalog` on a unix-socket listener until dropped.
pub async fn serve_unix<C: ExportCatalog>(
    listener: UnixListener,
    catalog: Arc<C>,
) -> std::io::Result<()> {
    loop {
        let Some((stream, _addr)) = accepted(listener.accept().await).await? else {
            continue;
        };
        let peer = format!("unix#{}", NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed));
        let (r, w) = stream.into_split();
        tokio::spawn(run_connection(
            r,
            w,
            peer,
            catalog.clone(),
            HANDSHAKE_TIMEOUT,
        ));
    }
}

/// Errors from `accept` that concern one connection or a passing resource
/// shortage, not the listener itself.
fn is_transient_accept_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) {
        return true;
    }
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EPROTO | libc::EPERM
        )
    )
}

/// One connection, from greeting to close. Never panics on client input;
/// whatever happens only ends this connection.
pub(crate) async fn run_connection<R, W, C>(
    r: R,
    w: W,
    peer: String,
    catalog: Arc<C>,
    handshake_timeout: Duration,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    C: ExportCatalog,
{
    tracing::debug!(peer, "nbd client connected");
    let mut reader = BufReader::with_capacity(READ_BUFFER, r);
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER, w);
    let handshake = handshake::negotiate(&mut reader, &mut writer, &*catalog, &peer);
    let Ok(negotiated) = tokio::time::timeout(handshake_timeout, handshake).await else {
        tracing::warn!(
            peer,
            "nbd handshake not finished within {handshake_timeout:?}; closing"
        );
        return;
    };
    let negotiated = match negotiated {
        Ok(Some(n)) => n,
        Ok(None) => {
            tracing::debug!(peer, "nbd client ended the handshake");
            return;
        }
        Err(NbdError::Protocol(msg)) => {
            tracing::warn!(peer, "nbd handshake: {msg}; closing");
            return;
        }
        Err(e) => {
            tracing::debug!(peer, "nbd handshake ended: {e}");
            return;
        }
    };
    let export = negotiated.name;
    tracing::debug!(peer, export, "nbd transmission started");
    match transmission::serve(reader, writer, negotiated.device, &export, &peer).await {
        Ok(end) => tracing::debug!(peer, export, ?end, "nbd client disconnected"),
        Err(NbdError::Protocol(msg)) => {
            tracing::warn!(peer, export, "nbd protocol violation: {msg}; closing");
        }
        Err(e) => tracing::debug!(peer, export, "nbd connection ended: {e}"),
    }
}

#[cfg(test)]
mod tests;
