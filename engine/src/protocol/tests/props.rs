//! Property tests of the frame reader and the message decoders.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;

use super::super::frame::{
    FIRST_CHUNK, FLAG_ERROR, FLAG_RESPONSE, FLAG_TRACE, Frame, FrameError, HANDSHAKE_MAX_PAYLOAD,
    HEADER_LEN, Header, MAX_FRAME_PAYLOAD, OutFrame, PROTOCOL_VERSION, read_frame,
};
use super::super::message::{Opcode, Request, Response};
use super::alloc::largest_allocation;
use crate::replica::{
    ChainProblem, Checksum, ErrorKind, Extent, LayerInfo, ReplicaInfo, VerifyReport,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// Reads one frame from `bytes` with limit `max`; also reports the largest
/// allocation made while doing so.
fn read_from(
    rt: &tokio::runtime::Runtime,
    bytes: &[u8],
    max: usize,
) -> (Result<Frame, FrameError>, usize) {
    largest_allocation(|| {
        let mut r = bytes;
        rt.block_on(read_frame(&mut r, max))
    })
}

fn encode_header(version: u8, opcode: u8, flags: u16, id: u64, len: u32) -> [u8; HEADER_LEN] {
    Header {
        version,
        opcode,
        flags,
        id,
        len,
    }
    .encode()
}

// ---- strategies -----------------------------------------------------------

fn arb_text() -> impl Strategy<Value = String> {
    // Any Unicode, to exercise JSON escaping.
    ".{0,16}"
}

fn arb_layer_name() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9][a-z0-9._-]{0,30}", ".{0,40}"]
}

fn arb_data() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..2048).prop_map(Bytes::from)
}

fn arb_labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(arb_text(), arb_text(), 0..4)
}

fn arb_checksum() -> impl Strategy<Value = Checksum> {
    (arb_text(), "[0-9a-f]{0,16}").prop_map(|(method, value)| Checksum { method, value })
}

fn arb_layer() -> impl Strategy<Value = LayerInfo> {
    (
        arb_layer_name(),
        prop::option::of(arb_layer_name()),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
        arb_labels(),
        any::<bool>(),
        prop::option::of(arb_checksum()),
        any::<u64>(),
    )
        .prop_map(
            |(
                name,
                parent,
                size,
                created_unix,
                user_created,
                labels,
                read_only,
                checksum,
                allocated_bytes,
            )| {
                LayerInfo {
                    name,
                    parent,
                    size,
                    created_unix,
                    user_created,
                    labels,
                    read_only,
                    checksum,
                    allocated_bytes,
                }
            },
        )
}

fn arb_layers() -> impl Strategy<Value = Vec<LayerInfo>> {
    prop::collection::vec(arb_layer(), 0..4)
}

pub(super) fn arb_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Ping),
        (any::<u64>(), any::<u32>()).prop_map(|(offset, len)| Request::Read { offset, len }),
        (any::<u64>(), arb_data()).prop_map(|(offset, data)| Request::Write { offset, data }),
        (any::<u64>(), any::<u64>()).prop_map(|(offset, len)| Request::Trim { offset, len }),
        (any::<u64>(), any::<u64>()).prop_map(|(offset, len)| Request::WriteZeroes { offset, len }),
        Just(Request::Flush),
        Just(Request::Info),
        Just(Request::BumpGeneration),
        (arb_layer_name(), any::<bool>(), arb_labels()).prop_map(|(name, user_created, labels)| {
            Request::Snapshot {
                name,
                user_created,
                labels,
            }
        }),
        arb_layer_name().prop_map(|name| Request::RemoveSnapshot { name }),
        arb_layer_name().prop_map(|name| Request::Revert { name }),
        Just(Request::Verify),
        arb_layer_name().prop_map(|layer| Request::LayerExtents { layer }),
        (arb_layer_name(), any::<u64>(), any::<u32>())
            .prop_map(|(layer, offset, len)| Request::ReadLayer { layer, offset, len }),
        arb_layer_name().prop_map(|layer| Request::LayerChecksum { layer }),
        arb_layer().prop_map(|info| Request::StageLayer { info }),
        (arb_layer_name(), any::<u64>(), arb_data()).prop_map(|(layer, offset, data)| {
            Request::WriteStaged {
                layer,
                offset,
                data,
            }
        }),
        arb_layers().prop_map(|layers| Request::InstallChain { layers }),
        any::<u64>().prop_map(|revision| Request::SetRevision { revision }),
        any::<u64>().prop_map(|generation| Request::JoinGeneration { generation }),
    ]
}

