//! The NBD frontend against real clients (qemu-io, qemu-img, nbdinfo,
//! nbdcopy, fio) run as processes, over TCP and a unix socket, plus raw
//! clients for misbehaviour and multi-connection tests.
//!
//! The clients are required: a missing one fails the test with a message
//! saying what to install. `RUST_LOG=debug` shows the server's events.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::process::Command;
use vigil_engine::device::ExportDevice;
use vigil_engine::nbd::memory::{MemoryCatalog, MemoryDevice};
use vigil_engine::nbd::wire::*;

const MIB: u64 = 1 << 20;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// The path of a required client binary; fails the test if it is missing.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    let package = match name {
        "qemu-io" | "qemu-img" | "qemu-nbd" => "qemu-utils",
        "nbdinfo" | "nbdcopy" => "libnbd-bin",
        "fio" => "fio",
        _ => "?",
    };
    panic!(
        "required NBD client `{name}` not found in PATH; install it (Debian package `{package}`)"
    );
}

struct Server {
    port: u16,
    socket: PathBuf,
    devices: Vec<(String, Arc<MemoryDevice>)>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(exports: &[(&str, u64)]) -> Server {
        init_tracing();
        let mut catalog = MemoryCatalog::new();
        let mut devices = Vec::new();
        for (name, size) in exports {
            let dev = Arc::new(MemoryDevice::new(*size));
            catalog.insert(*name, dev.clone());
            devices.push((name.to_string(), dev));
        }
        let catalog = Arc::new(catalog);
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("nbd.sock");
        let unix = UnixListener::bind(&socket).unwrap();
        tokio::spawn(vigil_engine::nbd::serve_tcp(tcp, catalog.clone()));
        tokio::spawn(vigil_engine::nbd::serve_unix(unix, catalog));
        Server {
            port,
            socket,
            devices,
            _dir: dir,
        }
    }

    fn tcp_uri(&self, name: &str) -> String {
        format!("nbd://127.0.0.1:{}/{name}", self.port)
    }

    fn unix_uri(&self, name: &str) -> String {
        format!("nbd+unix:///{name}?socket={}", self.socket.display())
    }

    fn device(&self, name: &str) -> &MemoryDevice {
        &self.devices.iter().find(|(n, _)| n == name).unwrap().1
    }
}

