//! End-to-end tests: a real server over TCP with a fake replica, and the
//! real client.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinHandle;

use super::super::frame::{
    HANDSHAKE_MAX_PAYLOAD, Header, MAX_DATA_LEN, MAX_FRAME_PAYLOAD, OutFrame, PROTOCOL_VERSION,
    read_frame,
};
use super::super::handshake::{self, OP_HELLO, OP_RESULT};
use super::super::message::{Opcode, Request};
use super::super::server::{OpsSource, serve_ops};
use super::super::{ClientError, ClusterToken, ReplicaClient, client};
use super::fake::{FakeReplica, FakeSource};
use crate::address::ReplicaAddress;
use crate::replica::{ErrorKind, LayerInfo};

pub(super) const T: Duration = Duration::from_secs(5);

pub(super) fn token() -> ClusterToken {
    ClusterToken::new("test-token")
}

pub(super) struct Server {
    pub(super) addr: SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(source: Arc<dyn OpsSource>) -> Server {
    start_with(source, Duration::from_secs(10)).await
}

async fn start_with(source: Arc<dyn OpsSource>, handshake_timeout: Duration) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(serve_ops(
        listener,
        source,
        token(),
        handshake_timeout,
        Default::default(),
    ));
    Server { addr, task }
}

pub(super) fn address(server: &Server, name: &str) -> ReplicaAddress {
    format!("tcp://{}/{name}", server.addr).parse().unwrap()
}

async fn connect(server: &Server, name: &str) -> ReplicaClient {
    ReplicaClient::connect(&address(server, name), &token(), T)
        .await
        .unwrap()
}

pub(super) async fn fake_server() -> (Server, Arc<FakeReplica>, Arc<FakeSource>) {
    let fake = Arc::new(FakeReplica::new());
    let source = FakeSource::with("r1", fake.clone());
    (start(source.clone()).await, fake, source)
}

/// Waits until the peer closes `rd` (EOF or reset).
pub(super) async fn assert_closed_by_peer(rd: &mut BufReader<OwnedReadHalf>) {
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(T, async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "server did not close the connection");
}

/// A raw, authenticated connection for sending arbitrary frames.
async fn raw_session(server: &Server, name: &str) -> (BufReader<OwnedReadHalf>, OwnedWriteHalf) {
    let (rd, mut wr) = TcpStream::connect(server.addr).await.unwrap().into_split();
    let mut rd = BufReader::new(rd);
    handshake::client(&mut rd, &mut wr, &token(), name, PROTOCOL_VERSION, 0)
        .await
        .unwrap();
    (rd, wr)
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn served_connections_list_each_authenticated_client_while_it_is_open() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = super::super::ServedConnections::default();
    let source = FakeSource::with("r1", Arc::new(FakeReplica::new()));
    let server = Server {
        addr,
        task: tokio::spawn(serve_ops(listener, source, token(), T, served.clone())),
    };
    // Refused before the handshake completes: never listed.
    let bad = TcpStream::connect(server.addr).await.unwrap();
    let (rd, mut wr) = TcpStream::connect(server.addr).await.unwrap().into_split();
    let client_addr = wr.local_addr().unwrap();
    let mut rd = BufReader::new(rd);
    handshake::client(&mut rd, &mut wr, &token(), "r1", PROTOCOL_VERSION, 0)
        .await
        .unwrap();
    wait_until("the client is listed", || !served.list().is_empty()).await;
    assert_eq!(
        served.list(),
        vec![super::super::ServedConnection {
            peer: client_addr,
            replica: "r1".into()
        }]
    );
    drop((rd, wr, bad));
    wait_until("the closed client is no longer listed", || {
        served.list().is_empty()
    })
    .await;
}

#[tokio::test]
async fn handshake_ok_and_ping() {
    let (server, _fake, _) = fake_server().await;
    let c = connect(&server, "r1").await;
    assert!(!c.is_closed());
    c.ping().await.unwrap();
    c.clone().ping().await.unwrap();
}

