//! The optional trace context on requests (protocol version 2) and the
//! version negotiation that keeps version 1 peers working.

use std::sync::Mutex;

use bytes::Bytes;
use proptest::prelude::*;
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};

use super::super::frame::{
    FLAG_TRACE, HANDSHAKE_MAX_PAYLOAD, MAX_FRAME_PAYLOAD, MIN_PROTOCOL_VERSION, OutFrame,
    PROTOCOL_VERSION, read_frame,
};
use super::super::handshake::{self, OP_HELLO, OP_RESULT};
use super::super::message::{MessageError, Opcode, Request, with_trace_context};
use super::super::{ReplicaClient, client, trace_context};
use super::net::{T, address, assert_closed_by_peer, fake_server, token};
use super::props::arb_request;

const CTX: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn arb_context() -> impl Strategy<Value = String> {
    "[ -~]{1,255}"
}

proptest! {
    /// Every request with any valid context decodes to the same request and context.
    #[test]
    fn traced_request_round_trip(req in arb_request(), ctx in arb_context()) {
        let (prefix, body) = req.encode().unwrap();
        let prefix = with_trace_context(&ctx, &prefix).unwrap();
        let mut payload = prefix.to_vec();
        payload.extend_from_slice(&body);
        let (got, got_ctx) = Request::decode_traced(req.opcode() as u8, true, Bytes::from(payload)).unwrap();
        prop_assert_eq!(got, req);
        prop_assert_eq!(got_ctx.as_deref(), Some(ctx.as_str()));
    }

    /// Random bytes as a traced payload: a typed error or a request, never a panic.
    #[test]
    fn random_traced_payloads(opcode in any::<u8>(), payload in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = Request::decode_traced(opcode, true, Bytes::from(payload));
    }
}

#[test]
fn malformed_contexts_are_typed_errors() {
    let op = Opcode::Ping as u8;
    let cases: [(&str, &[u8]); 4] = [
        ("empty payload", b""),
        ("zero length", b"\x00"),
        ("truncated", b"\x10abc"),
        ("control character", b"\x02a\n"),
    ];
    for (what, payload) in cases {
        let err = Request::decode_traced(op, true, Bytes::copy_from_slice(payload)).unwrap_err();
        assert!(
            matches!(
                err,
                MessageError::Malformed {
                    op: Opcode::Ping,
                    ..
                }
            ),
            "{what}: {err:?}"
        );
    }
    assert!(with_trace_context("", &Bytes::new()).is_err());
    assert!(with_trace_context("é", &Bytes::new()).is_err());
    // An untraced payload is read as before (version 1 frames are unchanged).
    let (req, ctx) = Request::decode_traced(op, false, Bytes::new()).unwrap();
    assert_eq!((req, ctx), (Request::Ping, None));
}

#[tokio::test]
async fn version_1_client_is_served() {
    let (server, _fake, _) = fake_server().await;
    let c = client::connect(
        &address(&server, "r1"),
        &token(),
        T,
        MIN_PROTOCOL_VERSION,
        0,
    )
    .await
    .unwrap();
    assert_eq!(c.version(), 1);
    c.call(Request::Ping).await.unwrap();
    c.call(Request::Info).await.unwrap();
    assert!(!c.is_closed());

    let c = client::connect_negotiated(&address(&server, "r1"), &token(), T, 0)
        .await
        .unwrap();
    assert_eq!(c.version(), PROTOCOL_VERSION);
}

#[tokio::test]
async fn trace_flag_on_a_version_1_connection_is_a_violation() {
    let (server, _fake, _) = fake_server().await;
    let (rd, mut wr) = TcpStream::connect(server.addr).await.unwrap().into_split();
    let mut rd = BufReader::new(rd);
    handshake::client(&mut rd, &mut wr, &token(), "r1", 1, 0)
        .await
        .unwrap();
    let prefix = with_trace_context(CTX, &Bytes::new()).unwrap();
    OutFrame::with_version(1, Opcode::Ping as u8, FLAG_TRACE, 1, prefix, Bytes::new())
        .unwrap()
        .write_to(&mut wr)
        .await
        .unwrap();
    assert_closed_by_peer(&mut rd).await;
}