fn arb_opcode() -> impl Strategy<Value = Opcode> {
    prop::sample::select(Opcode::ALL.to_vec())
}

fn arb_error_kind() -> impl Strategy<Value = ErrorKind> {
    prop::sample::select(vec![
        ErrorKind::InvalidArgument,
        ErrorKind::Io,
        ErrorKind::NoSpace,
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::Corrupt,
        ErrorKind::StaleEpoch,
    ])
}

fn arb_info() -> impl Strategy<Value = ReplicaInfo> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        arb_layers(),
        any::<bool>(),
        (any::<u64>(), any::<u64>()),
    )
        .prop_map(
            |(size, revision, generation, chain, direct_io, (epoch, in_sync_generation))| {
                ReplicaInfo {
                    size,
                    revision,
                    epoch,
                    generation,
                    in_sync_generation,
                    chain,
                    direct_io,
                }
            },
        )
}

fn arb_verify() -> impl Strategy<Value = VerifyReport> {
    (
        any::<usize>(),
        prop::collection::vec(
            (arb_layer_name(), arb_text(), arb_text(), arb_text()).prop_map(
                |(layer, file, kind, detail)| ChainProblem {
                    layer,
                    file: file.into(),
                    kind,
                    detail,
                },
            ),
            0..3,
        ),
    )
        .prop_map(|(layers_checked, problems)| VerifyReport {
            layers_checked,
            problems,
        })
}

/// A response together with the opcode of a request it can answer.
fn arb_response() -> impl Strategy<Value = (Opcode, Response)> {
    let done_ops = vec![
        Opcode::Ping,
        Opcode::Write,
        Opcode::Trim,
        Opcode::WriteZeroes,
        Opcode::Flush,
        Opcode::RemoveSnapshot,
        Opcode::Revert,
        Opcode::StageLayer,
        Opcode::WriteStaged,
        Opcode::InstallChain,
        Opcode::SetRevision,
        Opcode::JoinGeneration,
    ];
    prop_oneof![
        prop::sample::select(done_ops).prop_map(|op| (op, Response::Done)),
        (
            prop::sample::select(vec![Opcode::Read, Opcode::ReadLayer]),
            arb_data()
        )
            .prop_map(|(op, d)| (op, Response::Data(d))),
        arb_info().prop_map(|i| (Opcode::Info, Response::Info(i))),
        any::<u64>().prop_map(|g| (Opcode::BumpGeneration, Response::Generation(g))),
        arb_layer().prop_map(|l| (Opcode::Snapshot, Response::Layer(l))),
        arb_verify().prop_map(|v| (Opcode::Verify, Response::Verify(v))),
        prop::collection::vec(
            (any::<u64>(), any::<u64>()).prop_map(|(offset, len)| Extent { offset, len }),
            0..8
        )
        .prop_map(|e| (Opcode::LayerExtents, Response::Extents(e))),
        arb_checksum().prop_map(|c| (Opcode::LayerChecksum, Response::Checksum(c))),
        (arb_opcode(), arb_error_kind(), arb_text())
            .prop_map(|(op, kind, message)| (op, Response::Error { kind, message })),
    ]
}

