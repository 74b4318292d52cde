//! Protocol tests against an in-memory duplex stream with a raw client.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;

use super::memory::{MemoryCatalog, MemoryDevice};
use super::run_connection;
use super::wire::*;
use crate::device::{DeviceError, ExportCatalog, ExportDevice};

const SIZE: u64 = 1 << 20;

fn catalog_with(names: &[&str]) -> Arc<MemoryCatalog> {
    let mut c = MemoryCatalog::new();
    for n in names {
        c.insert(*n, Arc::new(MemoryDevice::new(SIZE)));
    }
    Arc::new(c)
}

/// Starts a server connection; returns the client end and the server task.
fn start<C: ExportCatalog>(catalog: Arc<C>) -> (DuplexStream, JoinHandle<()>) {
    let (client, server) = tokio::io::duplex(4 << 20);
    let (r, w) = tokio::io::split(server);
    let task = tokio::spawn(run_connection(
        r,
        w,
        "test".into(),
        catalog,
        Duration::from_secs(10),
    ));
    (client, task)
}

struct OptReply {
    option: u32,
    kind: u32,
    data: Vec<u8>,
}

struct Client {
    s: DuplexStream,
}

impl Client {
    async fn greet(s: DuplexStream, client_flags: u32) -> Client {
        let mut c = Client { s };
        let mut g = [0u8; 18];
        c.s.read_exact(&mut g).await.unwrap();
        assert_eq!(&g[0..8], &NBDMAGIC.to_be_bytes());
        assert_eq!(&g[8..16], &IHAVEOPT.to_be_bytes());
        assert_eq!(
            u16::from_be_bytes([g[16], g[17]]),
            NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES
        );
        c.s.write_all(&client_flags.to_be_bytes()).await.unwrap();
        c
    }

    async fn send_opt(&mut self, option: u32, data: &[u8]) {
        let mut b = Vec::new();
        b.extend_from_slice(&IHAVEOPT.to_be_bytes());
        b.extend_from_slice(&option.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.s.write_all(&b).await.unwrap();
    }

    async fn opt_reply(&mut self) -> OptReply {
        let mut h = [0u8; 20];
        self.s.read_exact(&mut h).await.unwrap();
        assert_eq!(&h[0..8], &OPTION_REPLY_MAGIC.to_be_bytes());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap()) as usize;
        let mut data = vec![0; len];
        self.s.read_exact(&mut data).await.unwrap();
        OptReply {
            option: u32::from_be_bytes(h[8..12].try_into().unwrap()),
            kind: u32::from_be_bytes(h[12..16].try_into().unwrap()),
            data,
        }
    }

