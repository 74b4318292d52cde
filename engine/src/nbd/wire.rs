//! NBD wire format: magic numbers, flags, option and request parsing, reply
//! encoding. Everything here is pure (no I/O) so it can be fuzzed directly.
//!
//! All integers on the wire are big-endian.

use thiserror::Error;

// ---------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------

/// `NBDMAGIC`, the first thing the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`, sent by the server after `NBDMAGIC` and by the client before every option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic that starts every fixed-newstyle option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;

/// Handshake flag: the server speaks fixed newstyle.
pub const NBD_FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag: the server can omit the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const NBD_FLAG_NO_ZEROES: u16 = 1 << 1;

/// Client flag: the client speaks fixed newstyle.
pub const NBD_FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: the client does not want the 124 zero bytes.
pub const NBD_FLAG_C_NO_ZEROES: u32 = 1 << 1;
/// Every client flag we understand; anything else ends the session.
pub const KNOWN_CLIENT_FLAGS: u32 = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;

/// Options.
pub const NBD_OPT_EXPORT_NAME: u32 = 1;
pub const NBD_OPT_ABORT: u32 = 2;
pub const NBD_OPT_LIST: u32 = 3;
pub const NBD_OPT_STARTTLS: u32 = 5;
pub const NBD_OPT_INFO: u32 = 6;
pub const NBD_OPT_GO: u32 = 7;
pub const NBD_OPT_STRUCTURED_REPLY: u32 = 8;

/// Option reply types.
pub const NBD_REP_ACK: u32 = 1;
pub const NBD_REP_SERVER: u32 = 2;
pub const NBD_REP_INFO: u32 = 3;
/// Set in every option reply type that is an error.
pub const NBD_REP_ERR: u32 = 1 << 31;
pub const NBD_REP_ERR_UNSUP: u32 = NBD_REP_ERR | 1;
pub const NBD_REP_ERR_POLICY: u32 = NBD_REP_ERR | 2;
pub const NBD_REP_ERR_INVALID: u32 = NBD_REP_ERR | 3;
pub const NBD_REP_ERR_UNKNOWN: u32 = NBD_REP_ERR | 6;
pub const NBD_REP_ERR_TOO_BIG: u32 = NBD_REP_ERR | 9;

/// Information types for `NBD_OPT_INFO` / `NBD_OPT_GO`.
pub const NBD_INFO_EXPORT: u16 = 0;
pub const NBD_INFO_NAME: u16 = 1;
pub const NBD_INFO_DESCRIPTION: u16 = 2;
pub const NBD_INFO_BLOCK_SIZE: u16 = 3;

// ---------------------------------------------------------------------------
// Transmission
// ---------------------------------------------------------------------------

/// Transmission flags.
pub const NBD_FLAG_HAS_FLAGS: u16 = 1 << 0;
pub const NBD_FLAG_READ_ONLY: u16 = 1 << 1;
pub const NBD_FLAG_SEND_FLUSH: u16 = 1 << 2;
pub const NBD_FLAG_SEND_FUA: u16 = 1 << 3;
pub const NBD_FLAG_ROTATIONAL: u16 = 1 << 4;
pub const NBD_FLAG_SEND_TRIM: u16 = 1 << 5;
pub const NBD_FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const NBD_FLAG_SEND_DF: u16 = 1 << 7;
pub const NBD_FLAG_CAN_MULTI_CONN: u16 = 1 << 8;
pub const NBD_FLAG_SEND_FAST_ZERO: u16 = 1 << 11;

/// The transmission flags every export is served with.
///
/// `NBD_FLAG_CAN_MULTI_CONN`: the contract of [`crate::device::ExportDevice`]
/// is that `flush` makes *every* completed write durable, whichever
/// connection (or other frontend) issued it, and that there is no
/// per-connection cache: a read on any connection sees every write that has
/// completed on any other. So the effects of `NBD_CMD_FLUSH` and
/// `NBD_CMD_FLAG_FUA` are visible across all connections when we reply,
/// which is exactly what the flag promises.
///
/// `NBD_FLAG_SEND_FAST_ZERO` is deliberately not set, nor `SEND_DF` (no
/// structured replies) nor `READ_ONLY`.
pub const TRANSMISSION_FLAGS: u16 = NBD_FLAG_HAS_FLAGS
    | NBD_FLAG_SEND_FLUSH
    | NBD_FLAG_SEND_FUA
    | NBD_FLAG_SEND_TRIM
    | NBD_FLAG_SEND_WRITE_ZEROES
    | NBD_FLAG_CAN_MULTI_CONN;

