//! The handshake: version check and cluster-token authentication.
//!
//! Every handshake frame uses the normal 24-byte header with request id 0;
//! the header layout and these four messages are frozen across protocol
//! versions so that peers of different versions can at least refuse cleanly.
//!
//! ```text
//! client -> HELLO      header.version = client's version, payload = replica name (UTF-8)
//! server -> CHALLENGE  header.version = agreed version, payload = 32-byte random nonce
//!        or RESULT     (unsupported version, malformed hello)
//! client -> AUTH       payload = HMAC-SHA256(token, nonce || replica name), 32 bytes
//! server -> RESULT     payload = status u8 || UTF-8 message
//! ```
//!
//! RESULT status: 0 ok, 1 bad token, 2 unsupported version, 3 unknown
//! replica, 4 malformed handshake. The replica name is only checked after
//! the peer has proven it holds the token, so unauthenticated peers cannot
//! probe which replicas a server has.
//!
//! Versions: a server accepts any version from [`MIN_PROTOCOL_VERSION`] to
//! its own and the connection then speaks the client's version (every later
//! frame carries it). A client first announces its own version and, refused
//! with "unsupported version" by an older server, reconnects announcing
//! [`MIN_PROTOCOL_VERSION`].

use bytes::{BufMut, Bytes, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::ClusterToken;
use super::frame::{
    FrameError, HANDSHAKE_MAX_PAYLOAD, MIN_PROTOCOL_VERSION, OutFrame, PROTOCOL_VERSION, read_frame,
};

pub(crate) const OP_HELLO: u8 = 0x40;
pub(crate) const OP_CHALLENGE: u8 = 0x41;
pub(crate) const OP_AUTH: u8 = 0x42;
pub(crate) const OP_RESULT: u8 = 0x43;

const NONCE_LEN: usize = 32;
const MAC_LEN: usize = 32;
/// Longest replica name accepted in a HELLO.
const MAX_HELLO_NAME: usize = 255;

/// Status byte of a RESULT frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Ok = 0,
    BadToken = 1,
    UnsupportedVersion = 2,
    UnknownReplica = 3,
    Malformed = 4,
}

impl Status {
    fn from_u8(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::BadToken,
            2 => Status::UnsupportedVersion,
            3 => Status::UnknownReplica,
            4 => Status::Malformed,
            _ => return None,
        })
    }
    fn describe(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::BadToken => "authentication failed",
            Status::UnsupportedVersion => "unsupported protocol version",
            Status::UnknownReplica => "unknown replica",
            Status::Malformed => "malformed handshake",
        }
    }
}

fn mac(token: &ClusterToken, nonce: &[u8], name: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; the error case cannot happen.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(nonce);
    m.update(name.as_bytes());
    m
}

async fn send<W: AsyncWrite + Unpin>(
    w: &mut W,
    version: u8,
    opcode: u8,
    payload: Bytes,
) -> std::io::Result<()> {
    let frame = OutFrame::with_version(version, opcode, 0, 0, payload, Bytes::new())
        .map_err(std::io::Error::other)?;
    frame.write_to(w).await?;
    w.flush().await
}

fn result_payload(status: Status, message: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(1 + message.len());
    b.put_u8(status as u8);
    b.put_slice(message.as_bytes());
    b.freeze()
}

/// Why the server ended a handshake without accepting the peer.
#[derive(Debug)]
pub(crate) enum ServerHandshakeError {
    /// The peer was refused (and told so).
    Refused { status: Status, reason: String },
    /// Reading or writing failed, or the peer sent a non-protocol frame.
    Frame(FrameError),
}

impl std::fmt::Display for ServerHandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerHandshakeError::Refused { status, reason } => {
                write!(f, "{}: {reason}", status.describe())
            }
            ServerHandshakeError::Frame(e) => write!(f, "{e}"),
        }
    }
}

impl From<FrameError> for ServerHandshakeError {
    fn from(e: FrameError) -> Self {
        ServerHandshakeError::Frame(e)
    }
}

impl From<std::io::Error> for ServerHandshakeError {
    fn from(e: std::io::Error) -> Self {
        ServerHandshakeError::Frame(FrameError::Io(e))
    }
}