    /// INFO or GO; returns the replies up to and including the final one.
    async fn info(&mut self, option: u32, name: &str, reqs: &[u16]) -> Vec<OptReply> {
        let mut d = Vec::new();
        d.extend_from_slice(&(name.len() as u32).to_be_bytes());
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&(reqs.len() as u16).to_be_bytes());
        for r in reqs {
            d.extend_from_slice(&r.to_be_bytes());
        }
        self.send_opt(option, &d).await;
        let mut out = Vec::new();
        loop {
            let r = self.opt_reply().await;
            assert_eq!(r.option, option);
            let last = r.kind != NBD_REP_INFO;
            out.push(r);
            if last {
                return out;
            }
        }
    }

    async fn connect(catalog: Arc<MemoryCatalog>, name: &str) -> (Client, JoinHandle<()>) {
        let (s, task) = start(catalog);
        let mut c = Client::greet(s, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES).await;
        let replies = c.info(NBD_OPT_GO, name, &[NBD_INFO_BLOCK_SIZE]).await;
        assert_eq!(replies.last().unwrap().kind, NBD_REP_ACK);
        (c, task)
    }

    async fn request(
        &mut self,
        kind: u16,
        flags: u16,
        cookie: u64,
        offset: u64,
        len: u32,
        payload: &[u8],
    ) {
        let h = encode_request(&Request {
            flags,
            kind,
            cookie,
            offset,
            len,
        });
        self.s.write_all(&h).await.unwrap();
        self.s.write_all(payload).await.unwrap();
    }

    /// Reads a simple reply header: (error, cookie).
    async fn reply(&mut self) -> (u32, u64) {
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h).await.unwrap();
        assert_eq!(&h[0..4], &NBD_SIMPLE_REPLY_MAGIC.to_be_bytes());
        (
            u32::from_be_bytes(h[4..8].try_into().unwrap()),
            u64::from_be_bytes(h[8..16].try_into().unwrap()),
        )
    }

    async fn write(&mut self, cookie: u64, offset: u64, data: &[u8]) -> u32 {
        self.request(NBD_CMD_WRITE, 0, cookie, offset, data.len() as u32, data)
            .await;
        let (e, c) = self.reply().await;
        assert_eq!(c, cookie);
        e
    }

    async fn read(&mut self, cookie: u64, offset: u64, len: u32) -> Result<Vec<u8>, u32> {
        self.request(NBD_CMD_READ, 0, cookie, offset, len, &[])
            .await;
        let (e, c) = self.reply().await;
        assert_eq!(c, cookie);
        if e != 0 {
            return Err(e);
        }
        let mut d = vec![0; len as usize];
        self.s.read_exact(&mut d).await.unwrap();
        Ok(d)
    }

    async fn simple(&mut self, kind: u16, flags: u16, cookie: u64, offset: u64, len: u32) -> u32 {
        self.request(kind, flags, cookie, offset, len, &[]).await;
        let (e, c) = self.reply().await;
        assert_eq!(c, cookie);
        e
    }

    /// True if the server closed the connection (EOF) within a second.
    async fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), self.s.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

async fn finished(task: JoinHandle<()>) {
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("connection task did not finish")
        .expect("connection task panicked");
}

#[tokio::test]
async fn info_then_go_then_io() {
    let (s, task) = start(catalog_with(&["vol"]));
    let mut c = Client::greet(s, NBD_FLAG_C_FIXED_NEWSTYLE).await;
    let replies = c
        .info(
            NBD_OPT_INFO,
            "vol",
            &[NBD_INFO_NAME, NBD_INFO_BLOCK_SIZE, 999],
        )
        .await;
    assert_eq!(replies.last().unwrap().kind, NBD_REP_ACK);
    let export = replies
        .iter()
        .find(|r| r.data[0..2] == NBD_INFO_EXPORT.to_be_bytes())
        .unwrap();
    assert_eq!(export.data.len(), 12);
    assert_eq!(
        u64::from_be_bytes(export.data[2..10].try_into().unwrap()),
        SIZE
    );
    let flags = u16::from_be_bytes(export.data[10..12].try_into().unwrap());
    assert_eq!(flags, TRANSMISSION_FLAGS);
    assert_ne!(flags & NBD_FLAG_CAN_MULTI_CONN, 0);
    assert_eq!(
        flags & (NBD_FLAG_SEND_FAST_ZERO | NBD_FLAG_READ_ONLY | NBD_FLAG_SEND_DF),
        0
    );
    let bs = replies
        .iter()
        .find(|r| r.data[0..2] == NBD_INFO_BLOCK_SIZE.to_be_bytes())
        .unwrap();
    assert_eq!(bs.data.len(), 14);
    let u = |i: usize| u32::from_be_bytes(bs.data[i..i + 4].try_into().unwrap());
    assert_eq!(
        (u(2), u(6), u(10)),
        (MIN_BLOCK_SIZE, PREFERRED_BLOCK_SIZE, MAX_BLOCK_SIZE)
    );
    let name = replies
        .iter()
        .find(|r| r.data[0..2] == NBD_INFO_NAME.to_be_bytes())
        .unwrap();
    assert_eq!(&name.data[2..], b"vol");

    let replies = c.info(NBD_OPT_GO, "vol", &[]).await;
    assert_eq!(replies.last().unwrap().kind, NBD_REP_ACK);
    assert!(
        replies
            .iter()
            .any(|r| r.data[0..2] == NBD_INFO_EXPORT.to_be_bytes())
    );

    assert_eq!(c.write(1, 513, &[0x11; 1000]).await, 0);
    let d = c.read(2, 512, 1002).await.unwrap();
    assert_eq!(d[0], 0);
    assert!(d[1..1001].iter().all(|&b| b == 0x11));
    assert_eq!(d[1001], 0);
    assert_eq!(c.simple(NBD_CMD_FLUSH, 0, 3, 0, 0).await, 0);
    c.request(NBD_CMD_DISC, 0, 4, 0, 0, &[]).await;
    assert!(c.closed().await);
    finished(task).await;
}