/// Request magic.
pub const NBD_REQUEST_MAGIC: u32 = 0x2560_9513;
/// Simple reply magic.
pub const NBD_SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

/// Commands.
pub const NBD_CMD_READ: u16 = 0;
pub const NBD_CMD_WRITE: u16 = 1;
pub const NBD_CMD_DISC: u16 = 2;
pub const NBD_CMD_FLUSH: u16 = 3;
pub const NBD_CMD_TRIM: u16 = 4;
pub const NBD_CMD_CACHE: u16 = 5;
pub const NBD_CMD_WRITE_ZEROES: u16 = 6;
pub const NBD_CMD_BLOCK_STATUS: u16 = 7;

/// Command flags.
pub const NBD_CMD_FLAG_FUA: u16 = 1 << 0;
pub const NBD_CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub const NBD_CMD_FLAG_DF: u16 = 1 << 2;
pub const NBD_CMD_FLAG_REQ_ONE: u16 = 1 << 3;
pub const NBD_CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

/// NBD error values (protocol values, not host errnos).
pub const NBD_EPERM: u32 = 1;
pub const NBD_EIO: u32 = 5;
pub const NBD_ENOMEM: u32 = 12;
pub const NBD_EINVAL: u32 = 22;
pub const NBD_ENOSPC: u32 = 28;
pub const NBD_EOVERFLOW: u32 = 75;
pub const NBD_ENOTSUP: u32 = 95;
pub const NBD_ESHUTDOWN: u32 = 108;

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

/// Advertised minimum block size. The device accepts unaligned offsets and
/// lengths (it does its own read-modify-write), so we advertise the protocol
/// default of 1 and never reject a request for misalignment.
pub const MIN_BLOCK_SIZE: u32 = 1;
/// Advertised preferred block size: requests aligned to this avoid
/// read-modify-write in the device.
pub const PREFERRED_BLOCK_SIZE: u32 = 4096;
/// Advertised (and enforced) maximum length of READ and WRITE payloads.
pub const MAX_BLOCK_SIZE: u32 = 32 * 1024 * 1024;
/// Longest option payload we are willing to read; longer ones end the
/// session without being allocated.
pub const MAX_OPTION_LEN: u32 = 64 * 1024;
/// Longest string (export name) the protocol allows.
pub const MAX_STRING_LEN: usize = 4096;

// The spec's constraints on advertised block sizes: minimum a power of two
// ≤ 64 KiB; preferred a power of two ≥ max(minimum, 512); maximum a multiple
// of the minimum and ≥ preferred.
const _: () = assert!(MIN_BLOCK_SIZE.is_power_of_two() && MIN_BLOCK_SIZE <= 65536);
const _: () = assert!(PREFERRED_BLOCK_SIZE.is_power_of_two() && PREFERRED_BLOCK_SIZE >= 512);
const _: () = assert!(PREFERRED_BLOCK_SIZE >= MIN_BLOCK_SIZE);
const _: () = assert!(
    MAX_BLOCK_SIZE.is_multiple_of(MIN_BLOCK_SIZE) && MAX_BLOCK_SIZE >= PREFERRED_BLOCK_SIZE
);

/// Size of a request header on the wire.
pub const REQUEST_LEN: usize = 28;
/// Size of a simple reply header on the wire.
pub const SIMPLE_REPLY_LEN: usize = 16;
/// Size of an option header (magic, option, length) on the wire.
pub const OPTION_HEADER_LEN: usize = 16;