// ---- properties -----------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Random bytes: an error or a frame within the limit, never a panic,
    /// never a large allocation.
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), max in 0usize..4096) {
        let rt = runtime();
        let (res, largest) = read_from(&rt, &bytes, max);
        if let Ok(f) = res {
            prop_assert!(f.payload.len() <= max);
            prop_assert_eq!(f.payload.len(), f.header.len as usize);
        }
        prop_assert!(largest <= FIRST_CHUNK.max(max));
    }

    /// Random bytes behind a valid magic, so the checksum is what refuses.
    #[test]
    fn random_headers_with_magic(rest in prop::collection::vec(any::<u8>(), 0..256)) {
        let rt = runtime();
        let mut bytes = b"VGRP".to_vec();
        bytes.extend_from_slice(&rest);
        let (res, largest) = read_from(&rt, &bytes, MAX_FRAME_PAYLOAD);
        if let Ok(f) = res {
            prop_assert_eq!(f.payload.len(), f.header.len as usize);
        }
        prop_assert!(largest <= FIRST_CHUNK);
    }

    /// Well-formed headers with any field values (lengths past the limit,
    /// unknown flags and opcodes) followed by fewer, as many or more bytes
    /// than claimed: the reader refuses or returns exactly the claimed
    /// payload, and allocates only for bytes actually present.
    #[test]
    fn headers_with_any_fields(
        version in any::<u8>(),
        opcode in any::<u8>(),
        flags in prop_oneof![Just(0u16), Just(FLAG_RESPONSE), Just(FLAG_RESPONSE | FLAG_ERROR), Just(FLAG_TRACE), any::<u16>()],
        id in any::<u64>(),
        len in prop_oneof![
            0u32..64,
            Just(MAX_FRAME_PAYLOAD as u32),
            Just(MAX_FRAME_PAYLOAD as u32 + 1),
            (MAX_FRAME_PAYLOAD as u32)..=u32::MAX,
            0u32..=u32::MAX,
        ],
        present in 0usize..600_000,
        max in prop_oneof![Just(MAX_FRAME_PAYLOAD), Just(HANDSHAKE_MAX_PAYLOAD)],
    ) {
        let rt = runtime();
        let mut bytes = encode_header(version, opcode, flags, id, len).to_vec();
        bytes.resize(HEADER_LEN + present, 0xa5);
        let (res, largest) = read_from(&rt, &bytes, max);
        let known_flags = flags & !(FLAG_RESPONSE | FLAG_ERROR | FLAG_TRACE) == 0;
        match res {
            Ok(f) => {
                prop_assert!(known_flags);
                prop_assert!(len as usize <= max && len as usize <= present);
                prop_assert_eq!(f.header, Header { version, opcode, flags, id, len });
                prop_assert_eq!(f.payload.len(), len as usize);
            }
            Err(FrameError::BadFlags(_)) => prop_assert!(!known_flags),
            Err(FrameError::TooLarge { .. }) => prop_assert!(known_flags && len as usize > max),
            Err(FrameError::Truncated) => prop_assert!(len as usize > present),
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
        // Never more than a first chunk, or twice what actually arrived.
        prop_assert!(largest <= FIRST_CHUNK.max(2 * present), "largest allocation {largest}");
        prop_assert!(largest <= max.max(FIRST_CHUNK));
    }

    /// Every request survives encode -> frame -> read -> decode.
    #[test]
    fn request_round_trip(req in arb_request(), id in any::<u64>()) {
        let rt = runtime();
        let (prefix, body) = req.encode().unwrap();
        let bytes = OutFrame::new(req.opcode() as u8, 0, id, prefix, body).unwrap().to_vec();
        let (res, _) = read_from(&rt, &bytes, MAX_FRAME_PAYLOAD);
        let f = res.unwrap();
        prop_assert_eq!(f.header.id, id);
        prop_assert_eq!(f.header.version, PROTOCOL_VERSION);
        prop_assert_eq!(Request::decode(f.header.opcode, f.payload).unwrap(), req);
    }

    /// Every response survives encode -> frame -> read -> decode.
    #[test]
    fn response_round_trip((op, resp) in arb_response(), id in any::<u64>()) {
        let rt = runtime();
        let (flags, payload) = resp.encode(op).unwrap();
        let bytes = OutFrame::new(op as u8, flags, id, payload, Bytes::new()).unwrap().to_vec();
        let (res, _) = read_from(&rt, &bytes, MAX_FRAME_PAYLOAD);
        let f = res.unwrap();
        prop_assert!(f.header.is_response());
        prop_assert_eq!(f.header.id, id);
        prop_assert_eq!(Response::decode(op, f.header.flags, f.payload).unwrap(), resp);
    }

    /// Truncating an encoded request anywhere gives Eof/Truncated, never a frame.
    #[test]
    fn truncated_frames(req in arb_request(), cut in any::<prop::sample::Index>()) {
        let rt = runtime();
        let (prefix, body) = req.encode().unwrap();
        let bytes = OutFrame::new(req.opcode() as u8, 0, 1, prefix, body).unwrap().to_vec();
        let cut = cut.index(bytes.len());
        let (res, _) = read_from(&rt, &bytes[..cut], MAX_FRAME_PAYLOAD);
        match res {
            Err(FrameError::Eof) => prop_assert_eq!(cut, 0),
            Err(FrameError::Truncated) => prop_assert!(cut > 0),
            other => prop_assert!(false, "unexpected {other:?}"),
        }
    }

    /// Flipping any bit of a header is detected (magic or checksum).
    #[test]
    fn corrupted_headers(req in arb_request(), bit in 0usize..HEADER_LEN * 8) {
        let rt = runtime();
        let (prefix, body) = req.encode().unwrap();
        let mut bytes = OutFrame::new(req.opcode() as u8, 0, 1, prefix, body).unwrap().to_vec();
        bytes[bit / 8] ^= 1 << (bit % 8);
        let (res, _) = read_from(&rt, &bytes, MAX_FRAME_PAYLOAD);
        prop_assert!(
            matches!(res, Err(FrameError::BadMagic(_) | FrameError::HeaderCrc)),
            "unexpected {:?}", res
        );
    }

    /// Random payloads under any opcode: decoding never panics.
    #[test]
    fn random_request_payloads(opcode in any::<u8>(), payload in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Request::decode(opcode, Bytes::from(payload));
    }

    /// Random payloads under any opcode: decoding never panics.
    #[test]
    fn random_response_payloads(
        op in arb_opcode(),
        flags in any::<u16>(),
        payload in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let _ = Response::decode(op, flags, Bytes::from(payload));
    }

    /// A valid request's payload, truncated or extended: a clean error or
    /// (for raw data ops) a request, never a panic.
    #[test]
    fn mangled_request_payloads(req in arb_request(), cut in any::<prop::sample::Index>(), extra in prop::collection::vec(any::<u8>(), 0..8)) {
        let (prefix, body) = req.encode().unwrap();
        let mut payload = prefix.to_vec();
        payload.extend_from_slice(&body);
        let cut = cut.index(payload.len() + 1);
        let mut short = payload[..cut].to_vec();
        let _ = Request::decode(req.opcode() as u8, Bytes::from(short.clone()));
        short = payload.clone();
        short.extend_from_slice(&extra);
        let _ = Request::decode(req.opcode() as u8, Bytes::from(short));
    }
}

