//! Framing: a fixed 24-byte header followed by the payload.
//!
//! ```text
//!  0      4    5    6      8                 16          20          24
//!  +------+----+----+------+-----------------+-----------+-----------+
//!  | VGRP | ver| op | flags|   request id    |payload len| header crc|
//!  +------+----+----+------+-----------------+-----------+-----------+
//! ```
//!
//! All integers are big-endian. The header crc is the low 32 bits of the
//! CRC-64/NVME of bytes 0..20. A payload longer than the reader's limit
//! ([`MAX_FRAME_PAYLOAD`] after the handshake, [`HANDSHAKE_MAX_PAYLOAD`]
//! during it) is refused before any of it is read or allocated, and a payload
//! within the limit is allocated as its bytes actually arrive, so a header
//! alone never makes the reader allocate more than a small chunk.

use std::io;

use bytes::Bytes;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;

use crate::replica::{ALIGN, AlignedBuf};

/// First four bytes of every frame.
pub(crate) const MAGIC: [u8; 4] = *b"VGRP";
/// The newest protocol version this build speaks. Version 2 adds the
/// optional trace context on requests ([`FLAG_TRACE`]); version 3 the
/// engine's epoch in the handshake (AUTH), which the server claims the
/// replica with before it accepts the connection.
pub(crate) const PROTOCOL_VERSION: u8 = 4;
/// The oldest protocol version this build still accepts from peers.
pub(crate) const MIN_PROTOCOL_VERSION: u8 = 1;
/// Size of the fixed frame header.
pub(crate) const HEADER_LEN: usize = 24;
/// Largest data payload of one read or write (the engine sends at most 4 MiB).
pub const MAX_DATA_LEN: usize = 8 << 20;
/// Largest frame payload accepted after the handshake: the largest data
/// payload plus room for the small fixed part before it.
pub const MAX_FRAME_PAYLOAD: usize = MAX_DATA_LEN + 64 * 1024;
/// Largest frame payload accepted during the handshake, from a peer that is
/// not authenticated yet.
pub(crate) const HANDSHAKE_MAX_PAYLOAD: usize = 1024;

/// Flag: the frame is a response (set by servers, clear on requests).
pub(crate) const FLAG_RESPONSE: u16 = 1;
/// Flag: the response carries an error instead of a result.
pub(crate) const FLAG_ERROR: u16 = 2;
/// Flag (requests, version ≥ 2): the payload starts with a trace context,
/// a length byte and that many bytes of printable ASCII (W3C `traceparent`).
pub(crate) const FLAG_TRACE: u16 = 4;
const KNOWN_FLAGS: u16 = FLAG_RESPONSE | FLAG_ERROR | FLAG_TRACE;

/// Payload bytes allocated at first; the buffer then doubles as data arrives.
pub(crate) const FIRST_CHUNK: usize = 256 * 1024;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub version: u8,
    pub opcode: u8,
    pub flags: u16,
    pub id: u64,
    pub len: u32,
}

/// Why a frame could not be read.
#[derive(Debug, Error)]
pub(crate) enum FrameError {
    /// The peer closed the connection cleanly between frames.
    #[error("connection closed by peer")]
    Eof,
    /// The connection ended in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("bad magic {0:02x?}")]
    BadMagic([u8; 4]),
    #[error("header checksum mismatch")]
    HeaderCrc,
    #[error("unknown flags {0:#06x}")]
    BadFlags(u16),
    #[error("frame payload of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: u64, max: usize },
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl FrameError {
    /// True for errors caused by what the peer sent (as opposed to the
    /// connection simply ending or failing).
    pub(crate) fn is_violation(&self) -> bool {
        matches!(
            self,
            FrameError::BadMagic(_)
                | FrameError::HeaderCrc
                | FrameError::BadFlags(_)
                | FrameError::TooLarge { .. }
        )
    }
}

fn header_crc(bytes: &[u8]) -> u32 {
    let mut d = crc64fast_nvme::Digest::new();
    d.write(bytes);
    // Truncation intended: the low 32 bits are plenty for 20 bytes.
    d.sum64() as u32
}

impl Header {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4] = self.version;
        b[5] = self.opcode;
        b[6..8].copy_from_slice(&self.flags.to_be_bytes());
        b[8..16].copy_from_slice(&self.id.to_be_bytes());
        b[16..20].copy_from_slice(&self.len.to_be_bytes());
        let crc = header_crc(&b[0..20]);
        b[20..24].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// Decodes and checks a header; `max` is the largest payload accepted.
    pub(crate) fn decode(b: &[u8; HEADER_LEN], max: usize) -> Result<Header, FrameError> {
        let magic = [b[0], b[1], b[2], b[3]];
        if magic != MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        let crc = u32::from_be_bytes([b[20], b[21], b[22], b[23]]);
        if crc != header_crc(&b[0..20]) {
            return Err(FrameError::HeaderCrc);
        }
        let flags = u16::from_be_bytes([b[6], b[7]]);
        if flags & !KNOWN_FLAGS != 0 {
            return Err(FrameError::BadFlags(flags));
        }
        let len = u32::from_be_bytes([b[16], b[17], b[18], b[19]]);
        if u64::from(len) > max as u64 {
            return Err(FrameError::TooLarge {
                len: u64::from(len),
                max,
            });
        }
        Ok(Header {
            version: b[4],
            opcode: b[5],
            flags,
            id: u64::from_be_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
            len,
        })
    }