#[tokio::test]
async fn every_operation_round_trips() {
    let (server, fake, _) = fake_server().await;
    let c = connect(&server, "r1").await;

    let data = Bytes::from((0..8192u32).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    c.write(4096, data.clone()).await.unwrap();
    assert_eq!(c.read(4096, 8192).await.unwrap(), data);
    assert_eq!(
        c.read_layer("head", 4096, 4096).await.unwrap(),
        data.slice(..4096)
    );
    c.write_zeroes(4096, 4096).await.unwrap();
    assert_eq!(
        c.read(4096, 4096).await.unwrap(),
        Bytes::from(vec![0u8; 4096])
    );
    c.trim(8192, 4096).await.unwrap();
    assert_eq!(
        c.read(8192, 4096).await.unwrap(),
        Bytes::from(vec![0u8; 4096])
    );
    c.flush().await.unwrap();

    assert_eq!(c.bump_generation().await.unwrap(), 1);
    assert_eq!(c.bump_generation().await.unwrap(), 2);
    let info = c.info().await.unwrap();
    assert_eq!(
        info,
        crate::protocol::server::ReplicaOps::info(fake.as_ref())
    );
    assert_eq!(info.generation, 2);

    let labels = BTreeMap::from([("k".to_string(), "v \"quoted\" ünï".to_string())]);
    let layer = c.snapshot("s2", true, labels.clone()).await.unwrap();
    assert_eq!((layer.name.as_str(), layer.labels), ("s2", labels));
    c.revert("s1").await.unwrap();
    assert_eq!(c.verify().await.unwrap().layers_checked, 2);
    assert_eq!(c.layer_extents("s1").await.unwrap().len(), 1);
    assert_eq!(c.layer_checksum("s1").await.unwrap().method, "fake-v1");
    let info: LayerInfo = info.chain[0].clone();
    c.stage_layer(&info).await.unwrap();
    c.write_staged("s1", 0, Bytes::from_static(&[1; 4096]))
        .await
        .unwrap();
    c.install_chain(std::slice::from_ref(&info)).await.unwrap();
}

#[tokio::test]
async fn replica_errors_come_back_typed() {
    let (server, _fake, _) = fake_server().await;
    let c = connect(&server, "r1").await;
    let cases = [
        (
            c.remove_snapshot("gone").await.unwrap_err(),
            ErrorKind::NotFound,
        ),
        (
            c.snapshot("exists", true, BTreeMap::new())
                .await
                .unwrap_err(),
            ErrorKind::AlreadyExists,
        ),
        (
            c.read(1, 4096).await.unwrap_err(),
            ErrorKind::InvalidArgument,
        ),
        (
            c.install_chain(&[]).await.unwrap_err(),
            ErrorKind::InvalidArgument,
        ),
        // A panic in the replica becomes an error, not a hung request.
        (
            c.write_staged("panic", 0, Bytes::from_static(&[0; 4096]))
                .await
                .unwrap_err(),
            ErrorKind::Io,
        ),
    ];
    for (err, kind) in cases {
        match err {
            ClientError::Remote { kind: k, message } => {
                assert_eq!(k, kind, "{message}");
                assert!(!message.is_empty());
            }
            other => panic!("expected a remote {kind:?} error, got {other:?}"),
        }
    }
    // The connection survives errors.
    c.ping().await.unwrap();
    assert!(!c.is_closed());
}

#[tokio::test]
async fn oversized_io_is_refused_locally() {
    let (server, _fake, _) = fake_server().await;
    let c = connect(&server, "r1").await;
    let too_big = MAX_DATA_LEN as u32 + 4096;
    assert!(matches!(
        c.read(0, too_big).await,
        Err(ClientError::Protocol(_))
    ));
    let data = Bytes::from(vec![0u8; MAX_DATA_LEN + 4096]);
    assert!(matches!(
        c.write(0, data).await,
        Err(ClientError::Protocol(_))
    ));
    c.ping().await.unwrap();
}

#[tokio::test]
async fn wrong_token_is_refused() {
    let (server, _fake, _) = fake_server().await;
    let err = ReplicaClient::connect(&address(&server, "r1"), &ClusterToken::new("nope"), T)
        .await
        .unwrap_err();
    match err {
        ClientError::Refused { addr, message } => {
            assert!(addr.contains(&server.addr.to_string()), "{addr}");
            assert!(message.contains("token"), "{message}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_replica_is_refused() {
    let (server, _fake, _) = fake_server().await;
    let err = ReplicaClient::connect(&address(&server, "r2"), &token(), T)
        .await
        .unwrap_err();
    match err {
        ClientError::Refused { message, .. } => {
            assert!(message.contains("unknown replica"), "{message}")
        }
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_replica_is_not_revealed_without_the_token() {
    let (server, _fake, _) = fake_server().await;
    let err = ReplicaClient::connect(&address(&server, "r2"), &ClusterToken::new("nope"), T)
        .await
        .unwrap_err();
    match err {
        ClientError::Refused { message, .. } => assert!(message.contains("token"), "{message}"),
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test]
async fn wrong_version_is_refused() {
    let (server, _fake, _) = fake_server().await;
    let err = client::connect(
        &address(&server, "r1"),
        &token(),
        T,
        PROTOCOL_VERSION + 1,
        0,
    )
    .await
    .err()
    .unwrap();
    match err {
        ClientError::Refused { message, .. } => assert!(message.contains("version"), "{message}"),
        other => panic!("expected Refused, got {other:?}"),
    }

    // On the wire: the refusal comes right after HELLO, as a RESULT with status 2.
    let (rd, mut wr) = TcpStream::connect(server.addr).await.unwrap().into_split();
    let mut rd = BufReader::new(rd);
    let hello =
        OutFrame::with_version(9, OP_HELLO, 0, 0, Bytes::from_static(b"r1"), Bytes::new()).unwrap();
    hello.write_to(&mut wr).await.unwrap();
    let f = read_frame(&mut rd, HANDSHAKE_MAX_PAYLOAD).await.unwrap();
    assert_eq!(f.header.opcode, OP_RESULT);
    assert_eq!(f.payload[0], 2);
    assert_closed_by_peer(&mut rd).await;
}

#[tokio::test]
async fn not_our_protocol_is_dropped() {
    let (server, _fake, _) = fake_server().await;
    let (rd, mut wr) = TcpStream::connect(server.addr).await.unwrap().into_split();
    let mut rd = BufReader::new(rd);
    wr.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_closed_by_peer(&mut rd).await;
    // The server still works.
    connect(&server, "r1").await.ping().await.unwrap();
}

#[tokio::test]
async fn connect_to_nothing_fails_with_connect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let a: ReplicaAddress = format!("tcp://{addr}/r1").parse().unwrap();
    let err = ReplicaClient::connect(&a, &token(), T).await.unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
}

#[tokio::test]
async fn silent_server_times_out() {
    // A listener that accepts but never speaks.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            conns.push(s);
        }
    });
    let a: ReplicaAddress = format!("tcp://{addr}/r1").parse().unwrap();
    let started = std::time::Instant::now();
    let err = ReplicaClient::connect(&a, &token(), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    assert!(started.elapsed() < T);
}

#[tokio::test]
async fn idle_peer_is_dropped_after_the_handshake_timeout() {
    let fake = Arc::new(FakeReplica::new());
    let timeout = Duration::from_millis(300);
    let server = start_with(FakeSource::with("r1", fake), timeout).await;
    // Silent from the start, and silent after HELLO.
    let (rd, _wr) = TcpStream::connect(server.addr).await.unwrap().into_split();
    let mut rd1 = BufReader::new(rd);
    let (rd, mut wr2) = TcpStream::connect(server.addr).await.unwrap().into_split();
    let mut rd2 = BufReader::new(rd);
    OutFrame::new(OP_HELLO, 0, 0, Bytes::from_static(b"r1"), Bytes::new())
        .unwrap()
        .write_to(&mut wr2)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    assert_closed_by_peer(&mut rd1).await;
    assert_closed_by_peer(&mut rd2).await;
    assert!(started.elapsed() >= timeout - Duration::from_millis(50));
    assert_eq!(
        super::super::server::HANDSHAKE_TIMEOUT,
        Duration::from_secs(10)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_in_flight_complete_out_of_order() {
    let fake = Arc::new(FakeReplica::jittery());
    let source = FakeSource::with("r1", fake.clone());
    let server = start(source).await;
    let c = connect(&server, "r1").await;

    // 64 concurrent writes of distinct blocks, then 64 concurrent reads;
    // the fake delays each by an offset-dependent amount, so they complete
    // out of order and each must still get its own answer.
    let block = |i: u64| Bytes::from(vec![(i as u8).wrapping_mul(37).wrapping_add(1); 4096]);
    let writes: Vec<_> = (0..64u64)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.write(i * 4096, block(i)).await })
        })
        .collect();
    for w in writes {
        w.await.unwrap().unwrap();
    }
    let reads: Vec<_> = (0..64u64)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { (i, c.read(i * 4096, 4096).await) })
        })
        .collect();
    for r in reads {
        let (i, got) = r.await.unwrap();
        assert_eq!(got.unwrap(), block(i), "block {i}");
    }
    // Mixed in one go, with different lengths so a mixed-up answer shows.
    let mixed: Vec<_> = (0..64u64)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    let len = 4096 * (1 + (i % 4) as u32);
                    let d = c.read(i * 4096, len).await.unwrap();
                    assert_eq!(d.len(), len as usize);
                    assert_eq!(d.slice(..4096), block(i));
                } else {
                    c.write(i * 4096, block(i)).await.unwrap();
                }
            })
        })
        .collect();
    for m in mixed {
        m.await.unwrap();
    }
    assert_eq!(c.inner.pending_count(), 0);
}

