//! Requests and responses and their payload encodings.
//!
//! Data operations use small big-endian binary headers followed by raw data;
//! control operations use JSON bodies. A response carries the opcode of its
//! request; an error response (flag `ERROR`) carries the JSON
//! `{"kind": ErrorKind, "message": String}` whatever the opcode.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::replica::{Checksum, ErrorKind, Extent, LayerInfo, ReplicaInfo, VerifyReport};

use super::frame::{FLAG_ERROR, FLAG_RESPONSE, MAX_DATA_LEN};

/// Request opcodes. The handshake uses its own opcodes (see `handshake`).
/// Bytes before a WRITE request's data: its offset (u64). The server
/// reads the data to a block boundary after them.
pub(crate) const WRITE_FIXED_LEN: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub(crate) enum Opcode {
    Ping = 0x01,
    Read = 0x02,
    Write = 0x03,
    Trim = 0x04,
    WriteZeroes = 0x05,
    Flush = 0x06,
    Info = 0x10,
    BumpGeneration = 0x11,
    Snapshot = 0x12,
    RemoveSnapshot = 0x13,
    Revert = 0x14,
    Verify = 0x15,
    LayerExtents = 0x16,
    ReadLayer = 0x17,
    LayerChecksum = 0x18,
    StageLayer = 0x19,
    WriteStaged = 0x1a,
    InstallChain = 0x1b,
    SetRevision = 0x1c,
    /// Version 4: persist the in-sync generation the replica joins.
    JoinGeneration = 0x1d,
}

impl Opcode {
    pub(crate) const ALL: [Opcode; 20] = [
        Opcode::Ping,
        Opcode::Read,
        Opcode::Write,
        Opcode::Trim,
        Opcode::WriteZeroes,
        Opcode::Flush,
        Opcode::Info,
        Opcode::BumpGeneration,
        Opcode::Snapshot,
        Opcode::RemoveSnapshot,
        Opcode::Revert,
        Opcode::Verify,
        Opcode::LayerExtents,
        Opcode::ReadLayer,
        Opcode::LayerChecksum,
        Opcode::StageLayer,
        Opcode::WriteStaged,
        Opcode::InstallChain,
        Opcode::SetRevision,
        Opcode::JoinGeneration,
    ];

    pub(crate) fn from_u8(b: u8) -> Option<Opcode> {
        Opcode::ALL.into_iter().find(|op| *op as u8 == b)
    }

    /// The span name of this operation (`replica.<op>`).
    pub(crate) fn span_name(self) -> &'static str {
        match self {
            Opcode::Ping => "replica.ping",
            Opcode::Read => "replica.read",
            Opcode::Write => "replica.write",
            Opcode::Trim => "replica.trim",
            Opcode::WriteZeroes => "replica.write_zeroes",
            Opcode::Flush => "replica.flush",
            Opcode::Info => "replica.info",
            Opcode::BumpGeneration => "replica.bump_generation",
            Opcode::Snapshot => "replica.snapshot",
            Opcode::RemoveSnapshot => "replica.remove_snapshot",
            Opcode::Revert => "replica.revert",
            Opcode::Verify => "replica.verify",
            Opcode::LayerExtents => "replica.layer_extents",
            Opcode::ReadLayer => "replica.read_layer",
            Opcode::LayerChecksum => "replica.layer_checksum",
            Opcode::StageLayer => "replica.stage_layer",
            Opcode::WriteStaged => "replica.write_staged",
            Opcode::InstallChain => "replica.install_chain",
            Opcode::SetRevision => "replica.set_revision",
            Opcode::JoinGeneration => "replica.join_generation",
        }
    }

    /// Operations that change a replica's chain or identity: the server
    /// traces them even when the request carries no trace context.
    pub(crate) fn is_control(self) -> bool {
        matches!(
            self,
            Opcode::BumpGeneration
                | Opcode::Snapshot
                | Opcode::RemoveSnapshot
                | Opcode::Revert
                | Opcode::Verify
                | Opcode::StageLayer
                | Opcode::InstallChain
                | Opcode::SetRevision
                | Opcode::JoinGeneration
        )
    }
}