#[tokio::test]
async fn export_name_with_and_without_zeroes() {
    for (flags, extra) in [
        (NBD_FLAG_C_FIXED_NEWSTYLE, 124usize),
        (NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES, 0),
    ] {
        let (s, task) = start(catalog_with(&["vol"]));
        let mut c = Client::greet(s, flags).await;
        c.send_opt(NBD_OPT_EXPORT_NAME, b"vol").await;
        let mut b = vec![0u8; 10 + extra];
        c.s.read_exact(&mut b).await.unwrap();
        assert_eq!(u64::from_be_bytes(b[0..8].try_into().unwrap()), SIZE);
        assert_eq!(u16::from_be_bytes([b[8], b[9]]), TRANSMISSION_FLAGS);
        assert!(b[10..].iter().all(|&x| x == 0));
        // Transmission works right away (and nothing else was sent).
        assert_eq!(c.read(7, 0, 16).await.unwrap(), vec![0; 16]);
        c.request(NBD_CMD_DISC, 0, 8, 0, 0, &[]).await;
        assert!(c.closed().await);
        finished(task).await;
    }
}

#[tokio::test]
async fn unknown_export_and_default_export() {
    // GO/INFO on an unknown name: ERR_UNKNOWN, negotiation continues.
    let (s, task) = start(catalog_with(&["a", "b"]));
    let mut c = Client::greet(s, NBD_FLAG_C_FIXED_NEWSTYLE).await;
    let r = c.info(NBD_OPT_GO, "nope", &[]).await;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].kind, NBD_REP_ERR_UNKNOWN);
    // Empty name with two exports: no default.
    let r = c.info(NBD_OPT_INFO, "", &[]).await;
    assert_eq!(r[0].kind, NBD_REP_ERR_UNKNOWN);
    // LIST shows both; LIST with data is invalid.
    c.send_opt(NBD_OPT_LIST, &[]).await;
    let mut names = Vec::new();
    loop {
        let r = c.opt_reply().await;
        if r.kind == NBD_REP_ACK {
            break;
        }
        assert_eq!(r.kind, NBD_REP_SERVER);
        let n = u32::from_be_bytes(r.data[0..4].try_into().unwrap()) as usize;
        names.push(String::from_utf8(r.data[4..4 + n].to_vec()).unwrap());
    }
    assert_eq!(names, vec!["a", "b"]);
    c.send_opt(NBD_OPT_LIST, b"x").await;
    assert_eq!(c.opt_reply().await.kind, NBD_REP_ERR_INVALID);
    // EXPORT_NAME on an unknown name: the server must close.
    c.send_opt(NBD_OPT_EXPORT_NAME, b"nope").await;
    assert!(c.closed().await);
    finished(task).await;

    // One export: the empty name selects it, and INFO_NAME reports its real name.
    let (s, task) = start(catalog_with(&["only"]));
    let mut c = Client::greet(s, NBD_FLAG_C_FIXED_NEWSTYLE).await;
    let r = c.info(NBD_OPT_GO, "", &[NBD_INFO_NAME]).await;
    assert_eq!(r.last().unwrap().kind, NBD_REP_ACK);
    assert!(r.iter().any(|r| r.data[..] == b"\0\x01only"[..]));
    assert_eq!(c.write(1, 0, b"hello").await, 0);
    drop(c);
    finished(task).await;
}