#[test]
fn every_opcode_decodes_from_its_byte() {
    for op in Opcode::ALL {
        assert_eq!(Opcode::from_u8(op as u8), Some(op));
    }
    let known: Vec<u8> = Opcode::ALL.iter().map(|o| *o as u8).collect();
    for b in 0..=u8::MAX {
        assert_eq!(Opcode::from_u8(b).is_some(), known.contains(&b));
    }
}

#[test]
fn oversized_claims_are_refused_before_reading() {
    let rt = runtime();
    // Only the header: the reader must refuse on the header alone.
    for len in [MAX_FRAME_PAYLOAD as u32 + 1, u32::MAX] {
        let h = encode_header(PROTOCOL_VERSION, Opcode::Write as u8, 0, 7, len);
        let (res, largest) = read_from(&rt, &h, MAX_FRAME_PAYLOAD);
        assert!(matches!(res, Err(FrameError::TooLarge { .. })), "{res:?}");
        assert!(largest < 4096, "allocated {largest}");
    }
    // During the handshake the limit is small.
    let h = encode_header(
        PROTOCOL_VERSION,
        0x40,
        0,
        0,
        HANDSHAKE_MAX_PAYLOAD as u32 + 1,
    );
    let (res, _) = read_from(&rt, &h, HANDSHAKE_MAX_PAYLOAD);
    assert!(matches!(res, Err(FrameError::TooLarge { .. })), "{res:?}");
}