    pub(crate) fn is_response(&self) -> bool {
        self.flags & FLAG_RESPONSE != 0
    }
}

/// A received frame.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub header: Header,
    pub payload: Bytes,
}

/// Reads one frame whose payload is at most `max` bytes.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Frame, FrameError> {
    let header = read_header(r, max).await?;
    let payload = read_payload(r, header.len as usize).await?;
    Ok(Frame { header, payload })
}

/// Reads and checks one header whose payload is at most `max` bytes; the
/// caller then reads the payload with [`read_payload`].
pub(crate) async fn read_header<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Header, FrameError> {
    let mut hb = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        let n = r.read(&mut hb[filled..]).await?;
        if n == 0 {
            return Err(if filled == 0 {
                FrameError::Eof
            } else {
                FrameError::Truncated
            });
        }
        filled += n;
    }
    Header::decode(&hb, max)
}

/// Reads exactly `len` bytes, growing the buffer only as data arrives.
pub(crate) async fn read_payload<R: AsyncRead + Unpin>(
    r: &mut R,
    len: usize,
) -> Result<Bytes, FrameError> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    let mut buf: Vec<u8> = Vec::new();
    while buf.len() < len {
        let start = buf.len();
        let target = len.min(FIRST_CHUNK.max(start.saturating_mul(2)));
        buf.reserve_exact(target - start);
        buf.resize(target, 0);
        r.read_exact(&mut buf[start..target])
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => FrameError::Truncated,
                _ => FrameError::Io(e),
            })?;
    }
    Ok(Bytes::from(buf))
}

/// Reads a payload of exactly `len` bytes into one zeroed, 4 KiB-aligned
/// buffer, `lead` bytes in: a write request's data (after its `lead`-byte
/// fixed part) then starts on a block boundary, and an O_DIRECT replica
/// writes it without a bounce copy. Unlike [`read_payload`] it allocates
/// `len` up front: only for requests the server has already budgeted.
pub(crate) async fn read_payload_aligned<R: AsyncRead + Unpin>(
    r: &mut R,
    len: usize,
    lead: usize,
) -> Result<Bytes, FrameError> {
    let start = (ALIGN - lead % ALIGN) % ALIGN;
    let mut buf = AlignedBuf::zeroed(start + len);
    r.read_exact(&mut buf.as_mut_slice()[start..])
        .await
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => FrameError::Truncated,
            _ => FrameError::Io(e),
        })?;
    Ok(Bytes::from_owner(buf).slice(start..))
}

/// An encoded frame waiting to be written: header, a small fixed part and a
/// (possibly large, shared) body, so data is never copied to be framed.
#[derive(Debug)]
pub(crate) struct OutFrame {
    header: [u8; HEADER_LEN],
    prefix: Bytes,
    body: Bytes,
    /// Released once the frame is written (server in-flight limit).
    _permit: Option<OwnedSemaphorePermit>,
}

/// A frame that would exceed [`MAX_FRAME_PAYLOAD`].
#[derive(Debug, Error)]
#[error("frame payload of {0} bytes exceeds the limit of {MAX_FRAME_PAYLOAD}")]
pub(crate) struct FrameTooLarge(pub usize);

impl OutFrame {
    /// A frame of this build's newest version (tests; connections use the
    /// version agreed in the handshake).
    #[cfg(test)]
    pub(crate) fn new(
        opcode: u8,
        flags: u16,
        id: u64,
        prefix: Bytes,
        body: Bytes,
    ) -> Result<OutFrame, FrameTooLarge> {
        OutFrame::with_version(PROTOCOL_VERSION, opcode, flags, id, prefix, body)
    }

    /// A frame of protocol `version` (the one agreed for the connection).
    pub(crate) fn with_version(
        version: u8,
        opcode: u8,
        flags: u16,
        id: u64,
        prefix: Bytes,
        body: Bytes,
    ) -> Result<OutFrame, FrameTooLarge> {
        let len = prefix.len() + body.len();
        if len > MAX_FRAME_PAYLOAD {
            return Err(FrameTooLarge(len));
        }
        let header = Header {
            version,
            opcode,
            flags,
            id,
            // Fits: MAX_FRAME_PAYLOAD < u32::MAX.
            len: len as u32,
        };
        Ok(OutFrame {
            header: header.encode(),
            prefix,
            body,
            _permit: None,
        })
    }

    pub(crate) fn with_permit(mut self, permit: OwnedSemaphorePermit) -> OutFrame {
        self._permit = Some(permit);
        self
    }

    /// The frame's bytes, in order: header, fixed part, body.
    pub(crate) fn parts(&self) -> [&[u8]; 3] {
        [&self.header, &self.prefix, &self.body]
    }

    /// The frame's length on the wire.
    pub(crate) fn wire_len(&self) -> usize {
        HEADER_LEN + self.prefix.len() + self.body.len()
    }

    pub(crate) async fn write_to<W: AsyncWrite + Unpin>(&self, w: &mut W) -> io::Result<()> {
        w.write_all(&self.header).await?;
        if !self.prefix.is_empty() {
            w.write_all(&self.prefix).await?;
        }
        if !self.body.is_empty() {
            w.write_all(&self.body).await?;
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        let mut v = self.header.to_vec();
        v.extend_from_slice(&self.prefix);
        v.extend_from_slice(&self.body);
        v
    }
}