#[tokio::test]
async fn unsupported_options_then_go() {
    let (s, task) = start(catalog_with(&["vol"]));
    let mut c = Client::greet(s, NBD_FLAG_C_FIXED_NEWSTYLE).await;
    for opt in [
        NBD_OPT_STRUCTURED_REPLY,
        NBD_OPT_STARTTLS,
        9,
        10,
        11,
        4,
        0,
        12345,
        u32::MAX,
    ] {
        c.send_opt(opt, &[1, 2, 3]).await;
        let r = c.opt_reply().await;
        assert_eq!((r.option, r.kind), (opt, NBD_REP_ERR_UNSUP));
    }
    // Malformed GO payload: ERR_INVALID, still negotiating.
    c.send_opt(NBD_OPT_GO, &[0, 0, 0, 9, b'x']).await;
    assert_eq!(c.opt_reply().await.kind, NBD_REP_ERR_INVALID);
    let r = c.info(NBD_OPT_GO, "vol", &[]).await;
    assert_eq!(r.last().unwrap().kind, NBD_REP_ACK);
    drop(c);
    finished(task).await;
}

#[tokio::test]
async fn abort_acks_and_closes() {
    let (s, task) = start(catalog_with(&["vol"]));
    let mut c = Client::greet(s, NBD_FLAG_C_FIXED_NEWSTYLE).await;
    c.send_opt(NBD_OPT_ABORT, &[]).await;
    let r = c.opt_reply().await;
    assert_eq!((r.option, r.kind), (NBD_OPT_ABORT, NBD_REP_ACK));
    assert!(c.closed().await);
    finished(task).await;
}

#[tokio::test]
async fn handshake_violations_close() {
    // Unknown client flags.
    let (s, task) = start(catalog_with(&["vol"]));
    let mut c = Client::greet(s, 1 << 7).await;
    assert!(c.closed().await);
    finished(task).await;

    // Absurd option length: ERR_TOO_BIG and closed, without waiting for
    // (or allocating) 4 GiB.
    let (s, task) = start(catalog_with(&["vol"]));
    let mut c = Client::greet(s, NBD_FLAG_C_FIXED_NEWSTYLE).await;
    let mut h = Vec::new();
    h.extend_from_slice(&IHAVEOPT.to_be_bytes());
    h.extend_from_slice(&NBD_OPT_GO.to_be_bytes());
    h.extend_from_slice(&u32::MAX.to_be_bytes());
    c.s.write_all(&h).await.unwrap();
    let r = c.opt_reply().await;
    assert_eq!((r.option, r.kind), (NBD_OPT_GO, NBD_REP_ERR_TOO_BIG));
    assert!(c.closed().await);
    finished(task).await;

    // Bad option magic.
    let (s, task) = start(catalog_with(&["vol"]));
    let mut c = Client::greet(s, NBD_FLAG_C_FIXED_NEWSTYLE).await;
    c.s.write_all(&[0x55; 16]).await.unwrap();
    assert!(c.closed().await);
    finished(task).await;

    // Non-UTF-8 export name with EXPORT_NAME.
    let (s, task) = start(catalog_with(&["vol"]));
    let mut c = Client::greet(s, NBD_FLAG_C_FIXED_NEWSTYLE).await;
    c.send_opt(NBD_OPT_EXPORT_NAME, &[0xff, 0xfe]).await;
    assert!(c.closed().await);
    finished(task).await;
}