#[tokio::test]
async fn large_reads_and_writes() {
    let (server, _fake, _) = fake_server().await;
    let c = connect(&server, "r1").await;
    let data = Bytes::from(
        (0..super::fake::FAKE_SIZE)
            .map(|i| (i / 4096) as u8)
            .collect::<Vec<_>>(),
    );
    c.write(0, data.clone()).await.unwrap();
    assert_eq!(c.read(0, data.len() as u32).await.unwrap(), data);
}

#[tokio::test]
async fn server_going_away_fails_pending_requests() {
    let (server, fake, _) = fake_server().await;
    let c = connect(&server, "r1").await;
    fake.set_gate(false);
    let pending: Vec<_> = (0..8u64)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.read(i * 4096, 4096).await })
        })
        .collect();
    wait_until("requests reach the replica", || {
        fake.entered.load(Ordering::SeqCst) == 8
    })
    .await;
    assert_eq!(c.inner.pending_count(), 8);
    drop(server); // aborts the server task and with it every connection

    for p in pending {
        match p.await.unwrap() {
            Err(ClientError::ConnectionLost(reason)) => assert!(!reason.is_empty()),
            other => panic!("expected ConnectionLost, got {other:?}"),
        }
    }
    assert!(c.is_closed());
    assert_eq!(c.inner.pending_count(), 0);
    assert!(matches!(
        c.ping().await,
        Err(ClientError::ConnectionLost(_))
    ));
    fake.set_gate(true);
}

