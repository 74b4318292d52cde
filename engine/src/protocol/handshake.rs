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
//!                      version 3: HMAC-SHA256(token, nonce || replica name || epoch u64 LE) || epoch u64 LE, 40 bytes
//! server -> RESULT     payload = status u8 || UTF-8 message
//! ```
//!
//! RESULT status: 0 ok, 1 bad token, 2 unsupported version, 3 unknown
//! replica, 4 malformed handshake, 5 stale epoch (a newer engine claimed
//! the replica), 6 claim failed (persisting the epoch failed).
//!
//! From version 3 the client names the **epoch** of the engine it serves,
//! covered by the MAC; the server claims the replica with it (persisted
//! before RESULT ok) and refuses an epoch older than the replica's with
//! status 5. Epoch 0 is no engine (a reachability probe): it claims
//! nothing, and its requests are refused once any engine claimed the
//! replica — as are those of versions 1 and 2, which carry no epoch and
//! count as 0.
//!
//! The replica name is only checked after
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
    StaleEpoch = 5,
    ClaimFailed = 6,
}

impl Status {
    fn from_u8(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::BadToken,
            2 => Status::UnsupportedVersion,
            3 => Status::UnknownReplica,
            4 => Status::Malformed,
            5 => Status::StaleEpoch,
            6 => Status::ClaimFailed,
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
            Status::StaleEpoch => "stale engine epoch",
            Status::ClaimFailed => "claiming the replica failed",
        }
    }
}

/// The first version whose AUTH carries the engine's epoch.
pub(crate) const EPOCH_VERSION: u8 = 3;

/// The first version with `JoinGeneration` (the in-sync generation a
/// replica persists); the handshake is unchanged from version 3.
pub(crate) const GENERATION_VERSION: u8 = 4;

fn mac(token: &ClusterToken, nonce: &[u8], name: &str, epoch: Option<u64>) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; the error case cannot happen.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(nonce);
    m.update(name.as_bytes());
    if let Some(epoch) = epoch {
        m.update(&epoch.to_le_bytes());
    }
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

/// A peer that proved it holds the token, for a replica this server has;
/// the server still owes it the final RESULT ([`accept`] or [`refuse_claim`]).
pub(crate) struct Authenticated<T> {
    pub name: String,
    pub found: T,
    pub version: u8,
    /// The engine's epoch (0 for versions before [`EPOCH_VERSION`]).
    pub epoch: u64,
}

/// Sends RESULT ok: the connection is accepted.
pub(crate) async fn accept<W: AsyncWrite + Unpin>(
    wr: &mut W,
    version: u8,
) -> Result<(), ServerHandshakeError> {
    send(wr, version, OP_RESULT, result_payload(Status::Ok, "")).await?;
    Ok(())
}

/// Refuses an authenticated peer whose claim failed: its epoch is older
/// than the replica's ([`Status::StaleEpoch`]) or persisting it failed
/// ([`Status::ClaimFailed`]).
pub(crate) async fn refuse_claim<W: AsyncWrite + Unpin>(
    wr: &mut W,
    version: u8,
    status: Status,
    message: &str,
) -> ServerHandshakeError {
    // Best effort: the peer may be gone already.
    let _ = send(wr, version, OP_RESULT, result_payload(status, message)).await;
    ServerHandshakeError::Refused {
        status,
        reason: message.to_string(),
    }
}

/// Runs the server side up to the final RESULT; on success returns the
/// replica name, what `lookup` found for it, the protocol version the
/// connection speaks and the client's epoch. The caller claims the replica
/// and then calls [`accept`] or [`refuse_claim`].
pub(crate) async fn server<R, W, T>(
    rd: &mut R,
    wr: &mut W,
    token: &ClusterToken,
    lookup: impl FnOnce(&str) -> Option<T>,
) -> Result<Authenticated<T>, ServerHandshakeError>
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
    let auth_len = if version >= EPOCH_VERSION {
        MAC_LEN + 8
    } else {
        MAC_LEN
    };
    if auth.header.opcode != OP_AUTH || auth.header.flags != 0 || auth.payload.len() != auth_len {
        let why = format!(
            "expected AUTH of {auth_len} bytes, got opcode {:#04x} with {} bytes",
            auth.header.opcode,
            auth.payload.len()
        );
        return refuse(wr, Status::Malformed, why.clone(), &why).await;
    }
    let (tag, epoch) = auth.payload.split_at(MAC_LEN);
    let epoch = match <[u8; 8]>::try_from(epoch) {
        Ok(b) => Some(u64::from_le_bytes(b)),
        Err(_) => None,
    };
    if mac(token, &nonce, &name, epoch).verify_slice(tag).is_err() {
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
    Ok(Authenticated {
        name,
        found,
        version,
        epoch: epoch.unwrap_or(0),
    })
}

/// Why the client's handshake failed.
#[derive(Debug)]
pub(crate) enum ClientHandshakeError {
    /// The server said no.
    Refused(String),
    /// The server does not speak the version the client announced.
    UnsupportedVersion(String),
    /// A newer engine claimed the replica (status 5).
    StaleEpoch(String),
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
        Some(Status::StaleEpoch) => Err(ClientHandshakeError::StaleEpoch(format!(
            "{}: {message}",
            Status::StaleEpoch.describe()
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

/// Runs the client side, announcing protocol `version` and, from version
/// 3, the engine's `epoch`.
pub(crate) async fn client<R, W>(
    rd: &mut R,
    wr: &mut W,
    token: &ClusterToken,
    name: &str,
    version: u8,
    epoch: u64,
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
    let epoch = (version >= EPOCH_VERSION).then_some(epoch);
    let tag = mac(token, &f.payload, name, epoch).finalize().into_bytes();
    let mut auth = BytesMut::with_capacity(MAC_LEN + 8);
    auth.put_slice(&tag);
    if let Some(epoch) = epoch {
        auth.put_slice(&epoch.to_le_bytes());
    }
    send(wr, version, OP_AUTH, auth.freeze())
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