#[test]
fn a_claimed_maximum_with_little_data_allocates_little() {
    let rt = runtime();
    let mut bytes = encode_header(
        PROTOCOL_VERSION,
        Opcode::Write as u8,
        0,
        7,
        MAX_FRAME_PAYLOAD as u32,
    )
    .to_vec();
    bytes.extend_from_slice(&[1u8; 100]);
    let (res, largest) = read_from(&rt, &bytes, MAX_FRAME_PAYLOAD);
    assert!(matches!(res, Err(FrameError::Truncated)), "{res:?}");
    assert!(largest <= FIRST_CHUNK, "allocated {largest}");
}

#[test]
fn a_maximal_frame_is_read_whole() {
    let rt = runtime();
    let data = Bytes::from(vec![0x5a; MAX_FRAME_PAYLOAD - 8]);
    let req = Request::Write { offset: 4096, data };
    let (prefix, body) = req.encode().unwrap();
    let bytes = OutFrame::new(Opcode::Write as u8, 0, 9, prefix, body)
        .unwrap()
        .to_vec();
    let (res, largest) = read_from(&rt, &bytes, MAX_FRAME_PAYLOAD);
    let f = res.unwrap();
    assert_eq!(f.payload.len(), MAX_FRAME_PAYLOAD);
    assert!(largest <= MAX_FRAME_PAYLOAD, "allocated {largest}");
    assert_eq!(Request::decode(f.header.opcode, f.payload).unwrap(), req);
}

#[test]
fn frames_over_the_maximum_are_not_encoded() {
    let data = Bytes::from(vec![0u8; MAX_FRAME_PAYLOAD]);
    let (prefix, body) = Request::Write { offset: 0, data }.encode().unwrap();
    assert!(OutFrame::new(Opcode::Write as u8, 0, 1, prefix, body).is_err());
}

#[test]
fn layer_names_longer_than_255_bytes_are_not_encoded() {
    let req = Request::ReadLayer {
        layer: "x".repeat(256),
        offset: 0,
        len: 4096,
    };
    assert!(req.encode().is_err());
}

#[test]
fn trailing_bytes_are_refused() {
    let (prefix, _) = Request::Read {
        offset: 0,
        len: 4096,
    }
    .encode()
    .unwrap();
    let mut p = prefix.to_vec();
    p.push(0);
    assert!(Request::decode(Opcode::Read as u8, Bytes::from(p)).is_err());
    assert!(Request::decode(Opcode::Flush as u8, Bytes::from_static(b"x")).is_err());
    assert!(Response::decode(Opcode::Flush, FLAG_RESPONSE, Bytes::from_static(b"x")).is_err());
}

/// A write's data read by the server lands block-aligned after its fixed
/// part, whole, and a payload cut short is reported as such.
#[test]
fn a_write_payload_lands_block_aligned_after_its_offset() {
    use crate::protocol::frame::read_payload_aligned;
    let rt = runtime();
    for data_len in [0usize, 512, 4096, 3 * 4096 + 100, 1 << 20] {
        let mut payload = 77u64.to_be_bytes().to_vec();
        payload.extend((0..data_len).map(|i| (i * 7 + 3) as u8));
        let mut r = &payload[..];
        let got = rt
            .block_on(read_payload_aligned(&mut r, payload.len(), 8))
            .unwrap();
        assert_eq!(&got[..], &payload[..], "{data_len} bytes of data");
        assert_eq!(
            got[8..].as_ptr() as usize % 4096,
            0,
            "{data_len} bytes of data"
        );
        let mut short = &payload[..payload.len() - 1];
        let cut = rt.block_on(read_payload_aligned(&mut short, payload.len(), 8));
        assert!(
            matches!(cut, Err(FrameError::Truncated)),
            "{data_len}: {cut:?}"
        );
    }
}