#[tokio::test]
async fn abandoned_requests_do_not_leak() {
    let (server, fake, _) = fake_server().await;
    let c = connect(&server, "r1").await;
    fake.set_gate(false);
    let r = tokio::time::timeout(Duration::from_millis(50), c.read(0, 4096)).await;
    assert!(r.is_err(), "read should have timed out");
    assert_eq!(c.inner.pending_count(), 0);
    fake.set_gate(true);
    // The late response to the abandoned request is ignored; the
    // connection stays usable.
    c.flush().await.unwrap();
    c.ping().await.unwrap();
    assert!(!c.is_closed());
}

#[tokio::test]
async fn garbage_after_the_handshake_closes_only_that_connection() {
    let (server, _fake, _) = fake_server().await;
    let good = connect(&server, "r1").await;

    let (mut rd, mut wr) = raw_session(&server, "r1").await;
    wr.write_all(&[0xde; 100]).await.unwrap();
    assert_closed_by_peer(&mut rd).await;

    // A well-formed header with an unknown opcode.
    let (mut rd, mut wr) = raw_session(&server, "r1").await;
    OutFrame::new(0x7f, 0, 1, Bytes::new(), Bytes::new())
        .unwrap()
        .write_to(&mut wr)
        .await
        .unwrap();
    assert_closed_by_peer(&mut rd).await;

    // A header claiming more than the limit.
    let (mut rd, mut wr) = raw_session(&server, "r1").await;
    let h = Header {
        version: PROTOCOL_VERSION,
        opcode: Opcode::Write as u8,
        flags: 0,
        id: 1,
        len: MAX_FRAME_PAYLOAD as u32 + 1,
    };
    wr.write_all(&h.encode()).await.unwrap();
    assert_closed_by_peer(&mut rd).await;

    // A request that claims to be a response.
    let (mut rd, mut wr) = raw_session(&server, "r1").await;
    OutFrame::new(Opcode::Ping as u8, 1, 1, Bytes::new(), Bytes::new())
        .unwrap()
        .write_to(&mut wr)
        .await
        .unwrap();
    assert_closed_by_peer(&mut rd).await;

    // A truncated payload for a known opcode.
    let (mut rd, mut wr) = raw_session(&server, "r1").await;
    OutFrame::new(
        Opcode::Read as u8,
        0,
        1,
        Bytes::from_static(&[0; 5]),
        Bytes::new(),
    )
    .unwrap()
    .write_to(&mut wr)
    .await
    .unwrap();
    assert_closed_by_peer(&mut rd).await;

    good.ping().await.unwrap();
    assert!(!good.is_closed());
    connect(&server, "r1").await.ping().await.unwrap();
}

