//! Replica-protocol targets.
//!
//! Input layout of both: byte 0 is a mode, the rest is the byte stream the
//! decoder reads. Mode bit 1 ([`REPAIR`]) makes the harness rewrite each
//! frame header's magic and checksum before the decoder sees it, so
//! mutations reach the checks behind the header (without it they mostly
//! test the checksum). Frame boundaries are taken from the headers' own
//! length fields.
//!
//! * [`frames`]: a stream of frames through the bounded frame reader, each
//!   payload through the request or response decoder (by the frame's
//!   response flag), with round trips through the encoders.
//! * [`handshake`]: the server side reading a client's HELLO and AUTH, or
//!   the client side reading a server's CHALLENGE and RESULT (mode bit 0).

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use std::future::Future;

use futures_util::FutureExt;

use super::Outcome;
use crate::protocol::ClusterToken;
use crate::protocol::frame::{
    FLAG_RESPONSE, FLAG_TRACE, Frame, FrameError, HANDSHAKE_MAX_PAYLOAD, HEADER_LEN, Header,
    MAX_FRAME_PAYLOAD, MIN_PROTOCOL_VERSION, OutFrame, PROTOCOL_VERSION, read_frame,
};
use crate::protocol::handshake::{
    self, OP_AUTH, OP_CHALLENGE, OP_HELLO, OP_RESULT, ServerHandshakeError,
};
use crate::protocol::message::{Opcode, Request, Response, with_trace_context};

/// Mode bit: repair frame headers (magic and checksum) before decoding.
const REPAIR: u8 = 2;
/// [`frames`] mode bit: read with the handshake's payload limit.
const HANDSHAKE_LIMIT: u8 = 1;
/// [`handshake`] mode bit: fuzz the client side (else the server side).
const CLIENT_SIDE: u8 = 1;

/// The token both sides of [`handshake`] hold, and the replica the server has.
const TOKEN: &str = "fuzz-token";
const REPLICA: &str = "r1";
/// The epoch the client announces (versions from 3).
const EPOCH: u64 = 7;

/// Runs a future over in-memory streams, which never wait: no runtime
/// needed, nothing left behind.
fn ready<F: Future>(f: F) -> F::Output {
    f.now_or_never()
        .unwrap_or_else(|| panic!("fuzz harness: a future over memory streams is pending"))
}

/// Splits an input into its mode byte and its stream, repairing the
/// stream's headers when the mode asks for it.
fn stream(data: &[u8]) -> (u8, Vec<u8>) {
    let Some((&mode, rest)) = data.split_first() else {
        return (0, Vec::new());
    };
    let mut s = rest.to_vec();
    if mode & REPAIR != 0 {
        repair_headers(&mut s);
    }
    (mode, s)
}

/// Rewrites the magic and checksum of every frame header in `s`, following
/// the length fields from one header to the next.
fn repair_headers(s: &mut [u8]) {
    let mut at = 0usize;
    while s.len().saturating_sub(at) >= HEADER_LEN {
        let b = &s[at..at + HEADER_LEN];
        let h = Header {
            version: b[4],
            opcode: b[5],
            flags: u16::from_be_bytes([b[6], b[7]]),
            id: u64::from_be_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
            len: u32::from_be_bytes([b[16], b[17], b[18], b[19]]),
        };
        s[at..at + HEADER_LEN].copy_from_slice(&h.encode());
        at = at.saturating_add(HEADER_LEN).saturating_add(h.len as usize);
    }
}

/// Fuzzes the frame reader and the message decoders.
///
/// Properties: the reader returns a frame whose payload has the header's
/// length, within the limit, or a typed error — `Eof` only at a frame
/// boundary, never an I/O error from memory; a frame re-encoded reads back
/// the same; a request or response that decodes encodes again (it never
/// fails to) and decodes to the same value.
pub fn frames(data: &[u8]) -> Outcome {
    let (mode, s) = stream(data);
    let max = if mode & HANDSHAKE_LIMIT != 0 {
        HANDSHAKE_MAX_PAYLOAD
    } else {
        MAX_FRAME_PAYLOAD
    };
    let mut decoded = 0usize;
    let mut r = &s[..];
    loop {
        let before = r.len();
        let frame = match ready(read_frame(&mut r, max)) {
            Ok(f) => f,
            Err(FrameError::Eof) => {
                assert_eq!(before, 0, "frame: Eof with {before} bytes left");
                break;
            }
            Err(FrameError::Truncated) => {
                assert!(before > 0, "frame: Truncated with nothing left");
                break;
            }
            Err(FrameError::Io(e)) => panic!("frame: I/O error reading memory: {e}"),
            Err(e) => {
                assert!(e.is_violation(), "frame: {e} is not a violation");
                break;
            }
        };
        check_frame(&frame, max);
        let h = frame.header;
        let ok = if h.is_response() {
            check_response(&h, frame.payload)
        } else {
            check_request(&h, frame.payload)
        };
        decoded += usize::from(ok);
    }
    if decoded > 0 {
        Outcome::Accepted
    } else {
        Outcome::Refused
    }
}

