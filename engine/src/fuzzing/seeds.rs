//! Starting inputs for each target, built with the real encoders: one or
//! more of every message kind a target reads, valid and not. The fuzzer
//! starts from them (`bench/fuzz.sh` writes them out when a target has no
//! corpus yet) and the corpus replay test runs them too.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::metadata;
use crate::nbd::wire::Request as Request_;
use crate::nbd::wire::*;
use crate::protocol::frame::{FLAG_TRACE, OutFrame, PROTOCOL_VERSION};
use crate::protocol::handshake::{OP_AUTH, OP_CHALLENGE, OP_HELLO, OP_RESULT};
use crate::protocol::message::{Opcode, Request, Response, with_trace_context};
use crate::replica::{Checksum, ErrorKind, Extent, LayerInfo, ReplicaInfo};

/// The seeds of the target called `name` (empty for an unknown name).
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    match name {
        "nbd_handshake" => nbd_handshake(),
        "nbd_transmission" => nbd_transmission(),
        "protocol_frame" => protocol_frame(),
        "protocol_handshake" => protocol_handshake(),
        "replica_metadata" => metadata::seeds(),
        _ => Vec::new(),
    }
}

fn option(b: &mut Vec<u8>, opt: u32, data: &[u8]) {
    b.extend_from_slice(&IHAVEOPT.to_be_bytes());
    b.extend_from_slice(&opt.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
}

fn info_payload(name: &str, requests: &[u16]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(name.len() as u32).to_be_bytes());
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(&(requests.len() as u16).to_be_bytes());
    for r in requests {
        v.extend_from_slice(&r.to_be_bytes());
    }
    v
}

fn request(b: &mut Vec<u8>, flags: u16, kind: u16, cookie: u64, offset: u64, len: u32) {
    b.extend_from_slice(&encode_request(&Request_ {
        flags,
        kind,
        cookie,
        offset,
        len,
    }));
}

/// A few requests of every command, valid and invalid.
fn requests() -> Vec<u8> {
    let mut b = Vec::new();
    request(&mut b, 0, NBD_CMD_WRITE, 1, 0, 512);
    b.extend_from_slice(&[0xab; 512]);
    request(&mut b, 0, NBD_CMD_READ, 2, 0, 512);
    request(&mut b, NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 3, 4096, 8);
    b.extend_from_slice(b"12345678");
    request(&mut b, 0, NBD_CMD_FLUSH, 4, 0, 0);
    request(&mut b, 0, NBD_CMD_TRIM, 5, 0, 4096);
    request(
        &mut b,
        NBD_CMD_FLAG_NO_HOLE,
        NBD_CMD_WRITE_ZEROES,
        6,
        8192,
        4096,
    );
    request(&mut b, 0, NBD_CMD_READ, 7, 1 << 40, 512); // out of range
    request(&mut b, NBD_CMD_FLAG_DF, NBD_CMD_READ, 8, 0, 1); // flag never offered
    request(&mut b, 0, NBD_CMD_BLOCK_STATUS, 9, 0, 4096); // unsupported
    b
}

fn nbd_handshake() -> Vec<Vec<u8>> {
    let flags = (NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES).to_be_bytes();
    let mut go = flags.to_vec();
    option(&mut go, NBD_OPT_INFO, &info_payload("", &[NBD_INFO_NAME]));
    option(
        &mut go,
        NBD_OPT_GO,
        &info_payload("fuzz", &[NBD_INFO_BLOCK_SIZE]),
    );
    go.extend_from_slice(&requests());
    let mut export_name = 0u32.to_be_bytes().to_vec(); // old client: zeroes wanted
    option(&mut export_name, NBD_OPT_EXPORT_NAME, b"fuzz");
    request(&mut export_name, 0, NBD_CMD_READ, 1, 0, 16);
    let mut haggling = flags.to_vec();
    option(&mut haggling, NBD_OPT_LIST, &[]);
    option(&mut haggling, NBD_OPT_LIST, b"x");
    option(&mut haggling, NBD_OPT_STRUCTURED_REPLY, &[]);
    option(&mut haggling, NBD_OPT_STARTTLS, &[]);
    option(&mut haggling, 99, b"?");
    option(&mut haggling, NBD_OPT_INFO, &info_payload("other", &[]));
    option(&mut haggling, NBD_OPT_GO, &[0, 0, 0, 9, 0]);
    option(&mut haggling, NBD_OPT_ABORT, &[]);
    let mut unknown = flags.to_vec();
    option(&mut unknown, NBD_OPT_EXPORT_NAME, b"other");
    let mut too_long = flags.to_vec();
    too_long.extend_from_slice(&IHAVEOPT.to_be_bytes());
    too_long.extend_from_slice(&NBD_OPT_GO.to_be_bytes());
    too_long.extend_from_slice(&(MAX_OPTION_LEN + 1).to_be_bytes());
    vec![
        go,
        export_name,
        haggling,
        unknown,
        too_long,
        4u32.to_be_bytes().to_vec(),
    ]
}