/// Runs a client to completion (with a timeout) and requires success.
async fn run(program: &str, args: &[&str]) -> Output {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new(tool(program))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{program} {args:?} timed out"))
    .unwrap_or_else(|e| panic!("could not run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    // xorshift64*: reproducible, no dependency.
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    v.truncate(len);
    v
}

fn write_file(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbdinfo_reports_export_and_list() {
    let srv = Server::start(&[("vol", 64 * MIB), ("other", 8 * MIB)]).await;
    let out = run("nbdinfo", &["--json", &srv.tcp_uri("vol")]).await;
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = &j["exports"][0];
    assert_eq!(e["export-name"], "vol");
    assert_eq!(e["export-size"], 64 * MIB);
    assert_eq!(e["block_size_minimum"], MIN_BLOCK_SIZE);
    assert_eq!(e["block_size_preferred"], PREFERRED_BLOCK_SIZE);
    assert_eq!(e["block_size_maximum"], MAX_BLOCK_SIZE);
    for (k, v) in [
        ("can_flush", true),
        ("can_fua", true),
        ("can_trim", true),
        ("can_zero", true),
        ("can_multi_conn", true),
        ("can_fast_zero", false),
        ("is_read_only", false),
    ] {
        assert_eq!(e[k], v, "{k}");
    }
    assert_eq!(j["structured"], false);

    // The same over the unix socket.
    let out = run("nbdinfo", &["--json", &srv.unix_uri("other")]).await;
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["exports"][0]["export-size"], 8 * MIB);

    // --list shows every export.
    let out = run(
        "nbdinfo",
        &["--list", "--json", &format!("nbd://127.0.0.1:{}", srv.port)],
    )
    .await;
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names: Vec<_> = j["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["export-name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["other", "vol"]);
    let out = run(
        "nbdinfo",
        &["--list", &format!("nbd://127.0.0.1:{}", srv.port)],
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("export=\"vol\"") && text.contains("export=\"other\""),
        "{text}"
    );

    // qemu's view of the list (LIST, then INFO per export), TCP and unix.
    let port = srv.port.to_string();
    let socket = srv.socket.to_str().unwrap();
    let tcp_args = ["--list", "-b", "127.0.0.1", "-p", port.as_str()];
    let unix_args = ["--list", "-k", socket];
    for args in [&tcp_args[..], &unix_args[..]] {
        let out = run("qemu-nbd", args).await;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("exports available: 2"), "{text}");
        assert!(
            text.contains("export: 'vol'") && text.contains("export: 'other'"),
            "{text}"
        );
        assert!(
            text.contains("min block: 1") && text.contains("max block: 33554432"),
            "{text}"
        );
        assert!(text.contains("flush fua trim zeroes multi"), "{text}");
    }

    // An unknown export is refused (NBD_REP_ERR_UNKNOWN), not a crash.
    let status = Command::new(tool("nbdinfo"))
        .arg(srv.tcp_uri("missing"))
        .output()
        .await
        .unwrap();
    assert!(!status.status.success());
    run("nbdinfo", &[&srv.tcp_uri("vol")]).await; // server still fine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_io_commands() {
    let srv = Server::start(&[("vol", 16 * MIB)]).await;
    let uri = srv.tcp_uri("vol");
    run(
        "qemu-io",
        &[
            "-f",
            "raw",
            &uri,
            "-c",
            "write -P 0xab 0 1M",
            "-c",
            "read -P 0xab 0 1M",
            "-c",
            "discard 0 64k",
            "-c",
            "write -z 64k 64k",
            "-c",
            "read -P 0 64k 64k",
            "-c",
            "flush",
        ],
    )
    .await;
    let snap = srv.device("vol").snapshot();
    assert!(snap[64 * 1024..128 * 1024].iter().all(|&b| b == 0));
    assert!(snap[128 * 1024..MIB as usize].iter().all(|&b| b == 0xab));
    assert!(srv.device("vol").flushes() >= 1);

    // Unaligned write (min block size 1: qemu sends it as is), read back by
    // a new connection, over the unix socket as well.
    run(
        "qemu-io",
        &["-f", "raw", &uri, "-c", "write -P 0x11 513 1000"],
    )
    .await;
    for u in [&uri, &srv.unix_uri("vol")] {
        run(
            "qemu-io",
            &[
                "-f",
                "raw",
                u,
                "-c",
                "read -P 0x11 513 1000",
                "-c",
                "read -P 0 1513 1000", // still trimmed/zeroed around it
                "-c",
                "read -P 0 0 513",
                "-c",
                "read -P 0xab 128k 64k",
            ],
        )
        .await;
    }
    // The only export is also the default export (empty name).
    let default_uri = format!("nbd://127.0.0.1:{}", srv.port);
    run(
        "qemu-io",
        &["-f", "raw", &default_uri, "-c", "read -P 0x11 513 1000"],
    )
    .await;
    let snap = srv.device("vol").snapshot();
    assert!(snap[513..1513].iter().all(|&b| b == 0x11));
    assert_eq!((snap[512], snap[1513]), (0, 0));

    // Writes with FUA and zeroes with FUA go through too.
    run(
        "qemu-io",
        &[
            "-f",
            "raw",
            &uri,
            "-c",
            "write -f -P 0x22 2M 256k",
            "-c",
            "write -z -f 2M 4k",
            "-c",
            "read -P 0x22 2052k 252k",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_img_convert_and_compare() {
    let srv = Server::start(&[("vol", 8 * MIB)]).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    let data = random_bytes(8 * MIB as usize, 7);
    write_file(&src, &data);
    let uri = srv.tcp_uri("vol");
    run(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            src.to_str().unwrap(),
            &uri,
        ],
    )
    .await;
    assert!(
        srv.device("vol").snapshot() == data,
        "device content differs after qemu-img convert"
    );
    run(
        "qemu-img",
        &[
            "compare",
            "-s",
            "-f",
            "raw",
            "-F",
            "raw",
            src.to_str().unwrap(),
            &uri,
        ],
    )
    .await;
    // And back out through the unix socket.
    let back = dir.path().join("back.raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &srv.unix_uri("vol"),
            back.to_str().unwrap(),
        ],
    )
    .await;
    assert!(std::fs::read(&back).unwrap() == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbdcopy_in_and_out_over_unix() {
    let srv = Server::start(&[("vol", 8 * MIB)]).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    let dst = dir.path().join("dst.raw");
    let data = random_bytes(8 * MIB as usize, 99);
    write_file(&src, &data);
    let uri = srv.unix_uri("vol");
    // nbdcopy uses several connections when CAN_MULTI_CONN is advertised.
    run("nbdcopy", &["--flush", src.to_str().unwrap(), &uri]).await;
    assert!(
        srv.device("vol").snapshot() == data,
        "device content differs after nbdcopy in"
    );
    run("nbdcopy", &[&uri, dst.to_str().unwrap()]).await;
    assert!(
        std::fs::read(&dst).unwrap() == data,
        "nbdcopy out differs from the source"
    );
    // Small request sizes and many in flight, over TCP.
    let dst2 = dir.path().join("dst2.raw");
    run(
        "nbdcopy",
        &[
            "--request-size=4096",
            "--requests=64",
            "--connections=4",
            &srv.tcp_uri("vol"),
            dst2.to_str().unwrap(),
        ],
    )
    .await;
    assert!(std::fs::read(&dst2).unwrap() == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fio_randrw_verify() {
    let srv = Server::start(&[("vol", 16 * MIB)]).await;
    for uri in [srv.tcp_uri("vol"), srv.unix_uri("vol")] {
        let out = run(
            "fio",
            &[
                "--name=nbdtest",
                "--ioengine=nbd",
                &format!("--uri={uri}"),
                "--rw=randrw",
                "--bs=4k",
                "--iodepth=16",
                "--size=8M",
                "--verify=crc32c",
                "--do_verify=1",
                "--verify_fatal=1",
                "--verify_state_save=0", // no state file in the working directory
            ],
        )
        .await;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("err= 0"), "fio reported errors:\n{text}");
        assert!(!text.contains("verify: bad"), "fio verify failed:\n{text}");
    }
}

// ---------------------------------------------------------------------------
// Raw clients
// ---------------------------------------------------------------------------

/// Fixed newstyle handshake + NBD_OPT_GO; returns the stream in transmission.
async fn raw_connect(port: u16, name: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut g = [0u8; 18];
    s.read_exact(&mut g).await.unwrap();
    assert_eq!(&g[0..8], &NBDMAGIC.to_be_bytes());
    let mut m = Vec::new();
    m.extend_from_slice(&(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES).to_be_bytes());
    m.extend_from_slice(&IHAVEOPT.to_be_bytes());
    m.extend_from_slice(&NBD_OPT_GO.to_be_bytes());
    m.extend_from_slice(&(4 + name.len() as u32 + 2).to_be_bytes());
    m.extend_from_slice(&(name.len() as u32).to_be_bytes());
    m.extend_from_slice(name.as_bytes());
    m.extend_from_slice(&0u16.to_be_bytes());
    s.write_all(&m).await.unwrap();
    loop {
        let mut h = [0u8; 20];
        s.read_exact(&mut h).await.unwrap();
        let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
        let mut d = vec![0; len as usize];
        s.read_exact(&mut d).await.unwrap();
        match kind {
            NBD_REP_INFO => continue,
            NBD_REP_ACK => return s,
            other => panic!("GO failed: reply type {other:#x}"),
        }
    }
}

async fn raw_request(
    s: &mut TcpStream,
    kind: u16,
    cookie: u64,
    offset: u64,
    len: u32,
    payload: &[u8],
) {
    let mut b = encode_request(&Request {
        flags: 0,
        kind,
        cookie,
        offset,
        len,
    })
    .to_vec();
    b.extend_from_slice(payload);
    s.write_all(&b).await.unwrap();
}

async fn raw_reply(s: &mut TcpStream) -> (u32, u64) {
    let mut h = [0u8; 16];
    s.read_exact(&mut h).await.unwrap();
    assert_eq!(&h[0..4], &NBD_SIMPLE_REPLY_MAGIC.to_be_bytes());
    (
        u32::from_be_bytes(h[4..8].try_into().unwrap()),
        u64::from_be_bytes(h[8..16].try_into().unwrap()),
    )
}

async fn raw_read(s: &mut TcpStream, cookie: u64, offset: u64, len: u32) -> Vec<u8> {
    raw_request(s, NBD_CMD_READ, cookie, offset, len, &[]).await;
    assert_eq!(raw_reply(s).await, (0, cookie));
    let mut d = vec![0; len as usize];
    s.read_exact(&mut d).await.unwrap();
    d
}

/// True once the server has closed `s` (EOF or reset), within 5 s.
async fn server_closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // e.g. error replies sent before closing
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_client_is_dropped_others_keep_working() {
    let srv = Server::start(&[("vol", 16 * MIB)]).await;
    let mut good = raw_connect(srv.port, "vol").await;
    raw_request(&mut good, NBD_CMD_WRITE, 1, 4096, 5, b"hello").await;
    assert_eq!(raw_reply(&mut good).await, (0, 1));

    // Garbage after the handshake: disconnected.
    let mut bad = raw_connect(srv.port, "vol").await;
    bad.write_all(&random_bytes(1000, 3)).await.unwrap();
    assert!(
        server_closed(&mut bad).await,
        "server kept a garbage-sending connection open"
    );

    // Garbage instead of a handshake: disconnected.
    let mut bad2 = TcpStream::connect(("127.0.0.1", srv.port)).await.unwrap();
    let mut g = [0u8; 18];
    bad2.read_exact(&mut g).await.unwrap();
    bad2.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(server_closed(&mut bad2).await);

    // Oversized write header: disconnected.
    let mut bad3 = raw_connect(srv.port, "vol").await;
    raw_request(&mut bad3, NBD_CMD_WRITE, 9, 0, u32::MAX, &[]).await;
    assert!(server_closed(&mut bad3).await);

    // The well-behaved connection never noticed.
    assert_eq!(raw_read(&mut good, 2, 4096, 5).await, b"hello");
    raw_request(&mut good, NBD_CMD_FLUSH, 3, 0, 0, &[]).await;
    assert_eq!(raw_reply(&mut good).await, (0, 3));
    raw_request(&mut good, NBD_CMD_DISC, 4, 0, 0, &[]).await;
    assert!(server_closed(&mut good).await);
    // And new clients are still served.
    run(
        "qemu-io",
        &[
            "-f",
            "raw",
            &srv.tcp_uri("vol"),
            "-c",
            "read -P 0x68 4096 1",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_conn_writers_see_each_other_after_flush() {
    let srv = Server::start(&[("vol", 16 * MIB)]).await;
    const BLOCKS: u64 = 512;
    const BS: u32 = 4096;
    let pattern =
        |conn: u64, block: u64| -> Vec<u8> { random_bytes(BS as usize, conn * 1_000_003 + block) };

    // Two connections interleave writes to alternating blocks, pipelined, then flush.
    async fn writer(
        mut s: TcpStream,
        conn: u64,
        pattern: impl Fn(u64, u64) -> Vec<u8>,
    ) -> TcpStream {
        let mut batch = Vec::new();
        let mut n = 0;
        for block in (conn..BLOCKS).step_by(2) {
            batch.extend_from_slice(&encode_request(&Request {
                flags: 0,
                kind: NBD_CMD_WRITE,
                cookie: block,
                offset: block * u64::from(BS),
                len: BS,
            }));
            batch.extend_from_slice(&pattern(conn, block));
            n += 1;
        }
        let (mut rd, mut wr) = s.split();
        let send = async {
            wr.write_all(&batch).await.unwrap();
        };
        let recv = async {
            for _ in 0..n {
                let mut h = [0u8; 16];
                rd.read_exact(&mut h).await.unwrap();
                assert_eq!(&h[4..8], &[0, 0, 0, 0], "write failed");
            }
        };
        tokio::join!(send, recv);
        raw_request(&mut s, NBD_CMD_FLUSH, u64::MAX, 0, 0, &[]).await;
        assert_eq!(raw_reply(&mut s).await, (0, u64::MAX));
        s
    }
    let a = raw_connect(srv.port, "vol").await;
    let b = raw_connect(srv.port, "vol").await;
    let (mut a, mut b) = tokio::join!(writer(a, 0, pattern), writer(b, 1, pattern));

    // Each connection reads the other's blocks.
    for block in 0..BLOCKS {
        let conn = block % 2;
        let reader = if conn == 0 { &mut b } else { &mut a };
        let got = raw_read(reader, 10_000 + block, block * u64::from(BS), BS).await;
        assert!(
            got == pattern(conn, block),
            "block {block} written by conn {conn} not visible to the other"
        );
    }
    assert!(srv.device("vol").flushes() >= 2);
    assert_eq!(srv.device("vol").size(), 16 * MIB);
}