/// A frame as read: its payload matches its header, and written out again
/// it reads back the same.
fn check_frame(f: &Frame, max: usize) {
    let h = f.header;
    assert_eq!(h.len as usize, f.payload.len(), "frame: payload length");
    assert!(f.payload.len() <= max, "frame: payload over the limit");
    let out = OutFrame::with_version(
        h.version,
        h.opcode,
        h.flags,
        h.id,
        f.payload.clone(),
        Bytes::new(),
    )
    .unwrap_or_else(|e| panic!("frame: a frame read cannot be written: {e}"));
    let mut bytes = Vec::new();
    write_frame(&out, &mut bytes);
    let mut r = &bytes[..];
    match ready(read_frame(&mut r, max)) {
        Ok(again) => {
            assert_eq!(again.header, h, "frame: header round trip");
            assert_eq!(again.payload, f.payload, "frame: payload round trip");
            assert!(r.is_empty(), "frame: bytes left after a round trip");
        }
        Err(e) => panic!("frame: a frame written does not read back: {e}"),
    }
}

/// A request payload: decodes to a request (of the frame's opcode) that
/// round-trips, or a typed error. Returns whether it decoded.
fn check_request(h: &Header, payload: Bytes) -> bool {
    let traced = h.flags & FLAG_TRACE != 0;
    let Ok((req, ctx)) = Request::decode_traced(h.opcode, traced, payload) else {
        return false;
    };
    assert_eq!(req.opcode() as u8, h.opcode, "request: opcode");
    assert_eq!(ctx.is_some(), traced, "request: trace context");
    let (mut prefix, body) = req
        .encode()
        .unwrap_or_else(|e| panic!("request: {req:?} decoded but does not encode: {e}"));
    if let Some(ctx) = &ctx {
        prefix = with_trace_context(ctx, &prefix)
            .unwrap_or_else(|e| panic!("request: trace context {ctx:?} decoded but not sent: {e}"));
    }
    let mut again = prefix.to_vec();
    again.extend_from_slice(&body);
    match Request::decode_traced(h.opcode, traced, Bytes::from(again)) {
        Ok(back) => assert_eq!(back, (req, ctx), "request: round trip"),
        Err(e) => panic!("request: {req:?} encoded does not decode: {e}"),
    }
    true
}

/// A response payload: decodes to a response that round-trips, or a typed
/// error. Returns whether it decoded.
fn check_response(h: &Header, payload: Bytes) -> bool {
    let Some(op) = Opcode::from_u8(h.opcode) else {
        return false;
    };
    let Ok(resp) = Response::decode(op, h.flags, payload) else {
        return false;
    };
    let (flags, again) = resp
        .encode(op)
        .unwrap_or_else(|e| panic!("response: {resp:?} decoded but does not encode: {e}"));
    assert_ne!(flags & FLAG_RESPONSE, 0, "response: flags {flags:#x}");
    match Response::decode(op, flags, again) {
        Ok(back) => assert_eq!(back, resp, "response: round trip"),
        Err(e) => panic!("response: {resp:?} encoded does not decode: {e}"),
    }
    true
}

/// Fuzzes the handshake, one side at a time.
///
/// Server side (the stream is what a client sends): the server never
/// accepts (no input can know the random nonce's MAC); every refusal it
/// returns is the status it sent in its last RESULT frame; it sends a
/// CHALLENGE of 32 bytes only in a version it speaks. Accepted here means
/// the HELLO decoded and a CHALLENGE went out.
///
/// Client side (the stream is what a server sends; mode bits 2-3 choose
/// the version announced, 1 to 4): the client sends HELLO with its name,
/// answers a CHALLENGE with the right MAC (and from version 3 its epoch),
/// and succeeds only on CHALLENGE then RESULT ok.
pub fn handshake(data: &[u8]) -> Outcome {
    let (mode, s) = stream(data);
    if mode & CLIENT_SIDE != 0 {
        let version = MIN_PROTOCOL_VERSION + ((mode >> 2) & 3);
        client_side(&s, version.min(PROTOCOL_VERSION))
    } else {
        server_side(&s)
    }
}