fn nbd_transmission() -> Vec<Vec<u8>> {
    let mut disc = requests();
    request(&mut disc, 0, NBD_CMD_DISC, 10, 0, 0);
    let mut big = Vec::new();
    request(&mut big, 0, NBD_CMD_WRITE, 1, 0, MAX_BLOCK_SIZE + 1);
    let mut cut = Vec::new();
    request(&mut cut, 0, NBD_CMD_WRITE, 1, 0, 4096);
    cut.extend_from_slice(&[1; 100]);
    vec![requests(), disc, big, cut, vec![0x25, 0x60, 0x95, 0x14]]
}

/// One frame: mode byte 0 (no repair needed: the encoder's headers are right).
fn frame(version: u8, opcode: u8, flags: u16, id: u64, payload: Bytes) -> Vec<u8> {
    let f = OutFrame::with_version(version, opcode, flags, id, payload, Bytes::new())
        .unwrap_or_else(|e| panic!("seed frame: {e}"));
    let mut v = Vec::new();
    super::protocol::write_frame(&f, &mut v);
    v
}

fn layer(name: &str, parent: Option<&str>) -> LayerInfo {
    LayerInfo {
        name: name.into(),
        parent: parent.map(Into::into),
        size: 1 << 20,
        created_unix: 1_700_000_000,
        user_created: true,
        labels: [("k".to_string(), "v".to_string())].into(),
        read_only: parent.is_none(),
        checksum: Some(Checksum {
            method: "crc64nvme-extents-v1".into(),
            value: "00ff".into(),
        }),
        allocated_bytes: 4096,
    }
}