#[tokio::test]
async fn traced_requests_are_answered_and_malformed_contexts_close() {
    let (server, _fake, _) = fake_server().await;
    let (rd, mut wr) = TcpStream::connect(server.addr).await.unwrap().into_split();
    let mut rd = BufReader::new(rd);
    handshake::client(&mut rd, &mut wr, &token(), "r1", 2, 0)
        .await
        .unwrap();
    let prefix = with_trace_context(CTX, &Bytes::new()).unwrap();
    OutFrame::with_version(2, Opcode::Info as u8, FLAG_TRACE, 7, prefix, Bytes::new())
        .unwrap()
        .write_to(&mut wr)
        .await
        .unwrap();
    let f = read_frame(&mut rd, MAX_FRAME_PAYLOAD).await.unwrap();
    assert_eq!((f.header.id, f.header.version, f.header.flags), (7, 2, 1));

    // Length byte 0: malformed, the connection closes.
    OutFrame::with_version(
        2,
        Opcode::Info as u8,
        FLAG_TRACE,
        8,
        Bytes::from_static(b"\x00"),
        Bytes::new(),
    )
    .unwrap()
    .write_to(&mut wr)
    .await
    .unwrap();
    assert_closed_by_peer(&mut rd).await;
}

/// A version 1 server refuses a newer HELLO; the client reconnects
/// announcing version 3 (epochs, no in-sync generation), then version 1.
#[tokio::test]
async fn client_falls_back_to_version_1() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let old_server = tokio::spawn(async move {
        let mut versions = Vec::new();
        for _ in 0..3 {
            let (s, _) = listener.accept().await.unwrap();
            let (rd, mut wr) = s.into_split();
            let mut rd = BufReader::new(rd);
            let hello = read_frame(&mut rd, HANDSHAKE_MAX_PAYLOAD).await.unwrap();
            assert_eq!(hello.header.opcode, OP_HELLO);
            versions.push(hello.header.version);
            let refusal = OutFrame::with_version(
                1,
                OP_RESULT,
                0,
                0,
                Bytes::from_static(b"\x02version 1 only"),
                Bytes::new(),
            )
            .unwrap();
            refusal.write_to(&mut wr).await.unwrap();
        }
        versions
    });
    let addr = format!("tcp://127.0.0.1:{port}/r1").parse().unwrap();
    let err = ReplicaClient::connect(&addr, &token(), T)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("version"), "{err}");
    assert_eq!(old_server.await.unwrap(), vec![PROTOCOL_VERSION, 3, 1]);
}

static ATTACHED: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn test_inject() -> Option<String> {
    Some(CTX.to_string())
}

fn test_attach(_span: &tracing::Span, ctx: &str) {
    ATTACHED.lock().unwrap().push(ctx.to_string());
}

/// Within a span the client sends the injected context and the server hands
/// it to the attach hook; outside any span nothing is sent.
#[tokio::test]
async fn context_travels_from_client_span_to_server_hook() {
    trace_context::set_hooks(test_inject, test_attach);
    let _sub = tracing::subscriber::set_default(tracing_subscriber::registry());
    let (server, _fake, _) = fake_server().await;
    let c = ReplicaClient::connect(&address(&server, "r1"), &token(), T)
        .await
        .unwrap();
    c.info().await.unwrap();
    assert!(ATTACHED.lock().unwrap().is_empty());
    let span = tracing::info_span!("rebuild");
    {
        use tracing::Instrument;
        c.layer_extents("l1").instrument(span).await.ok();
    }
    assert_eq!(ATTACHED.lock().unwrap().as_slice(), [CTX.to_string()]);
}