fn server_side(s: &[u8]) -> Outcome {
    let token = ClusterToken::new(TOKEN);
    let mut rd = s;
    let mut out: Vec<u8> = Vec::new();
    let lookup = |name: &str| (name == REPLICA).then_some(());
    let result = ready(handshake::server(&mut rd, &mut out, &token, lookup));
    let sent = frames_in(&out);
    let challenged = sent
        .first()
        .is_some_and(|f| f.header.opcode == OP_CHALLENGE);
    for f in &sent {
        match f.header.opcode {
            OP_CHALLENGE => {
                assert_eq!(f.payload.len(), 32, "server: nonce length");
                let v = f.header.version;
                assert!(
                    (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&v),
                    "server: challenge in version {v}"
                );
            }
            OP_RESULT => assert!(!f.payload.is_empty(), "server: empty RESULT"),
            op => panic!("server: sent opcode {op:#04x} during the handshake"),
        }
    }
    match result {
        Ok(_) => panic!("server: accepted a peer that cannot know the nonce"),
        Err(ServerHandshakeError::Refused { status, reason }) => {
            let last = sent.last().filter(|f| f.header.opcode == OP_RESULT);
            let told = last.and_then(|f| f.payload.first().copied());
            assert_eq!(
                told,
                Some(status as u8),
                "server: refused ({reason}) but told"
            );
        }
        Err(ServerHandshakeError::Frame(FrameError::Io(e))) => {
            panic!("server: I/O error on memory streams: {e}")
        }
        Err(ServerHandshakeError::Frame(_)) => {}
    }
    if challenged {
        Outcome::Accepted
    } else {
        Outcome::Refused
    }
}

fn client_side(s: &[u8], version: u8) -> Outcome {
    let token = ClusterToken::new(TOKEN);
    let mut rd = s;
    let mut out: Vec<u8> = Vec::new();
    let result = ready(handshake::client(
        &mut rd, &mut out, &token, REPLICA, version, EPOCH,
    ));
    let sent = frames_in(&out);
    let received = frames_in(s);
    let hello = sent
        .first()
        .unwrap_or_else(|| panic!("client: no HELLO sent"));
    assert_eq!(hello.header.opcode, OP_HELLO, "client: first frame");
    assert_eq!(hello.header.version, version, "client: HELLO version");
    assert_eq!(&hello.payload[..], REPLICA.as_bytes(), "client: HELLO name");
    if let Some(auth) = sent.get(1) {
        assert_eq!(auth.header.opcode, OP_AUTH, "client: second frame");
        let challenge = received
            .first()
            .filter(|f| f.header.opcode == OP_CHALLENGE)
            .unwrap_or_else(|| panic!("client: sent AUTH without a CHALLENGE"));
        assert_eq!(
            auth.payload,
            expected_auth(&challenge.payload, version),
            "client: AUTH"
        );
    }
    assert!(sent.len() <= 2, "client: sent {} frames", sent.len());
    match result {
        Ok(()) => {
            let ok = received.len() >= 2
                && received[0].header.opcode == OP_CHALLENGE
                && received[1].header.opcode == OP_RESULT
                && received[1].payload.first() == Some(&0);
            assert!(ok, "client: accepted without CHALLENGE then RESULT ok");
            Outcome::Accepted
        }
        Err(_) => Outcome::Refused,
    }
}

/// The AUTH payload a client of `version` owes a CHALLENGE with `nonce`:
/// HMAC-SHA256(token, nonce || name [|| epoch LE]) [|| epoch LE], computed
/// here from the protocol description rather than the client's code.
fn expected_auth(nonce: &[u8], version: u8) -> Bytes {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(TOKEN.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(nonce);
    m.update(REPLICA.as_bytes());
    let with_epoch = version >= 3;
    if with_epoch {
        m.update(&EPOCH.to_le_bytes());
    }
    let mut v = m.finalize().into_bytes().to_vec();
    if with_epoch {
        v.extend_from_slice(&EPOCH.to_le_bytes());
    }
    Bytes::from(v)
}

/// Appends a frame's bytes to `out`.
pub(super) fn write_frame(f: &OutFrame, out: &mut Vec<u8>) {
    ready(f.write_to(out)).unwrap_or_else(|e| panic!("frame: writing to memory: {e}"));
}

/// The well-formed handshake frames at the start of `bytes`.
fn frames_in(bytes: &[u8]) -> Vec<Frame> {
    let mut r = bytes;
    let mut v = Vec::new();
    while let Ok(f) = ready(read_frame(&mut r, HANDSHAKE_MAX_PAYLOAD)) {
        v.push(f);
    }
    v
}