fn protocol_frame() -> Vec<Vec<u8>> {
    let requests = [
        Request::Ping,
        Request::Read {
            offset: 4096,
            len: 512,
        },
        Request::Write {
            offset: 0,
            data: Bytes::from_static(b"data"),
        },
        Request::Trim {
            offset: 0,
            len: 4096,
        },
        Request::WriteZeroes {
            offset: 0,
            len: 4096,
        },
        Request::Flush,
        Request::Info,
        Request::BumpGeneration,
        Request::Snapshot {
            name: "s1".into(),
            user_created: true,
            labels: BTreeMap::new(),
        },
        Request::RemoveSnapshot { name: "s1".into() },
        Request::Revert { name: "s1".into() },
        Request::Verify,
        Request::LayerExtents { layer: "s1".into() },
        Request::ReadLayer {
            layer: "s1".into(),
            offset: 0,
            len: 4096,
        },
        Request::LayerChecksum { layer: "s1".into() },
        Request::StageLayer {
            info: layer("s1", None),
        },
        Request::WriteStaged {
            layer: "s1".into(),
            offset: 0,
            data: Bytes::from_static(b"staged"),
        },
        Request::InstallChain {
            layers: vec![layer("s1", None), layer("volume-head-002", Some("s1"))],
        },
        Request::SetRevision { revision: 9 },
        Request::JoinGeneration { generation: 3 },
    ];
    let mut seeds = Vec::new();
    let mut all = vec![0u8];
    for (i, req) in requests.iter().enumerate() {
        let (prefix, body) = req.encode().unwrap_or_else(|e| panic!("seed {req:?}: {e}"));
        let mut payload = prefix.to_vec();
        payload.extend_from_slice(&body);
        let op = req.opcode() as u8;
        let f = frame(PROTOCOL_VERSION, op, 0, i as u64, Bytes::from(payload));
        all.extend_from_slice(&f);
        seeds.push([&[0u8][..], &f].concat());
    }
    let traced = with_trace_context(
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        &Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 3]),
    )
    .unwrap_or_else(|e| panic!("seed trace context: {e}"));
    let traced = frame(2, 0x1c, FLAG_TRACE, 77, traced);
    seeds.push([&[0u8][..], &traced].concat());
    seeds.push(all);
    let info = ReplicaInfo {
        size: 1 << 20,
        revision: 9,
        epoch: 5,
        generation: 2,
        in_sync_generation: 3,
        chain: vec![layer("s1", None), layer("volume-head-002", Some("s1"))],
        direct_io: true,
    };
    let responses = [
        (Opcode::Ping, Response::Done),
        (Opcode::Read, Response::Data(Bytes::from_static(b"read"))),
        (Opcode::Info, Response::Info(info)),
        (Opcode::BumpGeneration, Response::Generation(4)),
        (Opcode::Snapshot, Response::Layer(layer("s1", None))),
        (
            Opcode::LayerExtents,
            Response::Extents(vec![Extent {
                offset: 0,
                len: 4096,
            }]),
        ),
        (
            Opcode::LayerChecksum,
            Response::Checksum(Checksum {
                method: "m".into(),
                value: "0".into(),
            }),
        ),
        (
            Opcode::Write,
            Response::Error {
                kind: ErrorKind::StaleEpoch,
                message: "stale".into(),
            },
        ),
    ];
    for (i, (op, resp)) in responses.iter().enumerate() {
        let (flags, payload) = resp
            .encode(*op)
            .unwrap_or_else(|e| panic!("seed {resp:?}: {e}"));
        let f = frame(PROTOCOL_VERSION, *op as u8, flags, i as u64, payload);
        seeds.push([&[0u8][..], &f].concat());
    }
    // A header whose checksum the harness repairs (mode 2), and one read
    // with the handshake limit (mode 1).
    let mut repaired = vec![2u8];
    repaired.extend_from_slice(&frame(PROTOCOL_VERSION, 0x10, 0, 1, Bytes::new())[..20]);
    repaired.extend_from_slice(&[0; 4]);
    seeds.push(repaired);
    let mut limited = vec![1u8];
    limited.extend_from_slice(&frame(1, 0x40, 0, 0, Bytes::from(vec![b'r'; 2000])));
    seeds.push(limited);
    seeds
}

fn protocol_handshake() -> Vec<Vec<u8>> {
    let hello = |v: u8, name: &[u8]| frame(v, OP_HELLO, 0, 0, Bytes::copy_from_slice(name));
    let auth = |v: u8, len: usize| frame(v, OP_AUTH, 0, 0, Bytes::from(vec![7u8; len]));
    let challenge = frame(
        PROTOCOL_VERSION,
        OP_CHALLENGE,
        0,
        0,
        Bytes::from(vec![9u8; 32]),
    );
    let result = |status: u8, msg: &[u8]| {
        let mut p = vec![status];
        p.extend_from_slice(msg);
        frame(PROTOCOL_VERSION, OP_RESULT, 0, 0, Bytes::from(p))
    };
    let server = |parts: &[Vec<u8>]| [vec![0u8], parts.concat()].concat();
    // Mode: bit 0 client side, bits 2-3 the version it announces (3 + 1 = 4).
    let client = |parts: &[Vec<u8>]| [vec![1u8 | (3 << 2)], parts.concat()].concat();
    let client_v1 = |parts: &[Vec<u8>]| [vec![1u8], parts.concat()].concat();
    vec![
        server(&[hello(PROTOCOL_VERSION, b"r1"), auth(PROTOCOL_VERSION, 40)]),
        server(&[hello(1, b"r1"), auth(1, 32)]),
        server(&[hello(9, b"r1")]),
        server(&[hello(PROTOCOL_VERSION, b"")]),
        server(&[auth(PROTOCOL_VERSION, 40)]),
        client(&[challenge.clone(), result(0, b"")]),
        client(&[challenge.clone(), result(5, b"stale engine epoch")]),
        client(&[challenge.clone(), result(1, b"")]),
        client(&[result(2, b"unsupported")]),
        client_v1(&[challenge, result(0, b"")]),
    ]
}
