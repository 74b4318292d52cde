//! NBD targets: the fuzzer's bytes are what a client sends; the real
//! connection code (`nbd::run_connection`: handshake, then transmission)
//! reads them from an in-memory stream and its replies are captured and
//! checked against the protocol.
//!
//! * [`handshake`]: the whole stream is the client's — flags, options
//!   (EXPORT_NAME, INFO, GO, LIST, ABORT, anything), and whatever follows a
//!   successful GO is transmission.
//! * [`transmission`]: the harness negotiates the export with a fixed GO
//!   first, so every byte of the input is a request header or payload.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use super::{Capture, Outcome, be_u16, be_u32, be_u64, block_on};
use crate::nbd::memory::{MemoryCatalog, MemoryDevice};
use crate::nbd::run_connection;
use crate::nbd::wire::*;

/// The one export's name and size (small: every input gets a new device).
const EXPORT: &str = "fuzz";
const SIZE: u64 = 256 * 1024;

/// The server's greeting: NBDMAGIC, IHAVEOPT, handshake flags.
const GREETING_LEN: usize = 18;
/// An option reply's header: magic, option, type, length.
const OPTION_REPLY_LEN: usize = 20;

/// Runs one server connection over `input` and returns what it wrote.
fn serve(input: Vec<u8>) -> Vec<u8> {
    let catalog = Arc::new(MemoryCatalog::new().with(EXPORT, Arc::new(MemoryDevice::new(SIZE))));
    let out = Capture::default();
    let writer = out.clone();
    block_on(run_connection(
        Cursor::new(input),
        writer,
        "fuzz".into(),
        catalog,
        Duration::from_secs(10),
    ));
    out.bytes()
}

/// Fuzzes option haggling (and, after a successful GO or EXPORT_NAME, the
/// requests that follow).
///
/// Properties: the server greets; every reply is a complete, well-formed
/// option reply of a known type echoing an option; an INFO_EXPORT reply
/// carries the export's size and flags; transmission starts only after an
/// ACK to GO or an EXPORT_NAME reply with the export's size, and what follows
/// is well-formed simple replies.
pub fn handshake(data: &[u8]) -> Outcome {
    let out = serve(data.to_vec());
    match check_handshake(&out) {
        Ok(Some(rest)) => {
            check_replies(rest, None);
            Outcome::Accepted
        }
        Ok(None) => Outcome::Refused,
        Err(why) => panic!("nbd handshake: {why}; input {data:02x?}"),
    }
}

/// The fixed client side of the handshake that [`transmission`] puts in
/// front of its input: fixed newstyle without zeroes, then GO for the export.
fn negotiation() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES).to_be_bytes());
    let mut go = Vec::new();
    go.extend_from_slice(&(EXPORT.len() as u32).to_be_bytes());
    go.extend_from_slice(EXPORT.as_bytes());
    go.extend_from_slice(&0u16.to_be_bytes());
    b.extend_from_slice(&IHAVEOPT.to_be_bytes());
    b.extend_from_slice(&NBD_OPT_GO.to_be_bytes());
    b.extend_from_slice(&(go.len() as u32).to_be_bytes());
    b.extend_from_slice(&go);
    b
}

/// Fuzzes transmission requests: headers, flags, ranges and write payloads.
///
/// Properties: every reply is a simple reply with a valid NBD error value
/// and the cookie of a request that was sent; a successful READ reply
/// carries exactly the bytes asked for; when the stream ends cleanly (EOF
/// between requests, a write payload cut short, NBD_CMD_DISC) every request
/// read was answered, and after a protocol violation no more than that.
pub fn transmission(data: &[u8]) -> Outcome {
    let mut input = negotiation();
    input.extend_from_slice(data);
    let out = serve(input);
    let rest = match check_handshake(&out) {
        Ok(Some(rest)) => rest,
        Ok(None) => panic!("nbd transmission: the fixed GO did not start transmission"),
        Err(why) => panic!("nbd transmission: handshake: {why}"),
    };
    let expected = model_requests(data);
    match check_replies(rest, Some(&expected)) {
        0 => Outcome::Refused,
        _ => Outcome::Accepted,
    }
}