/// Puts a trace context (already checked by `trace_context::valid`) in
/// front of a request's encoded prefix; the frame then carries
/// [`FLAG_TRACE`](super::frame::FLAG_TRACE).
pub(crate) fn with_trace_context(ctx: &str, prefix: &Bytes) -> Result<Bytes, MessageError> {
    if !crate::protocol::trace_context::valid(ctx.as_bytes()) {
        return Err(MessageError::Encode(format!(
            "trace context of {} bytes cannot be sent",
            ctx.len()
        )));
    }
    let mut b = BytesMut::with_capacity(1 + ctx.len() + prefix.len());
    // Fits: valid() bounds the length to 255.
    b.put_u8(ctx.len() as u8);
    b.put_slice(ctx.as_bytes());
    b.put_slice(prefix);
    Ok(b.freeze())
}

/// A message payload that does not decode.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum MessageError {
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    #[error("{op:?}: {why}")]
    Malformed { op: Opcode, why: String },
    #[error("{0}")]
    Encode(String),
}

/// A request from an engine to a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    Ping,
    Read {
        offset: u64,
        len: u32,
    },
    Write {
        offset: u64,
        data: Bytes,
    },
    Trim {
        offset: u64,
        len: u64,
    },
    WriteZeroes {
        offset: u64,
        len: u64,
    },
    Flush,
    Info,
    BumpGeneration,
    Snapshot {
        name: String,
        user_created: bool,
        labels: BTreeMap<String, String>,
    },
    RemoveSnapshot {
        name: String,
    },
    Revert {
        name: String,
    },
    Verify,
    LayerExtents {
        layer: String,
    },
    ReadLayer {
        layer: String,
        offset: u64,
        len: u32,
    },
    LayerChecksum {
        layer: String,
    },
    StageLayer {
        info: LayerInfo,
    },
    WriteStaged {
        layer: String,
        offset: u64,
        data: Bytes,
    },
    InstallChain {
        layers: Vec<LayerInfo>,
    },
    SetRevision {
        revision: u64,
    },
    JoinGeneration {
        generation: u64,
    },
}