/// Maps a host errno (as returned by [`crate::device::DeviceError::errno`])
/// to an NBD error value. Anything the protocol has no name for becomes EIO
/// (the server must only send the values the protocol defines).
pub fn nbd_error_from_errno(errno: i32) -> u32 {
    match errno {
        libc::EPERM | libc::EROFS | libc::EACCES => NBD_EPERM,
        libc::EIO => NBD_EIO,
        libc::ENOMEM => NBD_ENOMEM,
        libc::EINVAL => NBD_EINVAL,
        libc::ENOSPC | libc::EDQUOT | libc::EFBIG => NBD_ENOSPC,
        libc::EOVERFLOW => NBD_EOVERFLOW,
        libc::ENOTSUP => NBD_ENOTSUP,
        libc::ESHUTDOWN => NBD_ESHUTDOWN,
        _ => NBD_EIO,
    }
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// Why a client message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("bad magic {0:#x}")]
    BadMagic(u64),
    #[error("option {option} too long: {len} bytes")]
    OptionTooLong { option: u32, len: u32 },
    #[error("malformed option data: {0}")]
    Malformed(&'static str),
}

fn be_u16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[at..at + 2]);
    u16::from_be_bytes(a)
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// A parsed option header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    pub option: u32,
    pub len: u32,
}

/// Parses an option header; refuses a bad magic and absurd lengths (the
/// caller has not allocated anything for the payload yet).
pub fn parse_option_header(b: &[u8; OPTION_HEADER_LEN]) -> Result<OptionHeader, WireError> {
    let magic = be_u64(b, 0);
    if magic != IHAVEOPT {
        return Err(WireError::BadMagic(magic));
    }
    let option = be_u32(b, 8);
    let len = be_u32(b, 12);
    if len > MAX_OPTION_LEN {
        return Err(WireError::OptionTooLong { option, len });
    }
    Ok(OptionHeader { option, len })
}

/// The payload of `NBD_OPT_INFO` / `NBD_OPT_GO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    pub name: String,
    pub requests: Vec<u16>,
}

/// Parses an export name (`NBD_OPT_EXPORT_NAME` payload or the name inside
/// INFO/GO): UTF-8, no NUL, at most 4096 bytes.
pub fn parse_export_name(b: &[u8]) -> Result<String, WireError> {
    if b.len() > MAX_STRING_LEN {
        return Err(WireError::Malformed("export name longer than 4096 bytes"));
    }
    if b.contains(&0) {
        return Err(WireError::Malformed("export name contains NUL"));
    }
    match std::str::from_utf8(b) {
        Ok(s) => Ok(s.to_owned()),
        Err(_) => Err(WireError::Malformed("export name is not UTF-8")),
    }
}

/// Parses the payload of `NBD_OPT_INFO` / `NBD_OPT_GO`:
/// u32 name length, name, u16 count, count × u16 information requests.
pub fn parse_info_request(b: &[u8]) -> Result<InfoRequest, WireError> {
    if b.len() < 6 {
        return Err(WireError::Malformed("INFO/GO payload shorter than 6 bytes"));
    }
    let name_len = be_u32(b, 0) as usize;
    if name_len > b.len() - 6 {
        return Err(WireError::Malformed(
            "INFO/GO name length exceeds option length",
        ));
    }
    let name = parse_export_name(&b[4..4 + name_len])?;
    let rest = &b[4 + name_len..];
    let count = be_u16(rest, 0) as usize;
    let list = &rest[2..];
    if list.len() != count * 2 {
        return Err(WireError::Malformed(
            "INFO/GO request count does not match option length",
        ));
    }
    let requests = list
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    Ok(InfoRequest { name, requests })
}

/// A transmission-phase request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub offset: u64,
    pub len: u32,
}

/// Parses a request header; a bad magic means the stream is out of sync.
pub fn parse_request(b: &[u8; REQUEST_LEN]) -> Result<Request, WireError> {
    let magic = be_u32(b, 0);
    if magic != NBD_REQUEST_MAGIC {
        return Err(WireError::BadMagic(u64::from(magic)));
    }
    Ok(Request {
        flags: be_u16(b, 4),
        kind: be_u16(b, 6),
        cookie: be_u64(b, 8),
        offset: be_u64(b, 16),
        len: be_u32(b, 24),
    })
}