/// Runs the server side; on success returns the replica name, what `lookup`
/// found for it and the protocol version the connection speaks.
pub(crate) async fn server<R, W, T>(
    rd: &mut R,
    wr: &mut W,
    token: &ClusterToken,
    lookup: impl FnOnce(&str) -> Option<T>,
) -> Result<(String, T, u8), ServerHandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    async fn refuse<W: AsyncWrite + Unpin, T>(
        wr: &mut W,
        status: Status,
        reason: String,
        tell_peer: &str,
    ) -> Result<T, ServerHandshakeError> {
        // Best effort: the peer may be gone already.
        let _ = send(
            wr,
            PROTOCOL_VERSION,
            OP_RESULT,
            result_payload(status, tell_peer),
        )
        .await;
        Err(ServerHandshakeError::Refused { status, reason })
    }

    let hello = read_frame(rd, HANDSHAKE_MAX_PAYLOAD).await?;
    if hello.header.opcode != OP_HELLO || hello.header.flags != 0 || hello.header.id != 0 {
        let why = format!("expected HELLO, got opcode {:#04x}", hello.header.opcode);
        return refuse(wr, Status::Malformed, why.clone(), &why).await;
    }
    let version = hello.header.version;
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
        let why = format!(
            "peer speaks version {version}, this server speaks versions {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
        );
        return refuse(wr, Status::UnsupportedVersion, why.clone(), &why).await;
    }
    let name = match std::str::from_utf8(&hello.payload) {
        Ok(n) if !n.is_empty() && n.len() <= MAX_HELLO_NAME => n.to_string(),
        _ => {
            let why = "replica name missing, too long or not UTF-8".to_string();
            return refuse(wr, Status::Malformed, why.clone(), &why).await;
        }
    };

    let mut nonce = [0u8; NONCE_LEN];
    rand::fill(&mut nonce);
    send(wr, version, OP_CHALLENGE, Bytes::copy_from_slice(&nonce)).await?;

    let auth = read_frame(rd, HANDSHAKE_MAX_PAYLOAD).await?;
    if auth.header.opcode != OP_AUTH || auth.header.flags != 0 || auth.payload.len() != MAC_LEN {
        let why = format!(
            "expected AUTH with a {MAC_LEN}-byte MAC, got opcode {:#04x} with {} bytes",
            auth.header.opcode,
            auth.payload.len()
        );
        return refuse(wr, Status::Malformed, why.clone(), &why).await;
    }
    if mac(token, &nonce, &name)
        .verify_slice(&auth.payload)
        .is_err()
    {
        return refuse(
            wr,
            Status::BadToken,
            format!("bad cluster token (for replica {name:?})"),
            "bad cluster token",
        )
        .await;
    }
    let Some(found) = lookup(&name) else {
        let why = format!("no replica named {name:?} here");
        return refuse(wr, Status::UnknownReplica, why.clone(), &why).await;
    };
    send(wr, version, OP_RESULT, result_payload(Status::Ok, "")).await?;
    Ok((name, found, version))
}

/// Why the client's handshake failed.
#[derive(Debug)]
pub(crate) enum ClientHandshakeError {
    /// The server said no.
    Refused(String),
    /// The server does not speak the version the client announced.
    UnsupportedVersion(String),
    /// The server sent something unexpected.
    Protocol(String),
    /// Reading or writing failed.
    Io(String),
}

fn parse_result(payload: &[u8]) -> Result<(), ClientHandshakeError> {
    let Some((&status, message)) = payload.split_first() else {
        return Err(ClientHandshakeError::Protocol("empty RESULT frame".into()));
    };
    let message = String::from_utf8_lossy(message);
    match Status::from_u8(status) {
        Some(Status::Ok) => Ok(()),
        Some(Status::UnsupportedVersion) => Err(ClientHandshakeError::UnsupportedVersion(format!(
            "{}: {message}",
            Status::UnsupportedVersion.describe()
        ))),
        Some(s) if message.is_empty() => Err(ClientHandshakeError::Refused(s.describe().into())),
        Some(s) => Err(ClientHandshakeError::Refused(format!(
            "{}: {message}",
            s.describe()
        ))),
        None => Err(ClientHandshakeError::Refused(format!(
            "status {status}: {message}"
        ))),
    }
}

fn client_frame_error(e: FrameError) -> ClientHandshakeError {
    if e.is_violation() {
        ClientHandshakeError::Protocol(e.to_string())
    } else {
        ClientHandshakeError::Io(format!("handshake: {e}"))
    }
}

/// Runs the client side, announcing protocol `version`.
pub(crate) async fn client<R, W>(
    rd: &mut R,
    wr: &mut W,
    token: &ClusterToken,
    name: &str,
    version: u8,
) -> Result<(), ClientHandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let io = |e: std::io::Error| ClientHandshakeError::Io(format!("handshake: {e}"));
    send(
        wr,
        version,
        OP_HELLO,
        Bytes::copy_from_slice(name.as_bytes()),
    )
    .await
    .map_err(io)?;
    let f = read_frame(rd, HANDSHAKE_MAX_PAYLOAD)
        .await
        .map_err(client_frame_error)?;
    match f.header.opcode {
        OP_RESULT => {
            parse_result(&f.payload)?;
            return Err(ClientHandshakeError::Protocol(
                "server accepted before authentication".into(),
            ));
        }
        OP_CHALLENGE if f.payload.len() == NONCE_LEN => {}
        op => {
            return Err(ClientHandshakeError::Protocol(format!(
                "expected CHALLENGE, got opcode {op:#04x} with {} bytes",
                f.payload.len()
            )));
        }
    }
    let tag = mac(token, &f.payload, name).finalize().into_bytes();
    send(wr, version, OP_AUTH, Bytes::copy_from_slice(&tag))
        .await
        .map_err(io)?;
    let f = read_frame(rd, HANDSHAKE_MAX_PAYLOAD)
        .await
        .map_err(client_frame_error)?;
    if f.header.opcode != OP_RESULT {
        return Err(ClientHandshakeError::Protocol(format!(
            "expected RESULT, got opcode {:#04x}",
            f.header.opcode
        )));
    }
    parse_result(&f.payload)
}