/// A successful result, or an error, from a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Response {
    /// No result (ping, write, trim, flush, ...).
    Done,
    /// Read data.
    Data(Bytes),
    Info(ReplicaInfo),
    Generation(u64),
    Layer(LayerInfo),
    Verify(VerifyReport),
    Extents(Vec<Extent>),
    Checksum(Checksum),
    Error {
        kind: ErrorKind,
        message: String,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotBody {
    name: String,
    user_created: bool,
    labels: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NameBody {
    name: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LayerBody {
    layer: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChainBody {
    layers: Vec<LayerInfo>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerationBody {
    generation: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorBody {
    kind: ErrorKind,
    message: String,
}

fn json<T: Serialize>(v: &T) -> Result<Bytes, MessageError> {
    serde_json::to_vec(v)
        .map(Bytes::from)
        .map_err(|e| MessageError::Encode(e.to_string()))
}

fn from_json<T: DeserializeOwned>(op: Opcode, payload: &[u8]) -> Result<T, MessageError> {
    serde_json::from_slice(payload).map_err(|e| MessageError::Malformed {
        op,
        why: format!("bad JSON body: {e}"),
    })
}

/// Encodes a layer name as a length byte and the bytes.
fn put_name(b: &mut BytesMut, name: &str) -> Result<(), MessageError> {
    let len = u8::try_from(name.len()).map_err(|_| {
        MessageError::Encode(format!("layer name of {} bytes is too long", name.len()))
    })?;
    b.put_u8(len);
    b.put_slice(name.as_bytes());
    Ok(())
}

/// A bounds-checked reader over a payload.
struct Cursor {
    op: Opcode,
    buf: Bytes,
}

impl Cursor {
    fn err(&self, why: impl Into<String>) -> MessageError {
        MessageError::Malformed {
            op: self.op,
            why: why.into(),
        }
    }
    fn take(&mut self, n: usize) -> Result<Bytes, MessageError> {
        if self.buf.len() < n {
            return Err(self.err(format!(
                "payload too short: need {n} more bytes, have {}",
                self.buf.len()
            )));
        }
        Ok(self.buf.split_to(n))
    }
    fn u8(&mut self) -> Result<u8, MessageError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, MessageError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, MessageError> {
        let b = self.take(8)?;
        Ok(u64::from_be_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    }
    fn name(&mut self) -> Result<String, MessageError> {
        let len = self.u8()? as usize;
        let b = self.take(len)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err("layer name is not UTF-8"))
    }
    fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }
    fn end(self) -> Result<(), MessageError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.err(format!("{} trailing bytes", self.buf.len())))
        }
    }
}

impl Request {
    pub(crate) fn opcode(&self) -> Opcode {
        match self {
            Request::Ping => Opcode::Ping,
            Request::Read { .. } => Opcode::Read,
            Request::Write { .. } => Opcode::Write,
            Request::Trim { .. } => Opcode::Trim,
            Request::WriteZeroes { .. } => Opcode::WriteZeroes,
            Request::Flush => Opcode::Flush,
            Request::Info => Opcode::Info,
            Request::BumpGeneration => Opcode::BumpGeneration,
            Request::Snapshot { .. } => Opcode::Snapshot,
            Request::RemoveSnapshot { .. } => Opcode::RemoveSnapshot,
            Request::Revert { .. } => Opcode::Revert,
            Request::Verify => Opcode::Verify,
            Request::LayerExtents { .. } => Opcode::LayerExtents,
            Request::ReadLayer { .. } => Opcode::ReadLayer,
            Request::LayerChecksum { .. } => Opcode::LayerChecksum,
            Request::StageLayer { .. } => Opcode::StageLayer,
            Request::WriteStaged { .. } => Opcode::WriteStaged,
            Request::InstallChain { .. } => Opcode::InstallChain,
            Request::SetRevision { .. } => Opcode::SetRevision,
            Request::JoinGeneration { .. } => Opcode::JoinGeneration,
        }
    }

    /// Encodes the payload as a small prefix and a (shared, uncopied) body.
    pub(crate) fn encode(&self) -> Result<(Bytes, Bytes), MessageError> {
        let mut b = BytesMut::new();
        let body = match self {
            Request::Ping
            | Request::Flush
            | Request::Info
            | Request::BumpGeneration
            | Request::Verify => Bytes::new(),
            Request::Read { offset, len } => {
                b.put_u64(*offset);
                b.put_u32(*len);
                Bytes::new()
            }
            Request::Write { offset, data } => {
                b.put_u64(*offset);
                debug_assert_eq!(b.len(), WRITE_FIXED_LEN);
                data.clone()
            }
            Request::SetRevision { revision: n } | Request::JoinGeneration { generation: n } => {
                b.put_u64(*n);
                Bytes::new()
            }
            Request::Trim { offset, len } | Request::WriteZeroes { offset, len } => {
                b.put_u64(*offset);
                b.put_u64(*len);
                Bytes::new()
            }
            Request::ReadLayer { layer, offset, len } => {
                b.put_u64(*offset);
                b.put_u32(*len);
                put_name(&mut b, layer)?;
                Bytes::new()
            }
            Request::WriteStaged {
                layer,
                offset,
                data,
            } => {
                b.put_u64(*offset);
                put_name(&mut b, layer)?;
                data.clone()
            }
            Request::Snapshot {
                name,
                user_created,
                labels,
            } => json(&SnapshotBody {
                name: name.clone(),
                user_created: *user_created,
                labels: labels.clone(),
            })?,
            Request::RemoveSnapshot { name } | Request::Revert { name } => {
                json(&NameBody { name: name.clone() })?
            }
            Request::LayerExtents { layer } | Request::LayerChecksum { layer } => {
                json(&LayerBody {
                    layer: layer.clone(),
                })?
            }
            Request::StageLayer { info } => json(info)?,
            Request::InstallChain { layers } => json(&ChainBody {
                layers: layers.clone(),
            })?,
        };
        Ok((b.freeze(), body))
    }

    /// Decodes a request payload whose frame has `FLAG_TRACE` set (`traced`):
    /// a trace context, then the request as [`Request::decode`] reads it.
    pub(crate) fn decode_traced(
        opcode: u8,
        traced: bool,
        payload: Bytes,
    ) -> Result<(Request, Option<String>), MessageError> {
        if !traced {
            return Ok((Request::decode(opcode, payload)?, None));
        }
        let op = Opcode::from_u8(opcode).ok_or(MessageError::UnknownOpcode(opcode))?;
        let mut c = Cursor { op, buf: payload };
        let len = c.u8()? as usize;
        let ctx = c.take(len)?;
        if !crate::protocol::trace_context::valid(&ctx) {
            return Err(c.err("trace context is empty or not printable ASCII"));
        }
        // Valid ASCII is valid UTF-8.
        let ctx = String::from_utf8_lossy(&ctx).into_owned();
        Ok((Request::decode(opcode, c.rest())?, Some(ctx)))
    }

    /// Decodes a request payload.
    pub(crate) fn decode(opcode: u8, payload: Bytes) -> Result<Request, MessageError> {
        let op = Opcode::from_u8(opcode).ok_or(MessageError::UnknownOpcode(opcode))?;
        let mut c = Cursor { op, buf: payload };
        let req = match op {
            Opcode::Ping => Request::Ping,
            Opcode::Flush => Request::Flush,
            Opcode::Info => Request::Info,
            Opcode::BumpGeneration => Request::BumpGeneration,
            Opcode::Verify => Request::Verify,
            Opcode::Read => Request::Read {
                offset: c.u64()?,
                len: c.u32()?,
            },
            Opcode::Write => Request::Write {
                offset: c.u64()?,
                data: c.rest(),
            },
            Opcode::SetRevision => Request::SetRevision { revision: c.u64()? },
            Opcode::JoinGeneration => Request::JoinGeneration {
                generation: c.u64()?,
            },
            Opcode::Trim => Request::Trim {
                offset: c.u64()?,
                len: c.u64()?,
            },
            Opcode::WriteZeroes => Request::WriteZeroes {
                offset: c.u64()?,
                len: c.u64()?,
            },
            Opcode::ReadLayer => {
                let offset = c.u64()?;
                let len = c.u32()?;
                let layer = c.name()?;
                Request::ReadLayer { layer, offset, len }
            }
            Opcode::WriteStaged => {
                let offset = c.u64()?;
                let layer = c.name()?;
                Request::WriteStaged {
                    layer,
                    offset,
                    data: c.rest(),
                }
            }
            Opcode::Snapshot => {
                let b: SnapshotBody = from_json(op, &c.rest())?;
                Request::Snapshot {
                    name: b.name,
                    user_created: b.user_created,
                    labels: b.labels,
                }
            }
            Opcode::RemoveSnapshot => Request::RemoveSnapshot {
                name: from_json::<NameBody>(op, &c.rest())?.name,
            },
            Opcode::Revert => Request::Revert {
                name: from_json::<NameBody>(op, &c.rest())?.name,
            },
            Opcode::LayerExtents => Request::LayerExtents {
                layer: from_json::<LayerBody>(op, &c.rest())?.layer,
            },
            Opcode::LayerChecksum => Request::LayerChecksum {
                layer: from_json::<LayerBody>(op, &c.rest())?.layer,
            },
            Opcode::StageLayer => Request::StageLayer {
                info: from_json(op, &c.rest())?,
            },
            Opcode::InstallChain => Request::InstallChain {
                layers: from_json::<ChainBody>(op, &c.rest())?.layers,
            },
        };
        c.end()?;
        Ok(req)
    }
}

impl Response {
    /// Encodes the response to a request with opcode `op`: flags and payload.
    /// A result that does not fit the opcode is an encoding error.
    pub(crate) fn encode(&self, op: Opcode) -> Result<(u16, Bytes), MessageError> {
        let mismatch = || MessageError::Encode(format!("response {self:?} does not answer {op:?}"));
        let payload = match (op, self) {
            (_, Response::Error { kind, message }) => {
                let body = json(&ErrorBody {
                    kind: *kind,
                    message: message.clone(),
                })?;
                return Ok((FLAG_RESPONSE | FLAG_ERROR, body));
            }
            (
                Opcode::Ping
                | Opcode::Write
                | Opcode::Trim
                | Opcode::WriteZeroes
                | Opcode::Flush
                | Opcode::RemoveSnapshot
                | Opcode::Revert
                | Opcode::StageLayer
                | Opcode::WriteStaged
                | Opcode::InstallChain
                | Opcode::SetRevision
                | Opcode::JoinGeneration,
                Response::Done,
            ) => Bytes::new(),
            (Opcode::Read | Opcode::ReadLayer, Response::Data(d)) => d.clone(),
            (Opcode::Info, Response::Info(i)) => json(i)?,
            (Opcode::BumpGeneration, Response::Generation(g)) => {
                json(&GenerationBody { generation: *g })?
            }
            (Opcode::Snapshot, Response::Layer(l)) => json(l)?,
            (Opcode::Verify, Response::Verify(v)) => json(v)?,
            (Opcode::LayerExtents, Response::Extents(e)) => json(e)?,
            (Opcode::LayerChecksum, Response::Checksum(c)) => json(c)?,
            _ => return Err(mismatch()),
        };
        Ok((FLAG_RESPONSE, payload))
    }

    /// Decodes the response to a request with opcode `op`.
    pub(crate) fn decode(op: Opcode, flags: u16, payload: Bytes) -> Result<Response, MessageError> {
        if flags & FLAG_ERROR != 0 {
            let b: ErrorBody = from_json(op, &payload)?;
            return Ok(Response::Error {
                kind: b.kind,
                message: b.message,
            });
        }
        let empty = |payload: &Bytes| {
            if payload.is_empty() {
                Ok(Response::Done)
            } else {
                Err(MessageError::Malformed {
                    op,
                    why: format!("expected an empty payload, got {} bytes", payload.len()),
                })
            }
        };
        Ok(match op {
            Opcode::Ping
            | Opcode::Write
            | Opcode::Trim
            | Opcode::WriteZeroes
            | Opcode::Flush
            | Opcode::RemoveSnapshot
            | Opcode::Revert
            | Opcode::StageLayer
            | Opcode::WriteStaged
            | Opcode::InstallChain
            | Opcode::SetRevision
            | Opcode::JoinGeneration => empty(&payload)?,
            Opcode::Read | Opcode::ReadLayer => {
                if payload.len() > MAX_DATA_LEN {
                    return Err(MessageError::Malformed {
                        op,
                        why: format!("{} bytes of data exceeds the maximum", payload.len()),
                    });
                }
                Response::Data(payload)
            }
            Opcode::Info => Response::Info(from_json(op, &payload)?),
            Opcode::BumpGeneration => {
                Response::Generation(from_json::<GenerationBody>(op, &payload)?.generation)
            }
            Opcode::Snapshot => Response::Layer(from_json(op, &payload)?),
            Opcode::Verify => Response::Verify(from_json(op, &payload)?),
            Opcode::LayerExtents => Response::Extents(from_json(op, &payload)?),
            Opcode::LayerChecksum => Response::Checksum(from_json(op, &payload)?),
        })
    }
}