#[tokio::test]
async fn silent_client_times_out_in_handshake() {
    let (client, server) = tokio::io::duplex(4096);
    let (r, w) = tokio::io::split(server);
    let task = tokio::spawn(run_connection(
        r,
        w,
        "test".into(),
        catalog_with(&["vol"]),
        Duration::from_millis(200),
    ));
    let mut c = Client::greet(client, NBD_FLAG_C_FIXED_NEWSTYLE).await;
    // Half an option header, then nothing.
    c.s.write_all(&IHAVEOPT.to_be_bytes()).await.unwrap();
    assert!(c.closed().await);
    finished(task).await;
}

#[tokio::test]
async fn commands_and_errors() {
    let cat = catalog_with(&["vol"]);
    let dev = cat.lookup("vol").unwrap();
    let (mut c, task) = Client::connect(cat, "vol").await;

    // Write with FUA, read back, unaligned pieces.
    c.request(
        NBD_CMD_WRITE,
        NBD_CMD_FLAG_FUA,
        1,
        4096,
        8192,
        &[0xab; 8192],
    )
    .await;
    assert_eq!(c.reply().await, (0, 1));
    assert!(
        c.read(2, 4096, 8192)
            .await
            .unwrap()
            .iter()
            .all(|&b| b == 0xab)
    );
    // Write zeroes (with NO_HOLE and FUA) and trim.
    assert_eq!(
        c.simple(
            NBD_CMD_WRITE_ZEROES,
            NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FUA,
            3,
            4096,
            100
        )
        .await,
        0
    );
    let d = c.read(4, 4096, 200).await.unwrap();
    assert!(d[..100].iter().all(|&b| b == 0) && d[100..].iter().all(|&b| b == 0xab));
    let flushes = dev.flushes();
    assert_eq!(
        c.simple(NBD_CMD_TRIM, NBD_CMD_FLAG_FUA, 5, 8192, 4096)
            .await,
        0
    );
    assert_eq!(dev.flushes(), flushes + 1, "TRIM+FUA flushes");
    assert_eq!(c.simple(NBD_CMD_FLUSH, 0, 6, 0, 0).await, 0);
    assert_eq!(c.simple(NBD_CMD_FLUSH, NBD_CMD_FLAG_FUA, 6, 0, 0).await, 0);
    assert_eq!(
        c.simple(NBD_CMD_FLUSH, 0, 6, u64::MAX, 7).await,
        0,
        "FLUSH range is ignored"
    );

    // Zero-length requests succeed without touching the device.
    assert_eq!(c.read(7, SIZE, 0).await.unwrap(), Vec::<u8>::new());
    assert_eq!(c.write(8, SIZE, &[]).await, 0);
    assert_eq!(c.simple(NBD_CMD_TRIM, 0, 9, 0, 0).await, 0);

    // Out of range.
    assert_eq!(c.read(10, SIZE - 10, 11).await, Err(NBD_EINVAL));
    assert_eq!(c.read(11, u64::MAX, 1).await, Err(NBD_EINVAL));
    assert_eq!(c.simple(NBD_CMD_TRIM, 0, 12, SIZE, 1).await, NBD_EINVAL);
    assert_eq!(
        c.simple(NBD_CMD_WRITE_ZEROES, 0, 13, SIZE - 1, 2).await,
        NBD_ENOSPC
    );
    // An out-of-range write's payload is swallowed: the next request parses.
    assert_eq!(c.write(14, SIZE - 100, &[7; 200]).await, NBD_ENOSPC);
    assert_eq!(c.read(15, SIZE - 100, 100).await.unwrap(), vec![0; 100]);

    // Oversized read: EINVAL, no data.
    assert_eq!(c.read(16, 0, MAX_BLOCK_SIZE + 1).await, Err(NBD_EINVAL));
    // Flags never advertised or not valid for the command: EINVAL.
    assert_eq!(
        c.simple(NBD_CMD_READ, NBD_CMD_FLAG_DF, 17, 0, 10).await,
        NBD_EINVAL
    );
    assert_eq!(
        c.simple(NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_FAST_ZERO, 18, 0, 10)
            .await,
        NBD_EINVAL
    );
    assert_eq!(
        c.simple(NBD_CMD_TRIM, NBD_CMD_FLAG_NO_HOLE, 19, 0, 10)
            .await,
        NBD_EINVAL
    );
    c.request(NBD_CMD_WRITE, 1 << 9, 20, 0, 4, b"abcd").await;
    assert_eq!(c.reply().await, (NBD_EINVAL, 20));
    assert_eq!(
        c.read(21, 0, 4).await.unwrap(),
        vec![0; 4],
        "rejected write must not write"
    );
    // Unknown commands: EINVAL.
    for (i, kind) in [NBD_CMD_CACHE, NBD_CMD_BLOCK_STATUS, 8, 100, u16::MAX]
        .into_iter()
        .enumerate()
    {
        assert_eq!(c.simple(kind, 0, 100 + i as u64, 0, 512).await, NBD_EINVAL);
    }
    // Still in sync after all that.
    assert!(
        c.read(30, 4096 + 100, 10)
            .await
            .unwrap()
            .iter()
            .all(|&b| b == 0xab)
    );

    // Oversized write: the connection is dropped.
    c.request(NBD_CMD_WRITE, 0, 31, 0, MAX_BLOCK_SIZE + 1, &[])
        .await;
    assert!(c.closed().await);
    finished(task).await;
}