/// Checks the greeting and option replies. Returns the output after the
/// handshake when transmission started, `None` when it did not.
fn check_handshake(out: &[u8]) -> Result<Option<&[u8]>, String> {
    if out.len() < GREETING_LEN {
        return Err(format!("greeting of {} bytes", out.len()));
    }
    if be_u64(out, 0) != NBDMAGIC || be_u64(out, 8) != IHAVEOPT {
        return Err("greeting without NBDMAGIC/IHAVEOPT".into());
    }
    let mut rest = &out[GREETING_LEN..];
    while !rest.is_empty() {
        if rest.len() < 8 || be_u64(rest, 0) != OPTION_REPLY_MAGIC {
            // Only an EXPORT_NAME reply has no magic: size, then flags
            // (the 124 zero bytes are not sent when the client says so).
            if rest.len() < 10 || be_u64(rest, 0) != SIZE || be_u16(rest, 8) != TRANSMISSION_FLAGS {
                return Err(format!(
                    "not an option reply: {:02x?}",
                    &rest[..rest.len().min(32)]
                ));
            }
            let zeroes = rest.len() >= 134 && rest[10..134].iter().all(|b| *b == 0);
            return Ok(Some(&rest[if zeroes { 134 } else { 10 }..]));
        }
        if rest.len() < OPTION_REPLY_LEN {
            return Err("truncated option reply header".into());
        }
        let option = be_u32(rest, 8);
        let kind = be_u32(rest, 12);
        let len = be_u32(rest, 16) as usize;
        let Some(data) = rest.get(OPTION_REPLY_LEN..OPTION_REPLY_LEN + len) else {
            return Err(format!("option reply of {len} bytes is truncated"));
        };
        match kind {
            NBD_REP_ACK if option == NBD_OPT_GO => {
                return Ok(Some(&rest[OPTION_REPLY_LEN + len..]));
            }
            NBD_REP_ACK | NBD_REP_ERR_UNSUP | NBD_REP_ERR_POLICY | NBD_REP_ERR_INVALID
            | NBD_REP_ERR_UNKNOWN | NBD_REP_ERR_TOO_BIG => {}
            NBD_REP_SERVER if option == NBD_OPT_LIST => {
                let name_len = data.get(..4).map(|b| be_u32(b, 0) as usize);
                if name_len != Some(data.len().saturating_sub(4)) {
                    return Err("NBD_REP_SERVER with an inconsistent name length".into());
                }
            }
            NBD_REP_INFO if option == NBD_OPT_GO || option == NBD_OPT_INFO => {
                check_info(data)?;
            }
            _ => return Err(format!("reply type {kind:#x} to option {option}")),
        }
        rest = &rest[OPTION_REPLY_LEN + len..];
    }
    Ok(None)
}

/// Checks one NBD_REP_INFO payload.
fn check_info(data: &[u8]) -> Result<(), String> {
    if data.len() < 2 {
        return Err("NBD_REP_INFO without a type".into());
    }
    match be_u16(data, 0) {
        NBD_INFO_EXPORT
            if data.len() == 12
                && be_u64(data, 2) == SIZE
                && be_u16(data, 10) == TRANSMISSION_FLAGS => {}
        NBD_INFO_BLOCK_SIZE if data.len() == 14 => {}
        NBD_INFO_NAME if std::str::from_utf8(&data[2..]) == Ok(EXPORT) => {}
        t => {
            return Err(format!(
                "NBD_REP_INFO of type {t} with {} bytes",
                data.len()
            ));
        }
    }
    Ok(())
}