/// Encodes a request header (for tests and tools).
pub fn encode_request(r: &Request) -> [u8; REQUEST_LEN] {
    let mut b = [0u8; REQUEST_LEN];
    b[0..4].copy_from_slice(&NBD_REQUEST_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&r.flags.to_be_bytes());
    b[6..8].copy_from_slice(&r.kind.to_be_bytes());
    b[8..16].copy_from_slice(&r.cookie.to_be_bytes());
    b[16..24].copy_from_slice(&r.offset.to_be_bytes());
    b[24..28].copy_from_slice(&r.len.to_be_bytes());
    b
}

/// Encodes a simple reply header.
pub fn encode_simple_reply(error: u32, cookie: u64) -> [u8; SIMPLE_REPLY_LEN] {
    let mut b = [0u8; SIMPLE_REPLY_LEN];
    b[0..4].copy_from_slice(&NBD_SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b
}

/// Appends an option reply (magic, option, type, length, data) to `out`.
pub fn put_option_reply(out: &mut Vec<u8>, option: u32, reply: u32, data: &[u8]) {
    out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply.to_be_bytes());
    // Replies we build are small (names ≤ 4096 bytes); saturate rather than panic.
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
}

/// The `NBD_INFO_EXPORT` payload: type, size, transmission flags.
pub fn info_export(size: u64, flags: u16) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0..2].copy_from_slice(&NBD_INFO_EXPORT.to_be_bytes());
    b[2..10].copy_from_slice(&size.to_be_bytes());
    b[10..12].copy_from_slice(&flags.to_be_bytes());
    b
}