#[tokio::test]
async fn bad_request_magic_closes() {
    let (mut c, task) = Client::connect(catalog_with(&["vol"]), "vol").await;
    assert_eq!(c.write(1, 0, b"x").await, 0);
    c.s.write_all(&[0u8; REQUEST_LEN]).await.unwrap();
    assert!(c.closed().await);
    finished(task).await;
}

/// A device whose behaviour is scripted per offset, for error mapping,
/// out-of-order replies and DISC draining.
struct ScriptedDevice {
    inner: MemoryDevice,
}

impl ScriptedDevice {
    fn fail(offset: u64) -> Option<DeviceError> {
        match offset {
            1000 => Some(DeviceError::Io("boom".into())),
            2000 => Some(DeviceError::InvalidArgument("bad".into())),
            3000 => Some(DeviceError::NoSpace("full".into())),
            4000 => Some(DeviceError::NotPermitted("ro".into())),
            _ => None,
        }
    }

    async fn delay(offset: u64) {
        if offset == 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

impl ExportDevice for ScriptedDevice {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    async fn read(&self, offset: u64, len: u32) -> Result<Bytes, DeviceError> {
        Self::delay(offset).await;
        if let Some(e) = Self::fail(offset) {
            return Err(e);
        }
        if offset == 5000 {
            return Ok(Bytes::from_static(b"short"));
        }
        self.inner.read(offset, len).await
    }
    async fn write(&self, offset: u64, data: Bytes, fua: bool) -> Result<(), DeviceError> {
        Self::delay(offset).await;
        match Self::fail(offset) {
            Some(e) => Err(e),
            None => self.inner.write(offset, data, fua).await,
        }
    }
    async fn flush(&self) -> Result<(), DeviceError> {
        self.inner.flush().await
    }
    async fn trim(&self, offset: u64, len: u32) -> Result<(), DeviceError> {
        match Self::fail(offset) {
            Some(e) => Err(e),
            None => self.inner.trim(offset, len).await,
        }
    }
    async fn write_zeroes(&self, offset: u64, len: u32, fua: bool) -> Result<(), DeviceError> {
        match Self::fail(offset) {
            Some(e) => Err(e),
            None => self.inner.write_zeroes(offset, len, fua).await,
        }
    }
}

async fn scripted() -> (Client, JoinHandle<()>) {
    let cat = Arc::new(MemoryCatalog::new().with(
        "s",
        Arc::new(ScriptedDevice {
            inner: MemoryDevice::new(SIZE),
        }),
    ));
    let (s, task) = start(cat);
    let mut c = Client::greet(s, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES).await;
    assert_eq!(
        c.info(NBD_OPT_GO, "s", &[]).await.last().unwrap().kind,
        NBD_REP_ACK
    );
    (c, task)
}

#[tokio::test]
async fn device_errors_map_to_nbd_errors() {
    let (mut c, task) = scripted().await;
    for (offset, want) in [
        (1000, NBD_EIO),
        (2000, NBD_EINVAL),
        (3000, NBD_ENOSPC),
        (4000, NBD_EPERM),
    ] {
        assert_eq!(c.read(1, offset, 10).await, Err(want));
        assert_eq!(c.write(2, offset, b"0123456789").await, want);
        assert_eq!(c.simple(NBD_CMD_TRIM, 0, 3, offset, 10).await, want);
        assert_eq!(c.simple(NBD_CMD_WRITE_ZEROES, 0, 4, offset, 10).await, want);
    }
    // A device that returns the wrong amount of data: EIO, stream in sync.
    assert_eq!(c.read(5, 5000, 100).await, Err(NBD_EIO));
    assert_eq!(c.read(6, 6000, 3).await.unwrap(), vec![0; 3]);
    drop(c);
    finished(task).await;
}

#[tokio::test]
async fn replies_out_of_order_and_disc_drains() {
    let (mut c, task) = scripted().await;
    // Offset 0 is slow: the later request's reply overtakes it.
    c.request(NBD_CMD_READ, 0, 1, 0, 8, &[]).await;
    c.request(NBD_CMD_READ, 0, 2, 8, 8, &[]).await;
    let (e, cookie) = c.reply().await;
    assert_eq!((e, cookie), (0, 2));
    let mut d = [0u8; 8];
    c.s.read_exact(&mut d).await.unwrap();
    let (e, cookie) = c.reply().await;
    assert_eq!((e, cookie), (0, 1));
    c.s.read_exact(&mut d).await.unwrap();

    // DISC while a slow write is in flight: its reply still arrives, then EOF.
    c.request(NBD_CMD_WRITE, 0, 3, 0, 4, b"slow").await;
    c.request(NBD_CMD_DISC, 0, 4, 0, 0, &[]).await;
    assert_eq!(c.reply().await, (0, 3));
    assert!(c.closed().await);
    finished(task).await;
}

#[tokio::test]
async fn large_and_small_reads_pipelined_come_back_whole() {
    // Reads above the inline limit go out as their own writes, small ones
    // beside their headers: one pipelined batch mixing both, each reply
    // whole and matched to its cookie.
    let (mut c, task) = Client::connect(catalog_with(&["vol"]), "vol").await;
    let big = 64 * 1024u32;
    for i in 0..8u64 {
        let len = if i % 2 == 0 { big } else { 512 };
        let data = vec![i as u8 + 1; len as usize];
        assert_eq!(c.write(100 + i, i * u64::from(big), &data).await, 0);
    }
    for i in 0..8u64 {
        let len = if i % 2 == 0 { big } else { 512 };
        c.request(NBD_CMD_READ, 0, i, i * u64::from(big), len, &[])
            .await;
    }
    let mut seen = [false; 8];
    for _ in 0..8 {
        let (e, cookie) = c.reply().await;
        assert_eq!(e, 0);
        let len = if cookie % 2 == 0 { big } else { 512 };
        let mut d = vec![0u8; len as usize];
        c.s.read_exact(&mut d).await.unwrap();
        assert!(d.iter().all(|b| *b == cookie as u8 + 1), "reply {cookie}");
        assert!(!std::mem::replace(&mut seen[cookie as usize], true));
    }
    drop(c);
    finished(task).await;
}

#[tokio::test]
async fn many_requests_pipelined() {
    // More requests in flight than MAX_IN_FLIGHT, all answered.
    let (mut c, task) = Client::connect(catalog_with(&["vol"]), "vol").await;
    let n = 500u64;
    let mut batch = Vec::new();
    for i in 0..n {
        batch.extend_from_slice(&encode_request(&Request {
            flags: 0,
            kind: NBD_CMD_WRITE,
            cookie: i,
            offset: i * 512,
            len: 512,
        }));
        batch.extend_from_slice(&[i as u8; 512]);
    }
    let (mut rd, mut wr) = tokio::io::split(c.s);
    let writer = tokio::spawn(async move {
        wr.write_all(&batch).await.unwrap();
        wr
    });
    let mut seen = vec![false; n as usize];
    for _ in 0..n {
        let mut h = [0u8; 16];
        rd.read_exact(&mut h).await.unwrap();
        assert_eq!(u32::from_be_bytes(h[4..8].try_into().unwrap()), 0);
        let cookie = u64::from_be_bytes(h[8..16].try_into().unwrap());
        assert!(!std::mem::replace(&mut seen[cookie as usize], true));
    }
    let wr = writer.await.unwrap();
    c.s = rd.unsplit(wr);
    for i in [0u64, 1, 255, 499] {
        assert_eq!(
            c.read(1000 + i, i * 512, 512).await.unwrap(),
            vec![i as u8; 512]
        );
    }
    drop(c);
    finished(task).await;
}

fn run_fuzz(bytes: Vec<u8>, after_go: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (s, task) = start(catalog_with(&["vol"]));
        let (mut rd, mut wr) = tokio::io::split(s);
        // Drain whatever the server says so it never blocks on writing.
        let drain = tokio::spawn(async move {
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut rd, &mut sink).await;
        });
        if after_go {
            let mut go = Vec::new();
            go.extend_from_slice(&(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES).to_be_bytes());
            go.extend_from_slice(&IHAVEOPT.to_be_bytes());
            go.extend_from_slice(&NBD_OPT_GO.to_be_bytes());
            go.extend_from_slice(&9u32.to_be_bytes());
            go.extend_from_slice(&3u32.to_be_bytes());
            go.extend_from_slice(b"vol");
            go.extend_from_slice(&0u16.to_be_bytes());
            let _ = wr.write_all(&go).await;
        }
        let _ = wr.write_all(&bytes).await;
        let _ = wr.shutdown().await;
        finished(task).await;
        drop(wr);
        let _ = drain.await;
    });
}

