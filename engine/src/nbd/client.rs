//! A pipelined NBD client over TCP: fixed newstyle, `NBD_OPT_GO`, simple
//! replies. It is an [`ExportDevice`], so a frontend can serve a remote
//! export as if it were local — which is how a live migration's target
//! forwards every request to the source's engine until the switch.
//!
//! Many requests are in flight at once: a writer lock sends each request
//! whole, one reader task matches replies to requests by cookie. When the
//! connection breaks, every waiting request fails and later ones fail at
//! once ([`DeviceError::Io`] naming the cause); the client never reconnects
//! (the owner decides what a broken forward means).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;

use super::wire::*;
use crate::device::{DeviceError, ExportDevice};

/// Why connecting failed.
#[derive(Debug, Error)]
pub enum ConnectError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("NBD handshake with {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("NBD handshake with {addr}: {message}")]
    Protocol { addr: String, message: String },
    #[error("NBD handshake with {addr} timed out after {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
}

type Pending = HashMap<u64, (u16, u32, oneshot::Sender<Result<Bytes, u32>>)>;

/// A connected client; cheap to share (`Arc`).
pub struct NbdClient {
    addr: String,
    export: String,
    size: u64,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Arc<Mutex<Pending>>,
    /// Why the connection ended, once it has.
    broken: Arc<Mutex<Option<String>>>,
    next_cookie: AtomicU64,
    request_timeout: Duration,
    reader: tokio::task::JoinHandle<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl NbdClient {
    /// Connects to `addr` (`host:port`) and opens `export` with NBD_OPT_GO.
    /// Each later request fails after `request_timeout`.
    pub async fn connect(
        addr: &str,
        export: &str,
        timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Arc<NbdClient>, ConnectError> {
        match tokio::time::timeout(timeout, Self::connect_inner(addr, export, request_timeout))
            .await
        {
            Ok(r) => r,
            Err(_) => Err(ConnectError::Timeout {
                addr: addr.to_string(),
                timeout,
            }),
        }
    }

    async fn connect_inner(
        addr: &str,
        export: &str,
        request_timeout: Duration,
    ) -> Result<Arc<NbdClient>, ConnectError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ConnectError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::with_capacity(256 * 1024, r);
        let size = handshake(&mut r, &mut w, export)
            .await
            .map_err(|e| match e {
                HandshakeError::Io(source) => ConnectError::Io {
                    addr: addr.to_string(),
                    source,
                },
                HandshakeError::Protocol(message) => ConnectError::Protocol {
                    addr: addr.to_string(),
                    message,
                },
            })?;
        let pending: Arc<Mutex<Pending>> = Arc::default();
        let broken: Arc<Mutex<Option<String>>> = Arc::default();
        let reader = tokio::spawn(read_replies(r, Arc::clone(&pending), Arc::clone(&broken)));
        Ok(Arc::new(NbdClient {
            addr: addr.to_string(),
            export: export.to_string(),
            size,
            writer: tokio::sync::Mutex::new(w),
            pending,
            broken,
            next_cookie: AtomicU64::new(1),
            request_timeout,
            reader,
        }))
    }

    /// `host:port/export`, for messages.
    pub fn target(&self) -> String {
        format!("{}/{}", self.addr, self.export)
    }

    /// Why the connection ended, if it has.
    pub fn broken(&self) -> Option<String> {
        lock(&self.broken).clone()
    }

    /// Sends one request and waits for its reply.
    async fn call(
        &self,
        kind: u16,
        flags: u16,
        offset: u64,
        len: u32,
        payload: Option<Bytes>,
    ) -> Result<Bytes, DeviceError> {
        if let Some(why) = self.broken() {
            return Err(self.io_error(&why));
        }
        let cookie = self.next_cookie.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(cookie, (kind, len, tx));
        let header = encode_request(&Request {
            flags,
            kind,
            cookie,
            offset,
            len,
        });
        let sent = {
            let mut w = self.writer.lock().await;
            let r = w.write_all(&header).await;
            match (r, &payload) {
                (Ok(()), Some(p)) => w.write_all(p).await,
                (r, _) => r,
            }
        };
        if let Err(e) = sent {
            lock(&self.pending).remove(&cookie);
            let why = format!("send: {e}");
            lock(&self.broken).get_or_insert(why.clone());
            return Err(self.io_error(&why));
        }
        match tokio::time::timeout(self.request_timeout, rx).await {
            Ok(Ok(Ok(data))) => Ok(data),
            Ok(Ok(Err(errno))) => Err(device_error_of(errno, &self.target())),
            Ok(Err(_)) => {
                let why = self.broken().unwrap_or_else(|| "connection closed".into());
                Err(self.io_error(&why))
            }
            Err(_) => {
                lock(&self.pending).remove(&cookie);
                Err(self.io_error(&format!("no reply within {:?}", self.request_timeout)))
            }
        }
    }

    fn io_error(&self, why: &str) -> DeviceError {
        DeviceError::Io(format!("forward to nbd://{}: {why}", self.target()))
    }

    /// Says goodbye (NBD_CMD_DISC) and stops reading; waiting requests fail.
    pub async fn close(&self) {
        let header = encode_request(&Request {
            flags: 0,
            kind: NBD_CMD_DISC,
            cookie: 0,
            offset: 0,
            len: 0,
        });
        {
            let mut w = self.writer.lock().await;
            let _ = w.write_all(&header).await;
            let _ = w.shutdown().await;
        }
        lock(&self.broken).get_or_insert_with(|| "closed".into());
        self.reader.abort();
        fail_all(&self.pending);
    }
}

impl Drop for NbdClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn device_error_of(errno: u32, target: &str) -> DeviceError {
    let what = format!("nbd://{target} answered error {errno}");
    match errno {
        NBD_EINVAL | NBD_EOVERFLOW => DeviceError::InvalidArgument(what),
        NBD_ENOSPC => DeviceError::NoSpace(what),
        NBD_EPERM => DeviceError::NotPermitted(what),
        _ => DeviceError::Io(what),
    }
}

fn fail_all(pending: &Mutex<Pending>) {
    // Dropping the senders wakes every waiter with "connection closed".
    lock(pending).clear();
}

/// Reads replies until the connection ends, completing requests by cookie.
async fn read_replies(
    mut r: BufReader<OwnedReadHalf>,
    pending: Arc<Mutex<Pending>>,
    broken: Arc<Mutex<Option<String>>>,
) {
    let why = loop {
        let mut h = [0u8; SIMPLE_REPLY_LEN];
        if let Err(e) = r.read_exact(&mut h).await {
            break format!("read reply: {e}");
        }
        let magic = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        if magic != NBD_SIMPLE_REPLY_MAGIC {
            break format!("bad reply magic {magic:#x}");
        }
        let error = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let mut c = [0u8; 8];
        c.copy_from_slice(&h[8..16]);
        let cookie = u64::from_be_bytes(c);
        let Some((kind, len, tx)) = lock(&pending).remove(&cookie) else {
            // A reply to a request that timed out: its data (if a read)
            // cannot be skipped without knowing its length, so the stream
            // is lost.
            break format!("reply to unknown request {cookie}");
        };
        if error != 0 {
            let _ = tx.send(Err(error));
            continue;
        }
        let data = if kind == NBD_CMD_READ {
            let mut buf = BytesMut::zeroed(len as usize);
            if let Err(e) = r.read_exact(&mut buf).await {
                break format!("read reply data: {e}");
            }
            buf.freeze()
        } else {
            Bytes::new()
        };
        let _ = tx.send(Ok(data));
    };
    tracing::debug!(error = %why, "nbd client connection ended");
    lock(&broken).get_or_insert(why);
    fail_all(&pending);
}

enum HandshakeError {
    Io(std::io::Error),
    Protocol(String),
}

impl From<std::io::Error> for HandshakeError {
    fn from(e: std::io::Error) -> Self {
        HandshakeError::Io(e)
    }
}

/// Client side of the fixed newstyle handshake with NBD_OPT_GO; returns
/// the export size.
async fn handshake(
    r: &mut BufReader<OwnedReadHalf>,
    w: &mut OwnedWriteHalf,
    export: &str,
) -> Result<u64, HandshakeError> {
    let magic = r.read_u64().await?;
    let opt = r.read_u64().await?;
    if magic != NBDMAGIC || opt != IHAVEOPT {
        return Err(HandshakeError::Protocol("not a newstyle NBD server".into()));
    }
    let server_flags = r.read_u16().await?;
    if server_flags & NBD_FLAG_FIXED_NEWSTYLE == 0 {
        return Err(HandshakeError::Protocol(
            "server does not speak fixed newstyle".into(),
        ));
    }
    let mut client_flags = NBD_FLAG_C_FIXED_NEWSTYLE;
    if server_flags & NBD_FLAG_NO_ZEROES != 0 {
        client_flags |= NBD_FLAG_C_NO_ZEROES;
    }
    let name = export.as_bytes();
    let name_len = u32::try_from(name.len())
        .ok()
        .filter(|l| (*l as usize) <= MAX_STRING_LEN)
        .ok_or_else(|| HandshakeError::Protocol("export name too long".into()))?;
    let mut out = Vec::with_capacity(32 + name.len());
    out.extend_from_slice(&client_flags.to_be_bytes());
    out.extend_from_slice(&IHAVEOPT.to_be_bytes());
    out.extend_from_slice(&NBD_OPT_GO.to_be_bytes());
    out.extend_from_slice(&(name_len + 6).to_be_bytes());
    out.extend_from_slice(&name_len.to_be_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(&0u16.to_be_bytes());
    w.write_all(&out).await?;
    let mut size = None;
    loop {
        let magic = r.read_u64().await?;
        let _option = r.read_u32().await?;
        let reply = r.read_u32().await?;
        let len = r.read_u32().await?;
        if magic != OPTION_REPLY_MAGIC {
            return Err(HandshakeError::Protocol(format!(
                "bad option reply magic {magic:#x}"
            )));
        }
        if len > MAX_OPTION_LEN {
            return Err(HandshakeError::Protocol(format!(
                "option reply of {len} bytes"
            )));
        }
        let mut data = vec![0u8; len as usize];
        r.read_exact(&mut data).await?;
        match reply {
            NBD_REP_ACK => break,
            NBD_REP_INFO => {
                if data.len() >= 12 && u16::from_be_bytes([data[0], data[1]]) == NBD_INFO_EXPORT {
                    let mut s = [0u8; 8];
                    s.copy_from_slice(&data[2..10]);
                    size = Some(u64::from_be_bytes(s));
                }
            }
            e if e & NBD_REP_ERR != 0 => {
                return Err(HandshakeError::Protocol(format!(
                    "export {export:?} refused (error {e:#x}): {}",
                    String::from_utf8_lossy(&data)
                )));
            }
            other => {
                return Err(HandshakeError::Protocol(format!(
                    "unexpected option reply {other:#x}"
                )));
            }
        }
    }
    size.ok_or_else(|| HandshakeError::Protocol("server sent no export size".into()))
}

impl ExportDevice for NbdClient {
    fn size(&self) -> u64 {
        self.size
    }

    async fn read(&self, offset: u64, len: u32) -> Result<Bytes, DeviceError> {
        self.call(NBD_CMD_READ, 0, offset, len, None).await
    }

    async fn write(&self, offset: u64, data: Bytes, fua: bool) -> Result<(), DeviceError> {
        let len = u32::try_from(data.len())
            .map_err(|_| DeviceError::InvalidArgument("write larger than 4 GiB".into()))?;
        let flags = if fua { NBD_CMD_FLAG_FUA } else { 0 };
        self.call(NBD_CMD_WRITE, flags, offset, len, Some(data))
            .await
            .map(|_| ())
    }

    async fn flush(&self) -> Result<(), DeviceError> {
        self.call(NBD_CMD_FLUSH, 0, 0, 0, None).await.map(|_| ())
    }

    async fn trim(&self, offset: u64, len: u32) -> Result<(), DeviceError> {
        self.call(NBD_CMD_TRIM, 0, offset, len, None)
            .await
            .map(|_| ())
    }

    async fn write_zeroes(&self, offset: u64, len: u32, fua: bool) -> Result<(), DeviceError> {
        let flags = if fua { NBD_CMD_FLAG_FUA } else { 0 };
        self.call(NBD_CMD_WRITE_ZEROES, flags, offset, len, None)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handover::{HandoverDevice, HandoverState};
    use crate::nbd::memory::{MemoryCatalog, MemoryDevice};

    async fn server(dev: Arc<MemoryDevice>) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let catalog = Arc::new(MemoryCatalog::new().with("vol", dev));
        let task = tokio::spawn(async move {
            let _ = crate::nbd::serve_tcp(listener, catalog).await;
        });
        (addr, task)
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn reads_writes_and_flushes_through_a_real_server() {
        let dev = Arc::new(MemoryDevice::new(1 << 20));
        let (addr, task) = server(Arc::clone(&dev)).await;
        let c = NbdClient::connect(&addr, "vol", T, T).await.unwrap();
        assert_eq!(c.size(), 1 << 20);
        // many requests in flight at once, answered out of order
        let mut writes = Vec::new();
        for i in 0..32u8 {
            let c = Arc::clone(&c);
            writes.push(tokio::spawn(async move {
                c.write(u64::from(i) * 4096, Bytes::from(vec![i; 4096]), i % 2 == 0)
                    .await
            }));
        }
        for w in writes {
            w.await.unwrap().unwrap();
        }
        c.flush().await.unwrap();
        assert!(dev.flushes() >= 1);
        assert_eq!(c.read(5 * 4096, 4096).await.unwrap(), vec![5u8; 4096]);
        c.write_zeroes(5 * 4096, 4096, false).await.unwrap();
        assert_eq!(c.read(5 * 4096, 8).await.unwrap(), vec![0u8; 8]);
        // out of range: the server's EINVAL comes back typed
        let e = c.read(2 << 20, 4096).await.unwrap_err();
        assert!(matches!(e, DeviceError::InvalidArgument(_)), "{e}");
        // the server goes away: requests fail with the cause, never hang
        task.abort();
        let _ = task.await;
        c.close().await;
        let e = c.read(0, 4096).await.unwrap_err();
        assert!(e.to_string().contains("forward to nbd://"), "{e}");
    }

    #[tokio::test]
    async fn unknown_export_and_non_nbd_peer_are_refused() {
        let dev = Arc::new(MemoryDevice::new(1 << 20));
        let (addr, _task) = server(dev).await;
        let e = NbdClient::connect(&addr, "nope", T, T).await.err().unwrap();
        assert!(e.to_string().contains("refused"), "{e}");
        // a peer that talks something else
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let e = NbdClient::connect(&a, "vol", T, T).await.err().unwrap();
        assert!(e.to_string().contains("not a newstyle"), "{e}");
    }

    #[tokio::test]
    async fn handover_pause_holds_requests_and_close_fails_them() {
        let dev = Arc::new(MemoryDevice::new(1 << 20));
        let (addr, _task) = server(Arc::clone(&dev)).await;
        let c = NbdClient::connect(&addr, "vol", T, T).await.unwrap();
        let h = Arc::new(HandoverDevice::forwarding(c));
        h.write(0, Bytes::from(vec![7u8; 4096]), false)
            .await
            .unwrap();
        assert!(matches!(h.state(), HandoverState::Forwarding(_)));
        let before = dev.flushes();
        h.pause().await.unwrap();
        assert!(dev.flushes() > before, "pause flushes through the source");
        assert_eq!(h.state(), HandoverState::Paused);
        // a request arriving while paused waits…
        let h2 = Arc::clone(&h);
        let held = tokio::spawn(async move { h2.read(0, 4096).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!held.is_finished(), "a paused export must hold requests");
        // …and fails with the reason once the handover is closed
        h.close("rolled back").await;
        let e = held.await.unwrap().unwrap_err();
        assert!(e.to_string().contains("rolled back"), "{e}");
        assert_eq!(h.state(), HandoverState::Closed("rolled back".into()));
    }
}