/// The `NBD_INFO_BLOCK_SIZE` payload with our advertised constraints.
pub fn info_block_size() -> [u8; 14] {
    let mut b = [0u8; 14];
    b[0..2].copy_from_slice(&NBD_INFO_BLOCK_SIZE.to_be_bytes());
    b[2..6].copy_from_slice(&MIN_BLOCK_SIZE.to_be_bytes());
    b[6..10].copy_from_slice(&PREFERRED_BLOCK_SIZE.to_be_bytes());
    b[10..14].copy_from_slice(&MAX_BLOCK_SIZE.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn info_payload(name: &[u8], reqs: &[u16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(name.len() as u32).to_be_bytes());
        v.extend_from_slice(name);
        v.extend_from_slice(&(reqs.len() as u16).to_be_bytes());
        for r in reqs {
            v.extend_from_slice(&r.to_be_bytes());
        }
        v
    }

    #[test]
    fn info_request_roundtrip() {
        let p = info_payload(b"vol1", &[NBD_INFO_BLOCK_SIZE, NBD_INFO_NAME]);
        let r = parse_info_request(&p).unwrap();
        assert_eq!(r.name, "vol1");
        assert_eq!(r.requests, vec![NBD_INFO_BLOCK_SIZE, NBD_INFO_NAME]);
        let empty = parse_info_request(&info_payload(b"", &[])).unwrap();
        assert_eq!(empty.name, "");
        assert!(empty.requests.is_empty());
    }

    #[test]
    fn info_request_rejects_inconsistent_lengths() {
        let mut p = info_payload(b"vol1", &[1]);
        p.push(0); // trailing byte
        assert!(parse_info_request(&p).is_err());
        let p = info_payload(b"vol1", &[1, 2]);
        assert!(parse_info_request(&p[..p.len() - 2]).is_err()); // count says 2, one present
        let mut p = info_payload(b"vol1", &[]);
        p[0..4].copy_from_slice(&u32::MAX.to_be_bytes()); // name length absurd
        assert!(parse_info_request(&p).is_err());
        assert!(parse_info_request(&[0, 0, 0]).is_err());
        assert!(parse_info_request(&info_payload(b"a\0b", &[])).is_err());
        assert!(parse_info_request(&info_payload(&[0xff, 0xfe], &[])).is_err());
        assert!(parse_info_request(&info_payload(&[b'x'; 4097], &[])).is_err());
    }

    #[test]
    fn option_header_limits() {
        let mut h = [0u8; OPTION_HEADER_LEN];
        h[0..8].copy_from_slice(&IHAVEOPT.to_be_bytes());
        h[8..12].copy_from_slice(&NBD_OPT_GO.to_be_bytes());
        h[12..16].copy_from_slice(&MAX_OPTION_LEN.to_be_bytes());
        assert_eq!(
            parse_option_header(&h),
            Ok(OptionHeader {
                option: NBD_OPT_GO,
                len: MAX_OPTION_LEN
            })
        );
        h[12..16].copy_from_slice(&(MAX_OPTION_LEN + 1).to_be_bytes());
        assert_eq!(
            parse_option_header(&h),
            Err(WireError::OptionTooLong {
                option: NBD_OPT_GO,
                len: MAX_OPTION_LEN + 1
            })
        );
        h[0] ^= 1;
        assert!(matches!(
            parse_option_header(&h),
            Err(WireError::BadMagic(_))
        ));
    }

    #[test]
    fn request_roundtrip_and_bad_magic() {
        let r = Request {
            flags: 3,
            kind: NBD_CMD_WRITE,
            cookie: 0xdead_beef_0bad_f00d,
            offset: 1 << 40,
            len: 4096,
        };
        let b = encode_request(&r);
        assert_eq!(parse_request(&b), Ok(r));
        let mut bad = b;
        bad[3] ^= 0x80;
        assert!(parse_request(&bad).is_err());
    }

    #[test]
    fn errno_mapping() {
        use crate::device::DeviceError;
        let m = |e: DeviceError| nbd_error_from_errno(e.errno());
        assert_eq!(m(DeviceError::Io("x".into())), NBD_EIO);
        assert_eq!(m(DeviceError::InvalidArgument("x".into())), NBD_EINVAL);
        assert_eq!(m(DeviceError::NoSpace("x".into())), NBD_ENOSPC);
        assert_eq!(m(DeviceError::NotPermitted("x".into())), NBD_EPERM);
        assert_eq!(nbd_error_from_errno(libc::ENOMEM), NBD_ENOMEM);
        assert_eq!(nbd_error_from_errno(libc::EOVERFLOW), NBD_EOVERFLOW);
        assert_eq!(nbd_error_from_errno(libc::ESHUTDOWN), NBD_ESHUTDOWN);
        assert_eq!(nbd_error_from_errno(libc::EDQUOT), NBD_ENOSPC);
        assert_eq!(nbd_error_from_errno(libc::EBADF), NBD_EIO);
        assert_eq!(nbd_error_from_errno(-1), NBD_EIO);
    }

    proptest! {
        #[test]
        fn info_request_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_info_request(&b);
        }

        #[test]
        fn info_request_valid_roundtrips(
            name in "[a-zA-Z0-9_.-]{0,64}",
            reqs in proptest::collection::vec(any::<u16>(), 0..20),
        ) {
            let p = info_payload(name.as_bytes(), &reqs);
            let r = parse_info_request(&p).unwrap();
            prop_assert_eq!(r.name, name);
            prop_assert_eq!(r.requests, reqs);
            // Any truncation is an error, never a panic.
            for cut in 0..p.len() {
                prop_assert!(parse_info_request(&p[..cut]).is_err());
            }
        }

        #[test]
        fn option_header_never_panics(b in any::<[u8; OPTION_HEADER_LEN]>()) {
            if let Ok(h) = parse_option_header(&b) {
                prop_assert!(h.len <= MAX_OPTION_LEN);
            }
        }

        #[test]
        fn request_parse_never_panics(b in any::<[u8; REQUEST_LEN]>()) {
            match parse_request(&b) {
                Ok(r) => prop_assert_eq!(encode_request(&r), b),
                Err(_) => prop_assert_ne!(&b[0..4], &NBD_REQUEST_MAGIC.to_be_bytes()[..]),
            }
        }
    }
}