/// Requests with a valid magic and arbitrary fields, payload of the stated
/// size for writes (up to a limit), interleaved with junk.
fn request_stream() -> impl Strategy<Value = Vec<u8>> {
    let req = (
        any::<u16>(),
        0u16..10,
        any::<u64>(),
        prop_oneof![0u64..SIZE + 10, any::<u64>()],
        0u32..5000,
        any::<bool>(),
    )
        .prop_map(|(flags, kind, cookie, offset, len, junk)| {
            let flags = flags & 0x1f;
            let mut v = encode_request(&Request {
                flags,
                kind,
                cookie,
                offset,
                len,
            })
            .to_vec();
            if kind == NBD_CMD_WRITE {
                v.extend(std::iter::repeat_n(0x5a, len as usize));
            }
            if junk {
                v.push(0xee);
            }
            v
        });
    proptest::collection::vec(req, 0..20).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn handshake_survives_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        run_fuzz(bytes, false);
    }

    #[test]
    fn handshake_survives_random_options(
        flags in 0u32..4,
        opts in proptest::collection::vec((0u32..12, proptest::collection::vec(any::<u8>(), 0..40)), 0..8),
    ) {
        let mut b = flags.to_be_bytes().to_vec();
        for (o, d) in opts {
            b.extend_from_slice(&IHAVEOPT.to_be_bytes());
            b.extend_from_slice(&o.to_be_bytes());
            b.extend_from_slice(&(d.len() as u32).to_be_bytes());
            b.extend_from_slice(&d);
        }
        run_fuzz(b, false);
    }

    #[test]
    fn transmission_survives_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        run_fuzz(bytes, true);
    }

    #[test]
    fn transmission_survives_random_requests(bytes in request_stream()) {
        run_fuzz(bytes, true);
    }
}