/// What the client's request stream should get, from the harness's own
/// reading of it (independent of the server's parser).
#[derive(Debug, Default)]
struct Expected {
    /// For each cookie sent, the data length of each request with it (the
    /// READ length; 0 for other commands).
    cookies: HashMap<u64, Vec<u32>>,
    /// Requests the server reads in full and must answer.
    requests: usize,
    /// The stream ends without a protocol violation: every request read is
    /// answered (otherwise replies still queued may be dropped).
    clean_end: bool,
}

/// Reads `data` as a sequence of requests, the way the protocol frames them.
fn model_requests(data: &[u8]) -> Expected {
    let mut e = Expected::default();
    let mut rest = data;
    loop {
        if rest.len() < REQUEST_LEN {
            e.clean_end = true; // EOF (possibly mid-header): nothing more to answer
            return e;
        }
        let (magic, kind) = (be_u32(rest, 0), be_u16(rest, 6));
        let (cookie, len) = (be_u64(rest, 8), be_u32(rest, 24));
        if magic != NBD_REQUEST_MAGIC {
            return e; // out of sync: hard disconnect
        }
        rest = &rest[REQUEST_LEN..];
        if kind == NBD_CMD_DISC {
            e.clean_end = true;
            return e;
        }
        if kind == NBD_CMD_WRITE {
            if len > MAX_BLOCK_SIZE {
                return e; // too large to swallow: hard disconnect
            }
            let Some(after) = rest.get(len as usize..) else {
                e.clean_end = true; // hung up mid-payload: not answered
                return e;
            };
            rest = after;
        }
        e.requests += 1;
        let data_len = if kind == NBD_CMD_READ { len } else { 0 };
        e.cookies.entry(cookie).or_default().push(data_len);
    }
}

/// The error values a server may send.
const NBD_ERRORS: [u32; 9] = [
    0,
    NBD_EPERM,
    NBD_EIO,
    NBD_ENOMEM,
    NBD_EINVAL,
    NBD_ENOSPC,
    NBD_EOVERFLOW,
    NBD_ENOTSUP,
    NBD_ESHUTDOWN,
];

/// Checks the simple replies in `out`; with `expected`, also that they
/// answer the requests sent. Returns how many replies were checked.
fn check_replies(mut out: &[u8], expected: Option<&Expected>) -> usize {
    let mut pending = expected.map(|e| e.cookies.clone());
    let mut replies = 0;
    while !out.is_empty() {
        assert!(
            out.len() >= SIMPLE_REPLY_LEN,
            "nbd: truncated reply header {out:02x?}"
        );
        assert_eq!(be_u32(out, 0), NBD_SIMPLE_REPLY_MAGIC, "nbd: reply magic");
        let error = be_u32(out, 4);
        let cookie = be_u64(out, 8);
        assert!(NBD_ERRORS.contains(&error), "nbd: error value {error}");
        out = &out[SIMPLE_REPLY_LEN..];
        replies += 1;
        let Some(pending) = pending.as_mut() else {
            // Without the request stream, the data length is unknown: only
            // the first reply header can be checked.
            return replies;
        };
        let lens = pending.get_mut(&cookie);
        let Some(lens) = lens.filter(|l| !l.is_empty()) else {
            panic!("nbd: reply with cookie {cookie:#x} that no request (left) carries");
        };
        if lens.iter().any(|l| *l != lens[0]) {
            // The same cookie on requests with different data lengths: which
            // one this reply answers, and so the rest of the stream, is
            // ambiguous. Nothing more to check.
            return replies;
        }
        let read_len = lens.remove(0) as usize;
        let data_len = if error == 0 { read_len } else { 0 };
        assert!(
            out.len() >= data_len,
            "nbd: READ reply with {} of {data_len} bytes",
            out.len()
        );
        out = &out[data_len..];
    }
    if let Some(e) = expected {
        if e.clean_end {
            assert_eq!(replies, e.requests, "nbd: requests left unanswered");
        } else {
            assert!(replies <= e.requests, "nbd: more replies than requests");
        }
    }
    replies
}