#[tokio::test]
async fn raw_pipelined_requests_get_tagged_responses() {
    let (server, _fake, _) = fake_server().await;
    let (mut rd, mut wr) = raw_session(&server, "r1").await;
    for id in [5u64, 3, 900] {
        let (prefix, body) = Request::Ping.encode().unwrap();
        OutFrame::new(Opcode::Ping as u8, 0, id, prefix, body)
            .unwrap()
            .write_to(&mut wr)
            .await
            .unwrap();
    }
    let mut ids = Vec::new();
    for _ in 0..3 {
        let f = read_frame(&mut rd, MAX_FRAME_PAYLOAD).await.unwrap();
        assert!(f.header.is_response());
        assert_eq!(f.header.opcode, Opcode::Ping as u8);
        ids.push(f.header.id);
    }
    ids.sort();
    assert_eq!(ids, vec![3, 5, 900]);
}

#[tokio::test]
async fn removed_replica_closes_its_connections() {
    let (server, _fake, source) = fake_server().await;
    let c = connect(&server, "r1").await;
    c.ping().await.unwrap();
    source.replicas.lock().unwrap().clear();
    assert!(matches!(
        c.ping().await,
        Err(ClientError::ConnectionLost(_))
    ));
    assert!(c.is_closed());
}

#[tokio::test]
async fn dropping_every_client_closes_the_connection() {
    let (server, _fake, _) = fake_server().await;
    let c = connect(&server, "r1").await;
    let c2 = c.clone();
    c.ping().await.unwrap();
    let shared = Arc::downgrade(&c.inner);
    drop(c);
    c2.ping().await.unwrap();
    drop(c2);
    assert!(shared.upgrade().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_holds_a_bounded_amount_of_data_in_flight() {
    use super::super::server::IN_FLIGHT_BUDGET;
    let (server, fake, _) = fake_server().await;
    let c = connect(&server, "r1").await;
    fake.set_gate(false);
    let size = 4 << 20;
    let data = Bytes::from(vec![7u8; size]);
    let writes: Vec<_> = (0..20)
        .map(|_| {
            let c = c.clone();
            let data = data.clone();
            tokio::spawn(async move { c.write(0, data).await })
        })
        .collect();
    // Each 4 MiB write costs a little more than 4 MiB of the budget.
    let fits = IN_FLIGHT_BUDGET / (size + 64 * 1024 + 4096);
    assert!(fits < 20);
    wait_until("the budget is used up", || {
        fake.entered.load(Ordering::SeqCst) == fits
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fake.entered.load(Ordering::SeqCst), fits);
    fake.set_gate(true);
    for w in writes {
        // The fake is only 1 MiB: each write fails, but each gets its answer.
        match w.await.unwrap() {
            Err(ClientError::Remote { kind, .. }) => assert_eq!(kind, ErrorKind::InvalidArgument),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(fake.entered.load(Ordering::SeqCst), 20);
}
